//! The `kindercam` executable: reads the config, runs the server until SIGTERM or
//! SIGINT, and exits 0 after a clean shutdown.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() {
    let filter =
        EnvFilter::try_from_env("KINDERCAM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if let Err(e) = run() {
        eprintln!("kindercam: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let config = kindercam::Config::from_process()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kindercam")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let server = kindercam::Server::bind(config).await?;
        println!(
            "kindercam: open http://{}/ in a browser (WebSocket on {})",
            display_addr(server.http_addr()),
            server.ws_addr()
        );
        server
            .run(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await
    })?;
    // Blocking threads (an encoder mid-frame) must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

/// A wildcard bind is not an address a browser can open; suggest localhost.
fn display_addr(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}
