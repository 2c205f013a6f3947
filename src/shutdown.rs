//! The shutdown signal, passed as a value into every task and thread.
//!
//! One `ShutdownTrigger` fires it; each task holds a cloned `Shutdown`, checks it
//! between units of work (`is_triggered`, usable from plain threads too) or awaits
//! it in a `select!` (`wait`). A `Shutdown` also keeps the trigger's completion
//! channel open, so `ShutdownTrigger::drained` learns when the last task has
//! finished its goodbye (for WebSockets: a close frame with code 1001).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct Shutdown {
    fired: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

#[derive(Debug)]
pub struct ShutdownTrigger {
    fire: watch::Sender<bool>,
    alive_rx: mpsc::Receiver<()>,
    alive_tx: Option<mpsc::Sender<()>>,
}

impl ShutdownTrigger {
    pub fn new() -> ShutdownTrigger {
        let (fire, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        ShutdownTrigger {
            fire,
            alive_rx,
            alive_tx: Some(alive_tx),
        }
    }

    /// A new handle for a task. Every handle must be dropped for `drained` to finish.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            fired: self.fire.subscribe(),
            _alive: self.alive_tx.clone().expect("subscribe after drained"),
        }
    }

    pub fn fire(&self) {
        self.fire.send_replace(true);
    }

    /// Fires the signal and waits, at most `limit`, for every handle to be dropped.
    /// Returns false when some task did not finish in time.
    pub async fn drained(mut self, limit: Duration) -> bool {
        self.fire();
        self.alive_tx = None;
        tokio::time::timeout(limit, self.alive_rx.recv())
            .await
            .is_ok()
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.fired.borrow()
    }

    /// Completes once shutdown has been fired; at once if it already was.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which can only happen at exit.
        let _ = self.fired.wait_for(|fired| *fired).await;
    }
}
