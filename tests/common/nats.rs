//! A real NATS cluster for the cluster tests: Debian's `nats-server` (2.9.10 on
//! Debian 12) started as N nodes with JetStream on free 127.0.0.1 ports, never
//! 4222 (the Debian package runs a system server there). Everything it starts
//! is killed when the cluster is dropped; nodes can be killed with SIGKILL,
//! stopped with SIGSTOP (a silent server) and restarted.
//!
//! Without `nats-server` a test skips with a message, unless `CI` is set: CI
//! installs it (`scripts/test`), so there its absence is a failure.
//!
//! One cluster runs at a time (a test waits for the one before to be dropped):
//! the tests measure promises in wall-clock time (a silent server noticed in
//! about 3 s, frames back within 5 s), and on a 2-core machine several
//! clusters at once would measure each other.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{http_raw, TempDir};

/// How long a cluster may take to elect its JetStream meta leader.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// One nats-server process of the cluster.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub cluster_port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// N nats-server processes routed to each other, with JetStream.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    routes: String,
    dir: TempDir,
    /// This cluster's turn; the next one starts when it is dropped.
    _turn: Option<OwnedMutexGuard<()>>,
}

/// Whose turn it is to run a cluster.
static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(Arc::default);

/// The `nats-server` binary, if installed. `None` means: skip the test (it
/// panics instead under CI, where it must be installed).
fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is not installed, and CI must run the cluster tests \
             (scripts/test installs it: apt-get install nats-server)"
        );
        eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// A free port on 127.0.0.1 (the kernel's choice, released for the server).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream has a meta leader; `None`
    /// when nats-server is missing outside CI (the caller skips its test).
    pub async fn start(n: usize) -> Option<NatsCluster> {
        let binary = nats_server()?;
        let mut turn = Some(TURN.clone().lock_owned().await);
        // The ports are the kernel's free ones, let go for the servers to bind:
        // another process may take one in between, and that node then exits at
        // once ("address already in use"). Such a start is tried again on new
        // ports, up to three times.
        for attempt in 1..=3 {
            let dir = TempDir::new("nats");
            let mut nodes: Vec<NatsNode> = (1..=n)
                .map(|i| NatsNode {
                    name: format!("n{i}"),
                    port: free_port(),
                    monitor: free_port(),
                    cluster_port: free_port(),
                    store: dir.path().join(format!("n{i}")),
                    log: dir.path().join(format!("n{i}.log")),
                    child: None,
                    stopped: false,
                })
                .collect();
            let routes = nodes
                .iter()
                .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port))
                .collect::<Vec<_>>()
                .join(",");
            for node in &mut nodes {
                node.spawn(&binary, &routes);
            }
            let mut cluster = NatsCluster {
                nodes,
                routes,
                dir,
                _turn: turn.take(),
            };
            if attempt == 3 || !cluster.lost_a_node_at_start().await {
                cluster.wait_ready().await;
                return Some(cluster);
            }
            eprintln!("a NATS node exited at start (port taken?); starting again on new ports");
            // Keep the turn; dropping the failed cluster kills its other nodes.
            turn = cluster._turn.take();
        }
        unreachable!("the third attempt returns")
    }

    /// Whether a node exited while the cluster came up (within its ready limit).
    async fn lost_a_node_at_start(&mut self) -> bool {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            for node in &mut self.nodes {
                if let Some(child) = node.child.as_mut() {
                    if child.try_wait().ok().flatten().is_some() {
                        return true;
                    }
                }
            }
            let mut ready = true;
            for node in &self.nodes {
                ready &= node.has_meta_leader().await;
            }
            if ready || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's client URL, comma-separated, for `--nats`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose client port is `port`.
    pub fn node_on_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no NATS node on port {port}"))
    }

    /// Waits until every running node is up and JetStream has a meta leader.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let mut ready = true;
            for node in self
                .nodes
                .iter()
                .filter(|n| n.child.is_some() && !n.stopped)
            {
                ready &= node.has_meta_leader().await;
            }
            if ready {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the NATS cluster had no JetStream leader within {READY_LIMIT:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The subjects the NATS client named `client` subscribes to, as the
    /// running servers report them (`/connz?subs=1`).
    pub async fn subscriptions_of(&self, client: &str) -> Vec<String> {
        let mut subjects = Vec::new();
        for node in self
            .nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.stopped)
        {
            let Some(connz) = node.monitor_json("/connz?subs=1").await else {
                continue;
            };
            for conn in connz["connections"].as_array().into_iter().flatten() {
                if conn["name"] == client {
                    let list = conn["subscriptions_list"].as_array();
                    subjects.extend(
                        list.into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_owned)),
                    );
                }
            }
        }
        subjects
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Stops node `i` with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.signal(libc::SIGSTOP);
        node.stopped = true;
    }

    /// Resumes a node stopped by [`NatsCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.signal(libc::SIGCONT);
        node.stopped = false;
    }

    /// Starts node `i` again (after `kill`), with its JetStream store.
    pub fn restart(&mut self, i: usize) {
        let binary = nats_server().expect("nats-server was there at start");
        let routes = self.routes.clone();
        self.nodes[i].spawn(&binary, &routes);
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}\n", n.name, tail.join("\n"))
            })
            .collect()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl NatsNode {
    fn spawn(&mut self, binary: &std::path::Path, routes: &str) {
        std::fs::create_dir_all(&self.store).expect("node store dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .args(["--server_name", &self.name, "--cluster_name", "kc"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.cluster_port),
            ])
            .args(["--routes", routes])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        self.stopped = false;
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the node runs");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.name);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }

    /// The node answers its monitoring port and knows JetStream's meta leader.
    async fn has_meta_leader(&self) -> bool {
        self.monitor_json("/jsz").await.is_some_and(|jsz| {
            jsz["meta_cluster"]["leader"]
                .as_str()
                .is_some_and(|l| !l.is_empty())
        })
    }

    /// A page of the node's monitoring port, parsed; `None` if it does not answer.
    async fn monitor_json(&self, path: &str) -> Option<serde_json::Value> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.monitor));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let ask = async {
            let reply = http_raw(addr, request.as_bytes()).await.ok()?;
            serde_json::from_slice(&reply.body).ok()
        };
        tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .ok()
            .flatten()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // A failing test shows what the servers did (libtest prints a failing
        // test's output only).
        if std::thread::panicking() {
            eprintln!(
                "the NATS servers' logs, as the test failed:\n{}",
                self.logs()
            );
        }
        for node in &mut self.nodes {
            if node.stopped {
                node.signal(libc::SIGCONT);
            }
            node.kill();
        }
    }
}

#[cfg(feature = "cluster")]
impl NatsCluster {
    /// Stream `stream` as node `i` reports it, once it exists and has a leader
    /// (a relay sets its streams up in the background as it starts); panics
    /// after `limit`.
    pub async fn stream_info(
        &self,
        i: usize,
        stream: &str,
        limit: Duration,
    ) -> async_nats::jetstream::stream::Info {
        let url = format!("nats://127.0.0.1:{}", self.nodes[i].port);
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(mut found) = js.get_stream(stream).await {
                if let Ok(info) = found.info().await {
                    if info.cluster.as_ref().is_some_and(|c| c.leader.is_some()) {
                        return info.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no stream {stream} with a leader within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node leading stream `stream`, as node `i` reports it.
    pub async fn leader_of(&self, i: usize, stream: &str, limit: Duration) -> usize {
        let info = self.stream_info(i, stream, limit).await;
        let leader = info.cluster.and_then(|c| c.leader).expect("a leader");
        self.nodes
            .iter()
            .position(|n| n.name == leader)
            .expect("the leader is one of ours")
    }
}
