//! Which seats a fan-out should look at again: one waker per seat that, when
//! the kernel says that seat's socket drained, puts the seat on a ready list
//! and wakes the fan-out's one task.
//!
//! A viewer that keeps up never needs this: its frames go out in the fan-out's
//! loop the moment they are published, with no wake-up at all. Only a socket
//! that refused part of a frame (or had no room for the next) registers its
//! bell with the reactor, and only that seat is looked at when it rings, so a
//! room full of slow phones costs work in proportion to the phones that are
//! ready, not to all of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use tokio::sync::Notify;

use crate::sync::Locked;

/// The fan-out's side: the seats whose bells rang, and the task's own wake-up.
#[derive(Default)]
pub struct Hall {
    rung: Mutex<Vec<usize>>,
    notify: Notify,
}

impl Hall {
    /// Waits until some bell rings (at once if one rang since the last call).
    pub async fn rung(&self) {
        self.notify.notified().await;
    }

    /// The slots whose bells rang, oldest first; clears the list.
    pub fn take(&self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(&mut *self.rung.locked(), into);
    }
}

/// One seat's waker.
pub struct Bell {
    slot: usize,
    /// Set while the seat is on the list, so a socket that wakes twice is
    /// looked at once.
    rung: AtomicBool,
    hall: Arc<Hall>,
}

impl Bell {
    pub fn new(slot: usize, hall: Arc<Hall>) -> Arc<Bell> {
        Arc::new(Bell {
            slot,
            rung: AtomicBool::new(false),
            hall,
        })
    }

    /// Called as the fan-out takes the seat off the list, before it looks at the
    /// seat: a wake-up that comes while it does puts the seat back.
    pub fn answered(&self) {
        self.rung.store(false, Ordering::Release);
    }

    pub fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(self.clone())
    }
}

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.hall.rung.locked().push(self.slot);
            self.hall.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_seat_that_rings_twice_is_listed_once() {
        let hall = Arc::new(Hall::default());
        let a = Bell::new(3, hall.clone());
        let b = Bell::new(7, hall.clone());
        a.waker().wake_by_ref();
        a.waker().wake_by_ref();
        b.waker().wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), hall.rung())
            .await
            .expect("the hall was woken");
        let mut ready = Vec::new();
        hall.take(&mut ready);
        assert_eq!(ready, vec![3, 7]);
        a.answered();
        a.waker().wake_by_ref();
        hall.take(&mut ready);
        assert_eq!(ready, vec![3], "answered, so it can ring again");
    }
}
