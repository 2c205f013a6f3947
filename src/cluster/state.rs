//! Families, link tokens and login sessions shared by every node of a cluster,
//! in JetStream KV buckets: the cluster's truth, which each node replicates into
//! its own SQLite database and registries (`records::Replica`).
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `kindercam_families` | family id | the family as stored, with its code's SHA-256 (never the code) |
//! | `kindercam_tokens` | token id | the link token, with the token's SHA-256 |
//! | `kindercam_sessions` | hex SHA-256 of the cookie's token | the session and its expiry; the bucket's max age is the session lifetime |
//!
//! Each bucket keeps one value per key, on up to three servers. Writes (the
//! admin API, logins) wait for JetStream's acknowledgement, so an answer means
//! the change is in the cluster; without NATS they fail clearly.
//!
//! A follower task per bucket and node: when it (re)connects it reads the
//! bucket's current content (an ordered consumer delivering the last value of each key),
//! replaces this node's families, tokens and sessions with it (or, when a
//! bucket was never written, seeds it from this node's database: that is how a
//! single node's data moves into a cluster), then applies each change as it
//! comes. The buckets are followed each on its own: after an outage JetStream
//! elects a leader for each separately, and families must not wait for the
//! tokens' leader (sessions do wait for families: a session belongs to one).
//! A revocation reaches the registries, whose signals close that
//! family's or token's sockets, in milliseconds. After an outage, or when the
//! connection's client is replaced, it reads everything again, so a change
//! missed meanwhile still applies. Nothing on the frame path waits for any of
//! this.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::follow::{self, Link, Stopped};
use super::hedge::Hedge;
use super::Cluster;
use crate::auth::families::{Family, FieldError};
use crate::auth::tokens::{LinkToken, Scope};
use crate::records::{RecordError, Replica};
use crate::shutdown::Shutdown;
use crate::store::StoredSession;
use crate::sync::Locked;

pub const FAMILIES: &str = "kindercam_families";
pub const TOKENS: &str = "kindercam_tokens";
pub const SESSIONS: &str = "kindercam_sessions";

/// How long a write may wait for JetStream before the change is refused.
const WRITE_LIMIT: Duration = Duration::from_secs(5);
/// How long reading a bucket's content may take.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// How a bucket is opened for reading (`hedge`): after a NATS server went
/// silent, a request sent before the cluster elected new leaders, or on a
/// client replaced since, may never be answered; a fresh one every 2 s on the
/// current client is, once the cluster has recovered. (Each JetStream request
/// also ends at the client's own 5 s time-out; the ones made after it go on.)
const OPEN: Hedge = Hedge {
    every: Duration::from_secs(2),
    patience: Duration::from_secs(12),
};
/// How long a node waits at start for its first sync before serving anyway.
pub const FIRST_SYNC_LIMIT: Duration = Duration::from_secs(5);

// ---- the records as the buckets keep them ------------------------------------

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FamilyRecord {
    id: String,
    name: String,
    rooms: Vec<String>,
    max_devices: u32,
    created: i64,
    code_sha256: String,
}

fn family_value(f: &Family) -> Bytes {
    let record = FamilyRecord {
        id: f.id.clone(),
        name: f.name.clone(),
        rooms: f.rooms.clone(),
        max_devices: f.max_devices,
        created: f.created,
        code_sha256: hex(&f.code_hash),
    };
    serde_json::to_vec(&record)
        .expect("a family serializes")
        .into()
}

fn family_of(value: &[u8]) -> Result<Family, FieldError> {
    let r: FamilyRecord = serde_json::from_slice(value)
        .map_err(|e| FieldError::new("family", format!("not a family record: {e}")))?;
    let code_hash =
        unhex(&r.code_sha256).ok_or_else(|| FieldError::new("code_sha256", "not a hex SHA-256"))?;
    Ok(Family {
        id: r.id,
        name: r.name,
        rooms: r.rooms,
        max_devices: r.max_devices,
        created: r.created,
        last_seen: None,
        code_hash,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TokenRecord {
    id: String,
    name: String,
    rooms: Vec<String>,
    scope: String,
    created: i64,
    token_sha256: String,
}

fn token_value(t: &LinkToken) -> Bytes {
    let record = TokenRecord {
        id: t.id.clone(),
        name: t.name.clone(),
        rooms: t.rooms.clone(),
        scope: t.scope.as_str().to_owned(),
        created: t.created,
        token_sha256: hex(&t.hash),
    };
    serde_json::to_vec(&record)
        .expect("a token serializes")
        .into()
}

fn token_of(value: &[u8]) -> Result<LinkToken, FieldError> {
    let r: TokenRecord = serde_json::from_slice(value)
        .map_err(|e| FieldError::new("token", format!("not a link token record: {e}")))?;
    Ok(LinkToken {
        scope: Scope::parse(&r.scope)
            .ok_or_else(|| FieldError::new("scope", format!("{:?} is not a scope", r.scope)))?,
        hash: unhex(&r.token_sha256)
            .ok_or_else(|| FieldError::new("token_sha256", "not a hex SHA-256"))?,
        id: r.id,
        name: r.name,
        rooms: r.rooms,
        created: r.created,
        last_used: None,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    role: String,
    name: String,
    family: Option<String>,
    code_sha256: String,
    expires: i64,
}

fn session_value(s: &StoredSession) -> Bytes {
    let record = SessionRecord {
        role: s.role.clone(),
        name: s.name.clone(),
        family: s.family.clone(),
        code_sha256: hex(&s.code),
        expires: s.expires,
    };
    serde_json::to_vec(&record)
        .expect("a session serializes")
        .into()
}

fn session_of(key: &str, value: &[u8]) -> Result<StoredSession, FieldError> {
    let r: SessionRecord = serde_json::from_slice(value)
        .map_err(|e| FieldError::new("session", format!("not a session record: {e}")))?;
    Ok(StoredSession {
        key: unhex(key).ok_or_else(|| FieldError::new("key", "not a hex SHA-256"))?,
        role: r.role,
        name: r.name,
        family: r.family,
        code: unhex(&r.code_sha256)
            .ok_or_else(|| FieldError::new("code_sha256", "not a hex SHA-256"))?,
        expires: r.expires,
    })
}

// ---- the buckets -------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Families,
    Tokens,
    Sessions,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Families, Kind::Tokens, Kind::Sessions];

    fn index(self) -> usize {
        self as usize
    }

    fn bucket(self) -> &'static str {
        match self {
            Kind::Families => FAMILIES,
            Kind::Tokens => TOKENS,
            Kind::Sessions => SESSIONS,
        }
    }
}

/// How many servers keep a copy of a bucket or stream: three, or all the
/// cluster has when it has fewer.
pub(super) fn replicas(cluster: &Cluster) -> usize {
    cluster
        .client()
        .server_info()
        .connect_urls
        .len()
        .clamp(1, 3)
}

/// How long a bucket's creation is waited for before looking for it again.
const CREATE_LIMIT: Duration = Duration::from_secs(3);

/// Opens bucket `name`, creating it if no node has yet; another node creating
/// it at the same moment is fine.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // The stream a KV bucket is, made directly: `create_key_value` first asks
    // for the account's info, whose answer from nats-server 2.9 this client
    // cannot parse.
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some("kindercam's shared state".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: if max_age > Duration::ZERO && max_age < Duration::from_secs(120) {
            max_age
        } else {
            Duration::from_secs(120)
        },
        ..Default::default()
    };
    // Bounded: on a cluster still placing its first replicated streams the
    // answer can take 10 s, and meanwhile this node would not follow the
    // buckets. The bucket is looked for again below either way.
    match tokio::time::timeout(CREATE_LIMIT, js.create_stream(config))
        .await
        .unwrap_or_else(|_| Err(jetstream::context::CreateStreamErrorKind::TimedOut.into()))
    {
        Ok(_) => {
            tracing::info!(bucket = name, replicas, "created a shared-state bucket");
            js.get_key_value(name)
                .await
                .map_err(|e| format!("cannot open the bucket {name}: {e}"))
        }
        // Another node creating it at the same moment: it appears shortly.
        Err(created) => {
            for _ in 0..10 {
                if let Ok(store) = js.get_key_value(name).await {
                    return Ok(store);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(format!("cannot create the bucket {name}: {created}"))
        }
    }
}

/// A node's handle on the shared state; one per node.
pub struct SharedState {
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    session_ttl: Duration,
    /// Each bucket (by [`Kind::index`]) on the client of generation `.0`.
    buckets: Mutex<[Option<(u64, kv::Store)>; 3]>,
    replica: Replica,
    /// The bucket revision last applied here, by `bucket/key`: a change older
    /// than what this node already applied (its own write's echo arriving
    /// after a later write) is skipped. `u64::MAX` marks a key this node
    /// deleted itself. Emptied at each full read.
    applied: Mutex<HashMap<String, u64>>,
    /// Whether this node has read each bucket (by [`Kind::index`]) since it
    /// (re)connected, and follows it.
    synced: watch::Sender<[bool; 3]>,
}

impl SharedState {
    /// Must be called on the runtime the node runs on.
    pub fn new(cluster: Cluster, replica: Replica, session_ttl: Duration) -> Arc<SharedState> {
        Arc::new(SharedState {
            cluster,
            runtime: tokio::runtime::Handle::current(),
            session_ttl,
            buckets: Mutex::new([None, None, None]),
            replica,
            applied: Mutex::new(HashMap::new()),
            synced: watch::Sender::new([false; 3]),
        })
    }

    /// Follows the buckets until shutdown.
    pub fn spawn(self: &Arc<Self>, shutdown: Shutdown) {
        tokio::spawn(follow(self.clone(), shutdown));
    }

    /// Whether this node has read the buckets once and follows them: until it
    /// has, a revocation made on another node would not reach it.
    pub fn is_synced(&self) -> bool {
        self.synced.borrow().iter().all(|s| *s)
    }

    /// Waits, at most `limit`, for this node's first read of the buckets.
    pub async fn first_sync(&self, limit: Duration) -> bool {
        let mut synced = self.synced.subscribe();
        tokio::time::timeout(limit, synced.wait_for(|s| s.iter().all(|s| *s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A bucket on the current client, opened (or created) once per client.
    /// Each on its own: after an outage JetStream elects each bucket's leader
    /// separately, and one still without a leader must not hold up the others.
    async fn bucket(&self, kind: Kind) -> Result<kv::Store, String> {
        let generation = *self.cluster.connections().borrow();
        if let Some((at, store)) = self.buckets.locked()[kind.index()].as_ref() {
            if *at == generation {
                return Ok(store.clone());
            }
        }
        let js = self.cluster.jetstream();
        let max_age = match kind {
            Kind::Sessions => self.session_ttl,
            Kind::Families | Kind::Tokens => Duration::ZERO,
        };
        let store = bucket(&js, kind.bucket(), max_age, replicas(&self.cluster)).await?;
        self.buckets.locked()[kind.index()] = Some((generation, store.clone()));
        Ok(store)
    }

    /// Runs `work` on the node's runtime and waits for it, at most
    /// [`WRITE_LIMIT`]: for the admin API's and the login form's threads,
    /// never for an async worker.
    fn call<T, F>(&self, what: &str, work: F) -> Result<T, RecordError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        // Down now (the probe missed its round trips): say so at once rather
        // than after the time-out.
        if !self.cluster.health().ok() {
            return Err(RecordError::Cluster(format!(
                "{what}: NATS or JetStream is down (see /healthz)"
            )));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let result = match tokio::time::timeout(WRITE_LIMIT, work).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer from JetStream within {WRITE_LIMIT:?}")),
            };
            let _ = tx.send(result);
        });
        match rx.recv_timeout(WRITE_LIMIT + Duration::from_secs(1)) {
            Ok(result) => result.map_err(|why| RecordError::Cluster(format!("{what}: {why}"))),
            Err(_) => Err(RecordError::Cluster(format!("{what}: no answer"))),
        }
    }

    fn handle(self: &Arc<Self>) -> Arc<SharedState> {
        self.clone()
    }

    /// Adds a family to the cluster, then here.
    pub fn create_family(self: &Arc<Self>, family: &Family) -> Result<(), RecordError> {
        let (key, value) = (family.id.clone(), family_value(family));
        self.create(Kind::Families, key, value, "adding the family")
    }

    fn create(
        self: &Arc<Self>,
        kind: Kind,
        key: String,
        value: Bytes,
        what: &str,
    ) -> Result<(), RecordError> {
        let state = self.handle();
        let change = Change {
            key: key.clone(),
            value: Some(value.clone()),
        };
        let revision = self.call(what, async move {
            state
                .bucket(kind)
                .await?
                .create(&key, value)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.apply_at(kind, &change, revision);
        Ok(())
    }

    /// Changes family `id` as `edit` says, against its current value in the
    /// bucket (a compare-and-set, retried if another node changed it at the
    /// same moment). `None` when there is no such family.
    pub fn update_family(
        self: &Arc<Self>,
        id: &str,
        edit: impl Fn(&Family) -> Family + Send + 'static,
    ) -> Result<Option<Family>, RecordError> {
        let state = self.handle();
        let id = id.to_owned();
        let done = self.call("changing the family", async move {
            let families = state.bucket(Kind::Families).await?;
            for _ in 0..5 {
                let entry = families
                    .entry(id.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                    return Ok(None);
                };
                let current = family_of(&entry.value).map_err(|e| e.to_string())?;
                let edited = edit(&current);
                match families
                    .update(&id, family_value(&edited), entry.revision)
                    .await
                {
                    Ok(revision) => return Ok(Some((edited, revision))),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("changed elsewhere too often at the same time; try again".into())
        })?;
        let Some((edited, revision)) = done else {
            return Ok(None);
        };
        let change = Change {
            key: edited.id.clone(),
            value: Some(family_value(&edited)),
        };
        self.apply_at(Kind::Families, &change, revision);
        Ok(Some(edited))
    }

    /// Revokes a family in the cluster, then here.
    pub fn delete_family(self: &Arc<Self>, id: &str) -> Result<(), RecordError> {
        self.delete(Kind::Families, id.to_owned(), "revoking the family")
    }

    /// Adds a link token to the cluster, then here.
    pub fn create_token(self: &Arc<Self>, token: &LinkToken) -> Result<(), RecordError> {
        let (key, value) = (token.id.clone(), token_value(token));
        self.create(Kind::Tokens, key, value, "adding the link token")
    }

    /// Revokes a link token in the cluster, then here.
    pub fn delete_token(self: &Arc<Self>, id: &str) -> Result<(), RecordError> {
        self.delete(Kind::Tokens, id.to_owned(), "revoking the link token")
    }

    /// Shares a session made here.
    pub fn put_session(self: &Arc<Self>, session: &StoredSession) -> Result<(), RecordError> {
        let state = self.handle();
        let (key, value) = (hex(&session.key), session_value(session));
        let change = Change {
            key: key.clone(),
            value: Some(value.clone()),
        };
        let revision = self.call("sharing the login", async move {
            state
                .bucket(Kind::Sessions)
                .await?
                .put(&key, value)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.apply_at(Kind::Sessions, &change, revision);
        Ok(())
    }

    /// Ends sessions on every node (a logout, a family revoked or given a new
    /// code). Not waited for: each node ends a revoked family's sessions by
    /// itself; this only tidies the bucket, and ends a logout elsewhere.
    pub fn forget_sessions(self: &Arc<Self>, keys: Vec<[u8; 32]>) {
        if keys.is_empty() {
            return;
        }
        let state = self.handle();
        self.runtime.spawn(async move {
            let work = async {
                let sessions = state.bucket(Kind::Sessions).await?;
                for key in &keys {
                    sessions.delete(hex(key)).await.map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            };
            match tokio::time::timeout(WRITE_LIMIT, work).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => tracing::warn!(%why, "cannot end sessions in the cluster"),
                Err(_) => tracing::warn!("ending sessions in the cluster timed out"),
            }
        });
    }

    /// Deletes a key from the cluster, then here.
    fn delete(self: &Arc<Self>, kind: Kind, key: String, what: &str) -> Result<(), RecordError> {
        let state = self.handle();
        let change = Change {
            key: key.clone(),
            value: None,
        };
        self.call(what, async move {
            state
                .bucket(kind)
                .await?
                .delete(&key)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.apply_at(kind, &change, u64::MAX);
        Ok(())
    }

    /// Applies a change of revision `revision` here, unless this node already
    /// applied that key at a later one. Blocks on the database.
    fn apply_at(&self, kind: Kind, change: &Change, revision: u64) {
        let mut applied = self.applied.locked();
        let key = format!("{}/{}", kind.bucket(), change.key);
        if applied.get(&key).is_some_and(|&at| at >= revision) {
            return;
        }
        applied.insert(key, revision);
        apply(&self.replica, kind, change);
    }
}

// ---- following the buckets ---------------------------------------------------

/// One change read from a bucket: a key's new value, or `None` when deleted.
#[derive(Debug)]
struct Change {
    key: String,
    value: Option<Bytes>,
}

fn change_of(prefix: &str, message: &async_nats::Message) -> Option<Change> {
    let key = message.subject.as_str().strip_prefix(prefix)?.to_owned();
    let deleted = message.headers.as_ref().is_some_and(|h| {
        matches!(
            h.get("KV-Operation").map(|v| v.as_str()),
            Some("DEL" | "PURGE")
        ) || h.get("Nats-Marker-Reason").is_some()
    });
    Some(Change {
        key,
        value: (!deleted).then(|| message.payload.clone()),
    })
}

/// Applies one change to this node. Blocks on the database.
fn apply(replica: &Replica, kind: Kind, change: &Change) {
    let key = change.key.as_str();
    let bad = |e: FieldError| {
        tracing::warn!(bucket = kind.bucket(), key, error = %e, "a record in the cluster's bucket cannot be read; skipped");
    };
    match (kind, &change.value) {
        (Kind::Families, Some(value)) => match family_of(value) {
            Ok(family) if family.id == key => replica.family_put(family),
            Ok(_) => bad(FieldError::new("id", "not the record's key")),
            Err(e) => bad(e),
        },
        (Kind::Families, None) => replica.family_gone(key),
        (Kind::Tokens, Some(value)) => match token_of(value) {
            Ok(token) if token.id == key => replica.token_put(token),
            Ok(_) => bad(FieldError::new("id", "not the record's key")),
            Err(e) => bad(e),
        },
        (Kind::Tokens, None) => replica.token_gone(key),
        (Kind::Sessions, Some(value)) => match session_of(key, value) {
            Ok(session) => {
                replica.session_put(&session);
            }
            Err(e) => bad(e),
        },
        (Kind::Sessions, None) => {
            if let Some(key) = unhex(key) {
                replica.session_gone(key);
            }
        }
    }
}

/// Replaces this node's records of `kind` with a bucket's content (each
/// key's last change, with its revision); returns how many records the bucket
/// has and how many of this node's own went.
fn replace_with(state: &SharedState, kind: Kind, content: &[(Change, u64)]) -> (usize, usize) {
    let present: HashSet<&str> = content
        .iter()
        .filter(|(c, _)| c.value.is_some())
        .map(|(c, _)| c.key.as_str())
        .collect();
    // Removals first: a family gone from the cluster may hold a code that a
    // family in it has now.
    let gone = match kind {
        Kind::Families => state
            .replica
            .families_only(&present.iter().map(|k| k.to_string()).collect()),
        Kind::Tokens => state
            .replica
            .tokens_only(&present.iter().map(|k| k.to_string()).collect()),
        Kind::Sessions => state
            .replica
            .sessions_only(&present.iter().filter_map(|k| unhex(k)).collect()),
    };
    for (change, revision) in content {
        state.apply_at(kind, change, *revision);
    }
    (present.len(), gone)
}

/// The records of `kind` this node has, as the bucket keeps them.
fn local_records(replica: &Replica, kind: Kind) -> Result<Vec<(String, Bytes)>, String> {
    let e = |e: crate::store::StoreError| e.to_string();
    Ok(match kind {
        Kind::Families => replica
            .store()
            .families()
            .map_err(e)?
            .iter()
            .map(|f| (f.id.clone(), family_value(f)))
            .collect(),
        Kind::Tokens => replica
            .store()
            .tokens()
            .map_err(e)?
            .iter()
            .map(|t| (t.id.clone(), token_value(t)))
            .collect(),
        Kind::Sessions => replica
            .access()
            .sessions
            .all_stored()
            .iter()
            .map(|s| (hex(&s.key), session_value(s)))
            .collect(),
    })
}

/// Fills a bucket that was never written with this node's records.
async fn seed(bucket: &kv::Store, kind: Kind, replica: &Replica) -> Result<usize, String> {
    let replica = replica.clone();
    let records = tokio::task::spawn_blocking(move || local_records(&replica, kind))
        .await
        .map_err(|e| e.to_string())??;
    let mut seeded = 0;
    for (key, value) in records {
        match bucket.create(&key, value).await {
            Ok(_) => seeded += 1,
            // Another node seeding at the same moment.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("seeding {}: {e}", kind.bucket())),
        }
    }
    Ok(seeded)
}

type Feed = push::Ordered;

/// The feed of a bucket's content now (the last change of every key), then of
/// the changes after it; with how many of the first are waiting.
async fn open_feed(bucket: &kv::Store, client: &async_nats::Client) -> Result<(u64, Feed), String> {
    let consumer = bucket
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("kindercam shared-state follower".into()),
            filter_subject: format!("{}>", bucket.prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot follow {}: {e}", bucket.name))?;
    let pending = consumer.cached_info().num_pending;
    let feed = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot follow {}: {e}", bucket.name))?;
    Ok((pending, feed))
}

/// Reads a bucket's content off the start of its feed (`pending` changes).
async fn read_content(
    bucket: &kv::Store,
    mut pending: u64,
    feed: &mut Feed,
) -> Result<Vec<(Change, u64)>, String> {
    let mut content = Vec::new();
    while pending > 0 {
        let message = match tokio::time::timeout(READ_LIMIT, feed.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(format!("reading {}: {e}", bucket.name)),
            Ok(None) => return Err(format!("reading {}: the feed ended", bucket.name)),
            Err(_) => return Err(format!("reading {} took over {READ_LIMIT:?}", bucket.name)),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        pending = info.pending;
        let revision = info.stream_sequence;
        if let Some(change) = change_of(&bucket.prefix, &message) {
            content.push((change, revision));
        }
    }
    Ok(content)
}

/// Follows every bucket, each in its own task.
async fn follow(state: Arc<SharedState>, shutdown: Shutdown) {
    for kind in Kind::ALL {
        let state = state.clone();
        let what = format!("shared state {}", kind.bucket());
        let cluster = state.cluster.clone();
        tokio::spawn(follow::follow(
            cluster,
            what,
            shutdown.clone(),
            move |link| {
                let state = state.clone();
                async move {
                    let stopped = sync_and_follow(&state, kind, link).await;
                    set_synced(&state, kind, false);
                    stopped
                }
            },
        ));
    }
}

/// Marks bucket `kind` as read (and followed) or not.
fn set_synced(state: &SharedState, kind: Kind, synced: bool) {
    state.synced.send_if_modified(|all| {
        let was = std::mem::replace(&mut all[kind.index()], synced);
        was != synced
    });
}

/// One pass: reads bucket `kind`, then applies its changes.
async fn sync_and_follow(state: &Arc<SharedState>, kind: Kind, mut link: Link) -> Stopped {
    // A session belongs to a family: sessions are read once families are.
    if kind == Kind::Sessions {
        let mut synced = state.synced.subscribe();
        tokio::select! {
            stopped = link.stale() => return stopped,
            read = synced.wait_for(|s| s[Kind::Families.index()]) => if read.is_err() { return Stopped::Shutdown },
        }
    }
    let (prefix, mut feed) = tokio::select! {
        stopped = link.stale() => return stopped,
        read = read_bucket(state, kind) => match read {
            Ok(read) => read,
            Err(why) => return Stopped::Again(why),
        },
    };
    set_synced(state, kind, true);
    loop {
        tokio::select! {
            stopped = link.stale() => return stopped,
            next = feed.next() => match next {
                None => return Stopped::Again("the bucket's feed ended".into()),
                Some(Err(e)) => return Stopped::Again(format!("the bucket's feed failed: {e}")),
                Some(Ok(message)) => {
                    let Some(change) = change_of(&prefix, &message) else { continue };
                    let revision = match message.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => return Stopped::Again(format!("a change without its revision: {e}")),
                    };
                    let applying = state.clone();
                    let applied = tokio::task::spawn_blocking(move || applying.apply_at(kind, &change, revision)).await;
                    if applied.is_err() {
                        return Stopped::Shutdown;
                    }
                }
            }
        }
    }
}

/// Reads bucket `kind` (seeding it if it was never written) and replaces this
/// node's records of that kind with its content; returns the bucket's key
/// prefix and the feed of what changes next. The requests before the content
/// arrives are hedged ([`OPEN`]), all but the seeding.
async fn read_bucket(state: &Arc<SharedState>, kind: Kind) -> Result<(String, Feed), String> {
    let (bucket, written) = OPEN
        .first(&format!("opening {}", kind.bucket()), || {
            let state = state.clone();
            async move {
                let bucket = state.bucket(kind).await?;
                let info = bucket
                    .stream
                    .get_info()
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", kind.bucket()))?;
                Ok((bucket, info.state.last_sequence > 0))
            }
        })
        .await?;
    if !written {
        // Once, and never cut off by a hedged request's time-out: a bucket
        // left with part of this node's records would have the read below drop
        // the rest here.
        let seeded = seed(&bucket, kind, &state.replica).await?;
        if seeded > 0 {
            tracing::info!(
                bucket = kind.bucket(),
                seeded,
                "the cluster's bucket was empty: seeded it from this node's database"
            );
        }
    }
    let (pending, mut feed) = OPEN
        .first(&format!("following {}", kind.bucket()), || {
            let bucket = bucket.clone();
            let client = state.cluster.client();
            async move { open_feed(&bucket, &client).await }
        })
        .await?;
    let content = read_content(&bucket, pending, &mut feed).await?;
    let replacing = state.clone();
    let (present, gone) = tokio::task::spawn_blocking(move || {
        // What this node applied of this bucket is read again from it.
        let own = format!("{}/", kind.bucket());
        replacing
            .applied
            .locked()
            .retain(|key, _| !key.starts_with(&own));
        replace_with(&replacing, kind, &content)
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        node = %state.cluster.node(), bucket = kind.bucket(), records = present,
        local_only_removed = gone, "read the cluster's shared state"
    );
    Ok((bucket.prefix.clone(), feed))
}
