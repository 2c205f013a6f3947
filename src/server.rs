//! Binds both listeners, starts the source, the WebSocket server and the HTTP
//! threads, and stops them all together: on shutdown every WebSocket gets a close
//! frame (1001) and the process is done within about a second.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::codes;
use crate::auth::Access;
use crate::chat::Rooms;
use crate::config::Config;
use crate::http::{self, HttpContext};
use crate::http_guard;
use crate::hub::Hub;
use crate::metrics::{Exporter, Metrics, Sources};
use crate::net::{self, Gate};
use crate::notify::{self, Notifier};
use crate::privacy::hours::Hours;
use crate::privacy::pause::Pauses;
use crate::privacy::MaskBook;
use crate::records::Records;
use crate::shutdown::ShutdownTrigger;
use crate::source;
use crate::store::{Store, StoreSettings};
use crate::viewing_log::ViewingLog;
use crate::ws::{self, WsContext};

/// How long open connections get to say goodbye at shutdown.
const DRAIN_LIMIT: Duration = Duration::from_millis(800);
/// How long the database's last queued writes (chat, sessions, the viewing log)
/// may take at shutdown. Longer than the drain: an fsync to a busy SD card can
/// take seconds, and the history is what parents see after a restart.
const FINAL_SAVE_LIMIT: Duration = Duration::from_secs(5);

pub struct Server {
    config: Arc<Config>,
    ws_listener: TcpListener,
    http_listener: TcpListener,
    http_backend: tiny_http::Server,
    /// Private directory of the backend's Unix socket, removed at exit.
    backend_dir: PathBuf,
    backend_socket: PathBuf,
    ws_addr: SocketAddr,
    http_addr: SocketAddr,
    hub: Arc<Hub>,
    access: Arc<Access>,
    store: Store,
    /// Each room's opening hours; they close its stream to families outside them.
    hours: Arc<Hours>,
    tls: Option<TlsAcceptor>,
    notifier: Arc<Notifier>,
    /// How long one minute of a teacher's pause lasts (shorter in tests).
    pause_minute: Duration,
    /// The streams pushed out to relays (`--push-to`).
    pushes: crate::push::Pushes,
    /// The NATS cluster this relay is part of (`--nats`); `None`: a single node.
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::Cluster>,
}

impl Server {
    /// Checks the source, the access codes and TLS, and binds both ports; errors here
    /// mean the daemon cannot start.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        source::check_supported(&config)?;
        let (store, lost) = open_store(&config);
        let hub = Arc::new(Hub::new());
        // A database that exists but cannot be opened holds masks and hours the
        // admin set, unknown now: fail closed (every picture masked whole, every
        // camera's room closed to families) rather than show what they hid.
        hub.set_masks(match lost {
            false => mask_book(&config, &store),
            true => MaskBook::stored_unreadable(config.capture.masks.clone()),
        });
        // Before any stream exists, so that each is closed from its first moment
        // when its room is outside its hours.
        let hours = Arc::new(match lost {
            false => Hours::load(&config, &store),
            true => Hours::lost(&config),
        });
        hours.attach(&hub);
        let access = Arc::new(Access::from_config(&config, &store)?);
        let pushes = crate::push::Pushes::prepare(&config.push)?;
        let tls = match (&config.listen.tls_cert, &config.listen.tls_key) {
            (Some(cert), Some(key)) => Some(net::tls_acceptor(cert, key)?),
            _ => None,
        };
        let ws_listener = net::listen(config.listen.ws_listen).with_context(|| {
            format!("cannot listen for WebSocket on {}", config.listen.ws_listen)
        })?;
        let ws_addr = ws_listener.local_addr()?;
        let http_listener = net::listen(config.listen.http_listen)
            .with_context(|| format!("cannot listen for HTTP on {}", config.listen.http_listen))?;
        let http_addr = http_listener.local_addr()?;
        let backend_dir = backend_dir();
        let (http_backend, backend_socket) = http::bind_backend(&backend_dir)?;
        #[cfg(feature = "cluster")]
        let cluster = match config.cluster.enabled() {
            true => Some(crate::cluster::Cluster::connect(&config.cluster).await?),
            false => None,
        };
        Ok(Server {
            config: Arc::new(config),
            ws_listener,
            http_listener,
            http_backend,
            backend_dir,
            backend_socket,
            ws_addr,
            http_addr,
            hub,
            access,
            store,
            hours,
            tls,
            notifier: Arc::new(Notifier::disabled()),
            pause_minute: Duration::from_secs(60),
            pushes,
            #[cfg(feature = "cluster")]
            cluster,
        })
    }

    /// Makes a minute of pause last `minute`, so that a test can see a pause end
    /// by itself without waiting a real minute.
    pub fn with_pause_minute(mut self, minute: Duration) -> Server {
        self.pause_minute = minute;
        self
    }

    /// Tells systemd (or a test's socket) about readiness and shutdown, and runs the
    /// watchdog pings if the notifier has a watchdog interval.
    pub fn with_notifier(mut self, notifier: Notifier) -> Server {
        self.notifier = Arc::new(notifier);
        self
    }

    /// The chat rooms: in the cluster's chat stream on a relay with `--nats`
    /// (`cluster/chat.rs`), else in this node's database.
    fn chat_rooms(&self) -> Rooms {
        let history = self.config.storage.chat_history;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            let current = cluster.clone();
            let js = std::sync::Arc::new(move || current.jetstream());
            return Rooms::clustered(
                js,
                cluster.connections(),
                cluster.watch_health(),
                cluster.node(),
                history,
            );
        }
        Rooms::new(self.store.clone(), history)
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

    pub fn access(&self) -> Arc<Access> {
        self.access.clone()
    }

    /// The NATS cluster this relay is part of, if `--nats` was given.
    #[cfg(feature = "cluster")]
    pub fn cluster(&self) -> Option<crate::cluster::Cluster> {
        self.cluster.clone()
    }

    /// The file holding generated access codes, when those are in use.
    pub fn generated_codes_file(&self) -> Option<PathBuf> {
        let uses_generated = self.config.access.auth
            && (self.config.access.admin_code.is_none() || self.config.access.staff_code.is_none());
        uses_generated.then(|| self.config.storage.state_dir.join(codes::GENERATED_FILE))
    }

    /// Where families, link tokens and sessions change: this node's database,
    /// or on a clustered node the cluster's shared state, which this node then
    /// follows (it waits a few seconds for its first read of it, so that it
    /// does not serve a family revoked while it was away).
    async fn records(&self, trigger: &ShutdownTrigger) -> Records {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            use crate::cluster::state::{SharedState, FIRST_SYNC_LIMIT};
            let replica = crate::records::Replica::new(self.store.clone(), self.access.clone());
            let shared = SharedState::new(cluster.clone(), replica, self.config.access.session_ttl);
            shared.spawn(trigger.subscribe());
            crate::cluster::audit::spawn(
                cluster.clone(),
                self.store.clone(),
                self.config.storage.audit_days,
                trigger,
            );
            if !shared.first_sync(FIRST_SYNC_LIMIT).await {
                tracing::warn!(
                    "the cluster's shared state could not be read yet; serving with this node's \
                     copy until it can (admin changes fail until then)"
                );
            }
            return Records::shared(self.store.clone(), self.access.clone(), shared);
        }
        let _ = trigger;
        Records::local(self.store.clone(), self.access.clone())
    }

    /// Serves until `stop` completes, then shuts everything down.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let trigger = ShutdownTrigger::new();
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            cluster.spawn(self.hub.clone(), self.config.clone(), trigger.subscribe());
        }
        tokio::spawn(
            self.hours
                .clone()
                .drive(self.hub.clone(), trigger.subscribe()),
        );
        let fed = source::spawn(&self.config, &self.hub, trigger.subscribe())?;
        let chat = Arc::new(self.chat_rooms());
        let records = self.records(&trigger).await;
        let pushes = self.pushes.spawn(&self.hub, &trigger.subscribe())?;
        let heartbeats: Vec<_> = fed
            .iter()
            .map(|s| (s.name().to_owned(), s.heartbeat().clone()))
            .collect();

        let viewing = ViewingLog::new(self.store.clone());
        let pauses = Pauses::new(self.hub.clone(), self.store.clone(), self.pause_minute);
        // Before serving, so no family sees a frame of a room paused before a restart.
        let restoring = pauses.clone();
        tokio::task::spawn_blocking(move || restoring.restore()).await?;
        tokio::spawn(pauses.clone().run_clock(trigger.subscribe()));
        let metrics = Metrics::new();
        let ws_ctx = Arc::new(
            WsContext::new(
                self.config.clone(),
                self.hub.clone(),
                chat,
                viewing,
                self.access.clone(),
                self.tls.clone(),
                self.http_addr.port(),
            )
            .with_metrics(metrics.clone()),
        );
        let ws_task = tokio::spawn(ws::serve(
            self.ws_listener,
            ws_ctx.clone(),
            trigger.subscribe(),
        ));
        let http_gate = Gate::new(
            http_guard::MAX_IN_FLIGHT,
            self.config.limits.max_connections_per_ip,
        );
        let exporter = Exporter::new(Sources {
            metrics: metrics.clone(),
            hub: self.hub.clone(),
            chat: ws_ctx.chat.clone(),
            http_gate: http_gate.clone(),
            ws_gate: ws_ctx.gate.clone(),
            #[cfg(feature = "cluster")]
            cluster: self.cluster.clone(),
        });
        let http_ctx = Arc::new(HttpContext {
            config: self.config.clone(),
            hub: self.hub.clone(),
            ws: ws_ctx.clone(),
            access: self.access.clone(),
            store: self.store.clone(),
            records,
            hours: self.hours.clone(),
            pauses,
            http_port: self.http_addr.port(),
            ws_port: self.ws_addr.port(),
            started: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
            snapshot_waits: Default::default(),
            metrics: metrics.clone(),
            exporter,
            pushes,
            #[cfg(feature = "cluster")]
            cluster: self.cluster.clone(),
        });
        let http_threads = http::spawn(self.http_backend, http_ctx, trigger.subscribe());
        let guard = http_guard::Guard::new(
            http_gate,
            self.tls.clone(),
            self.backend_socket.clone(),
            ws_ctx,
            metrics,
        );
        let guard_task = tokio::spawn(http_guard::serve(
            self.http_listener,
            guard,
            trigger.subscribe(),
        ));
        tracing::info!(
            http = %self.http_addr, ws = %self.ws_addr, source = %self.config.capture.source,
            "kindercam is serving"
        );
        // Both listeners were bound in `bind` and their accept loops run now, and the
        // source has started: only now may systemd consider the service up.
        self.notifier.ready(&format!(
            "serving pages on {}, WebSocket on {}, source {}",
            self.http_addr, self.ws_addr, self.config.capture.source
        ));
        tokio::spawn(notify::watchdog(
            self.notifier.clone(),
            heartbeats,
            trigger.subscribe(),
        ));

        stop.await;
        tracing::info!("shutting down");
        self.notifier.stopping();
        if !trigger.drained(DRAIN_LIMIT).await {
            tracing::warn!("some connections did not close in time");
        }
        // After the drain, so it holds what was posted until the last chat closed
        // and every viewing session's end.
        let store = self.store.clone();
        let last_save = tokio::task::spawn_blocking(move || store.flush());
        match tokio::time::timeout(FINAL_SAVE_LIMIT, last_save).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "the last writes to the database failed at shutdown")
            }
            _ => {
                tracing::warn!("the last writes to the database did not finish in time at shutdown")
            }
        }
        let _ = ws_task.await;
        let _ = guard_task.await;
        for thread in http_threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = std::fs::remove_dir_all(&self.backend_dir);
        Ok(())
    }
}

/// The database in the state directory. One that cannot be opened (a read-only
/// or full SD card, a corrupt file) must not stop live viewing: kindercam then
/// keeps families' changes, sessions, chat and the viewing log in memory until
/// a restart, and says so.
/// The database, or an in-memory one when it cannot be opened; `true` with it
/// when a database file exists but could not be opened (its contents are lost
/// to this run, see `bind`).
fn open_store(config: &Config) -> (Store, bool) {
    let settings = StoreSettings {
        audit_days: config.storage.audit_days,
        ..StoreSettings::default()
    };
    match Store::open(&config.storage.state_dir, settings.clone()) {
        Ok(store) => (store, false),
        Err(e) => {
            let lost = config
                .storage
                .state_dir
                .join(crate::store::DB_FILE)
                .exists();
            tracing::error!(
                dir = %config.storage.state_dir.display(), error = %e,
                "cannot open the database; families, logins, chat and the viewing log are kept in memory until a restart"
            );
            if lost {
                tracing::error!(
                    "the privacy masks and opening hours set on the admin page are in that                      database: until it opens again, every picture is masked whole and every                      camera's room is closed to families"
                );
            }
            let store = Store::in_memory(settings).expect("an in-memory database always opens");
            (store, lost)
        }
    }
}

/// Each stream's privacy mask at start: the file's, overridden by what the admin
/// API stored. Stored masks that cannot be read fail closed (every stream masked
/// whole until the admin sets its masks again): they may hide more than the file's.
fn mask_book(config: &Config, store: &Store) -> MaskBook {
    let file = config.capture.masks.clone();
    match store.stream_masks() {
        Ok(stored) => {
            for (name, mask) in file.iter().chain(&stored) {
                tracing::debug!(stream = %name, rectangles = mask.rects().len(), "privacy mask");
            }
            MaskBook::new(file, stored)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot read the privacy masks set on the admin page; every picture is \
                 masked whole until its masks are saved again"
            );
            MaskBook::stored_unreadable(file)
        }
    }
}

/// A private directory for tiny_http's Unix socket, unique per server.
fn backend_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("kindercam-{}-{n}", std::process::id()))
}
