//! The `kindercam` executable: reads the config, runs the server until SIGTERM or
//! SIGINT, and exits 0 after a clean shutdown.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

fn main() {
    let (filter, bad) = log_filter(std::env::var("KINDERCAM_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(filter)
        .init();
    if let Some(why) = bad {
        tracing::warn!("KINDERCAM_LOG ignored, logging at info: {why}");
    }
    if let Err(e) = run() {
        eprintln!("kindercam: {e:#}");
        std::process::exit(1);
    }
}

/// The log filter from `KINDERCAM_LOG`: a level (`debug`) or per-module levels
/// (`info,kindercam::store=debug`). `Targets` rather than `EnvFilter`: the same
/// directives kindercam needs, without the regex engine that EnvFilter brings
/// (hundreds of KB of the Pi binary). A value that does not parse is reported,
/// and the default, `info`, is used.
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let default = Targets::new().with_default(LevelFilter::INFO);
    match value.map(str::trim) {
        None | Some("") => (default, None),
        Some(text) => match text.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (default, Some(format!("{text:?}: {e}"))),
        },
    }
}

fn run() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("hash-code") => return hash_code(),
        Some("backup") => return backup(),
        _ => {}
    }
    let config = kindercam::Config::from_process()?;
    if config.capture.list_devices {
        let listing = kindercam::devices::list(&config);
        print!("{}", listing.text);
        if listing.usable == 0 {
            std::process::exit(1);
        }
        return Ok(());
    }
    match kindercam::net::raise_open_files_limit() {
        // Each connection is a file; a few dozen more for the store, logs and devices.
        Ok(open) if (open as usize) < config.limits.max_connections + 64 => tracing::warn!(
            open_files = open,
            max_connections = config.limits.max_connections,
            "the open-file limit is below --max-connections: connections past it will be refused"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kindercam")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let server = kindercam::Server::bind(config)
            .await?
            .with_notifier(notifier());
        let access = server.access();
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        tokio::spawn(async move {
            // `systemctl reload kindercam` after changing a code in the config file.
            while hup.recv().await.is_some() {
                // Reading the config and saving sessions touch the SD card.
                let access = access.clone();
                let reloaded = tokio::task::spawn_blocking(move || {
                    kindercam::Config::from_process().and_then(|config| access.reload(&config))
                })
                .await;
                match reloaded {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("reload failed, codes unchanged: {e:#}"),
                    Err(e) => tracing::error!("reload failed, codes unchanged: {e}"),
                }
            }
        });
        println!(
            "kindercam: open http://{}/ in a browser (WebSocket on {})",
            display_addr(server.http_addr()),
            server.ws_addr()
        );
        if let Some(file) = server.generated_codes_file() {
            println!(
                "kindercam: log in with an access code from {}",
                file.display()
            );
        }
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

/// `kindercam hash-code [CODE]`: prints an argon2 hash of CODE (or of a line read
/// from standard input, which keeps the code out of the shell history).
fn hash_code() -> anyhow::Result<()> {
    let code = match std::env::args().nth(2) {
        Some(code) if code != "-" => code,
        _ => {
            eprintln!("kindercam: type the access code, then Enter:");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the code")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    kindercam::auth::codes::Code::parse(&code).map_err(anyhow::Error::msg)?;
    println!("{}", kindercam::auth::codes::hash_code(&code)?);
    Ok(())
}

/// `kindercam backup FILE [--state-dir DIR] [other daemon flags]`: a consistent copy
/// of the live database, safe while the daemon runs. The state directory is found
/// exactly as the daemon finds it (flags, environment, --config file, defaults).
/// Restore: stop the daemon, copy FILE over kindercam.db in the state directory,
/// remove kindercam.db-wal and kindercam.db-shm there, start the daemon.
fn backup() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(2);
    let file = match args.next() {
        Some(file) if !file.to_string_lossy().starts_with('-') => std::path::PathBuf::from(file),
        _ => anyhow::bail!("usage: kindercam backup FILE [--state-dir DIR] [--config FILE]"),
    };
    let daemon_args = std::iter::once(std::ffi::OsString::from("kindercam")).chain(args);
    let config = kindercam::Config::load(daemon_args, &|k| std::env::var(k).ok())?;
    let report = kindercam::store::backup(&config.storage.state_dir, &file)?;
    println!("kindercam: {report}");
    Ok(())
}

/// systemd's notification socket and watchdog, if we run under systemd. Bad
/// settings are logged and ignored: serving matters more than reporting.
fn notifier() -> kindercam::notify::Notifier {
    kindercam::notify::Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!("not notifying systemd: {e}");
        kindercam::notify::Notifier::disabled()
    })
}

/// A wildcard bind is not an address a browser can open; suggest localhost.
fn display_addr(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_log_filter_takes_levels_and_modules_and_reports_nonsense() {
        let (info, bad) = log_filter(None);
        assert!(bad.is_none());
        assert!(info.would_enable("kindercam::hub", &Level::INFO));
        assert!(!info.would_enable("kindercam::hub", &Level::DEBUG));

        let (modules, bad) = log_filter(Some("warn,kindercam::store=debug"));
        assert!(bad.is_none());
        assert!(modules.would_enable("kindercam::store::sqlite", &Level::DEBUG));
        assert!(!modules.would_enable("kindercam::hub", &Level::INFO));

        let (fallback, bad) = log_filter(Some("kindercam=loud"));
        assert!(bad.expect("reported").contains("kindercam=loud"));
        assert!(fallback.would_enable("kindercam::hub", &Level::INFO));
    }
}
