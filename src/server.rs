//! Binds both listeners, starts the source, the WebSocket server and the HTTP
//! threads, and stops them all together: on shutdown every WebSocket gets a close
//! frame (1001) and the process is done within about a second.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, HttpContext};
use crate::hub::{Hub, CAMERA};
use crate::shutdown::ShutdownTrigger;
use crate::source;
use crate::ws::{self, WsContext};

/// How long open connections get to say goodbye at shutdown.
const DRAIN_LIMIT: Duration = Duration::from_millis(800);

pub struct Server {
    config: Arc<Config>,
    ws_listener: TcpListener,
    http_server: tiny_http::Server,
    ws_addr: SocketAddr,
    http_addr: SocketAddr,
    hub: Arc<Hub>,
}

impl Server {
    /// Checks the source and binds both ports; errors here mean the daemon cannot start.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        source::check_supported(&config.source)?;
        let ws_listener = TcpListener::bind(config.ws_listen)
            .await
            .with_context(|| format!("cannot listen for WebSocket on {}", config.ws_listen))?;
        let ws_addr = ws_listener.local_addr()?;
        let http_server = http::bind(config.http_listen)?;
        let http_addr = http_server
            .server_addr()
            .to_ip()
            .context("HTTP listener has no IP address")?;
        Ok(Server {
            config: Arc::new(config),
            ws_listener,
            http_server,
            ws_addr,
            http_addr,
            hub: Arc::new(Hub::new()),
        })
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serves until `stop` completes, then shuts everything down.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let trigger = ShutdownTrigger::new();
        let camera = self
            .hub
            .stream(CAMERA)
            .expect("camera is a valid stream name");
        source::spawn(&self.config, camera, trigger.subscribe())?;

        let ws_ctx = Arc::new(WsContext::new(self.config.clone(), self.hub.clone()));
        let ws_task = tokio::spawn(ws::serve(
            self.ws_listener,
            ws_ctx.clone(),
            trigger.subscribe(),
        ));
        let http_ctx = Arc::new(HttpContext {
            config: self.config.clone(),
            hub: self.hub.clone(),
            ws: ws_ctx,
            started: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        });
        let http_threads = http::spawn(self.http_server, http_ctx, trigger.subscribe());
        tracing::info!(
            http = %self.http_addr, ws = %self.ws_addr, source = %self.config.source,
            "kindercam is serving"
        );

        stop.await;
        tracing::info!("shutting down");
        let http_shutdown = trigger.subscribe();
        if !trigger.drained(DRAIN_LIMIT).await {
            tracing::warn!("some connections did not close in time");
        }
        drop(http_shutdown);
        let _ = ws_task.await;
        for thread in http_threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        Ok(())
    }
}
