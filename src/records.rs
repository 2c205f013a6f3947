//! The one way families, link tokens and login sessions change: the admin API
//! and the login form call [`Records`], which writes where the truth lives and
//! then applies the change to this node's registries (whose watch signals close
//! the sockets a change takes away).
//!
//! - A single node: the truth is its SQLite database. The change is committed
//!   there (acknowledged) and only then applied in memory, so a failed write
//!   changes nothing.
//! - A node of a cluster (`--nats`, feature `cluster`): the truth is the
//!   cluster's JetStream KV buckets (`cluster::state`). The change is written
//!   there first, acknowledged, or refused when NATS is unreachable (the API
//!   answers 503: never a change on one node only); then it is applied here at
//!   once through the [`Replica`], and every other node applies it when its
//!   bucket watcher hears of it.
//!
//! [`Replica`] applies a change heard from the cluster to this node: to its
//! SQLite database, kept as a local replica (a node that loses NATS still knows
//! every family and still refuses the revoked ones it heard of), and to the
//! in-memory registries. Applying is idempotent: a node hearing its own change
//! come back, or a change twice after a reconnect, changes nothing more.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::auth::families::{Family, FamilyChange};
use crate::auth::tokens::LinkToken;
use crate::auth::{Access, Role};
use crate::store::{Store, StoreError, StoredSession};

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The database refused or failed.
    Store(StoreError),
    /// The cluster's buckets could not be written (NATS or JetStream down, a
    /// time-out), with the reason.
    Cluster(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Store(e) => e.fmt(f),
            RecordError::Cluster(why) => write!(f, "the cluster's shared state: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> Self {
        RecordError::Store(e)
    }
}

/// Where families, link tokens and sessions are changed; cheap to clone.
#[derive(Clone)]
pub struct Records {
    store: Store,
    access: Arc<Access>,
    #[cfg(feature = "cluster")]
    shared: Option<Arc<crate::cluster::state::SharedState>>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("clustered", &self.clustered())
            .finish_non_exhaustive()
    }
}

impl Records {
    /// A single node's records: its SQLite database.
    pub fn local(store: Store, access: Arc<Access>) -> Records {
        Records {
            store,
            access,
            #[cfg(feature = "cluster")]
            shared: None,
        }
    }

    /// A clustered node's records: the cluster's buckets, replicated here.
    #[cfg(feature = "cluster")]
    pub fn shared(
        store: Store,
        access: Arc<Access>,
        shared: Arc<crate::cluster::state::SharedState>,
    ) -> Records {
        Records {
            store,
            access,
            shared: Some(shared),
        }
    }

    /// Whether this node follows the cluster's records: always on a single
    /// node; in a cluster, once it has read the buckets (`/healthz` says so as
    /// `cluster.shared_state`). Until then a revocation made on another relay
    /// reaches this one only when it has.
    pub fn following(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            return shared.is_synced();
        }
        true
    }

    pub fn clustered(&self) -> bool {
        #[cfg(feature = "cluster")]
        return self.shared.is_some();
        #[cfg(not(feature = "cluster"))]
        false
    }

    /// Adds a family.
    pub fn create_family(&self, family: &Family) -> Result<(), RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            return shared.create_family(family);
        }
        self.store.create_family(family)?;
        self.access.families.insert(family.clone());
        Ok(())
    }

    /// Changes a family; `None` when there is no such family.
    pub fn update_family(
        &self,
        current: &Family,
        change: FamilyChange,
    ) -> Result<Option<Family>, RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            let edited = shared.update_family(&current.id, move |f| change.apply_to(f))?;
            let Some(edited) = edited else {
                return Ok(None);
            };
            return Ok(self.access.families.get(&edited.id).map(|f| (*f).clone()));
        }
        if self
            .store
            .update_family(&current.id, change.clone())?
            .is_none()
        {
            return Ok(None);
        }
        let edited = change.apply_to(current);
        self.access.families.update(edited.clone());
        Ok(Some(edited))
    }

    /// Gives a family a new code: the old one, its sessions and sockets end.
    /// Returns how many sessions ended, `None` when there is no such family.
    pub fn rotate_code(&self, id: &str, hash: [u8; 32]) -> Result<Option<usize>, RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            let sessions = self.access.sessions.keys_of_family(id);
            let rotated = shared.update_family(id, move |f| Family {
                code_hash: hash,
                ..f.clone()
            })?;
            if rotated.is_none() {
                return Ok(None);
            }
            shared.forget_sessions(sessions.clone());
            return Ok(Some(sessions.len()));
        }
        if !self.store.set_family_code(id, hash)? {
            return Ok(None);
        }
        self.access.families.rotate_code(id, hash);
        Ok(Some(self.access.sessions.end_family(id)))
    }

    /// Revokes a family: its sessions and sockets end, on every node. Returns
    /// how many sessions ended here, `None` when there is no such family.
    pub fn delete_family(&self, id: &str) -> Result<Option<usize>, RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            let sessions = self.access.sessions.keys_of_family(id);
            shared.delete_family(id)?;
            shared.forget_sessions(sessions.clone());
            return Ok(Some(sessions.len()));
        }
        if !self.store.delete_family(id)? {
            return Ok(None);
        }
        self.access.families.remove(id);
        Ok(Some(self.access.sessions.end_family(id)))
    }

    /// Adds a link token.
    pub fn create_token(&self, token: &LinkToken) -> Result<(), RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            return shared.create_token(token);
        }
        self.store.create_token(token)?;
        self.access.tokens.insert(token.clone());
        Ok(())
    }

    /// Revokes a link token; `false` when there is no such token.
    pub fn delete_token(&self, id: &str) -> Result<bool, RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            shared.delete_token(id)?;
            return Ok(true);
        }
        if !self.store.delete_token(id)? {
            return Ok(false);
        }
        self.access.tokens.remove(id);
        Ok(true)
    }

    /// A login made session `token` here (already in force here and queued to
    /// the database): in a cluster it is shared, so that the parent's next
    /// request may land on any node. An error means it could not be shared.
    pub fn session_started(&self, token: &str) -> Result<(), RecordError> {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            if let Some(stored) = self.access.sessions.stored(token) {
                shared.put_session(&stored)?;
            }
        }
        #[cfg(not(feature = "cluster"))]
        let _ = token;
        Ok(())
    }

    /// A logout ended the session whose token hashes to `key` here: in a
    /// cluster it ends on every node.
    pub fn session_ended(&self, key: [u8; 32]) {
        #[cfg(feature = "cluster")]
        if let Some(shared) = &self.shared {
            shared.forget_sessions(vec![key]);
        }
        #[cfg(not(feature = "cluster"))]
        let _ = key;
    }
}

/// Applies changes heard from the cluster to this node: its SQLite replica and
/// its registries. Its calls block on the database: call them off the async
/// workers.
#[derive(Clone)]
pub struct Replica {
    store: Store,
    access: Arc<Access>,
}

impl Replica {
    pub fn new(store: Store, access: Arc<Access>) -> Replica {
        Replica { store, access }
    }

    /// The database this replica keeps (what a node seeds an empty cluster with).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A family as the cluster has it now: added, changed, or given a new
    /// code (which ends its sessions and sockets). Nothing happens when this
    /// node has it so already.
    pub fn family_put(&self, family: Family) {
        let families = &self.access.families;
        let Some(current) = families.get(&family.id) else {
            if let Err(e) = self.store.create_family(&family) {
                tracing::warn!(family = %family.id, error = %e, "cannot save a family from the cluster locally");
            }
            tracing::debug!(family = %family.id, "family from the cluster");
            families.insert(family);
            return;
        };
        let id = family.id.as_str();
        if current.code_hash != family.code_hash {
            // In memory first: the old code's sockets close without waiting
            // for the disk.
            families.rotate_code(id, family.code_hash);
            let sessions = self.access.sessions.end_family(id);
            if let Err(e) = self.store.set_family_code(id, family.code_hash) {
                tracing::warn!(family = %id, error = %e, "cannot save a family's new code locally");
            }
            tracing::info!(family = %id, sessions, "family code rotated in the cluster");
        }
        let same = current.name == family.name
            && current.rooms == family.rooms
            && current.max_devices == family.max_devices;
        if !same {
            let change = FamilyChange {
                name: Some(family.name.clone()),
                rooms: Some(family.rooms.clone()),
                max_devices: Some(family.max_devices),
            };
            // A room taken away closes its sockets before the disk is written.
            if let Some(now) = families.get(id) {
                families.update(change.apply_to(&now));
            }
            if let Err(e) = self.store.update_family(id, change) {
                tracing::warn!(family = %id, error = %e, "cannot save a family change locally");
            }
            tracing::debug!(family = %id, "family changed in the cluster");
        }
    }

    /// A family revoked in the cluster: its sessions and sockets end here.
    pub fn family_gone(&self, id: &str) {
        if !self.access.families.remove(id) {
            return;
        }
        if let Err(e) = self.store.delete_family(id) {
            tracing::warn!(family = %id, error = %e, "cannot delete a revoked family locally");
        }
        let sessions = self.access.sessions.end_family(id);
        tracing::info!(family = %id, sessions, "family revoked in the cluster");
    }

    /// Keeps only the families in `ids` (the cluster's); returns how many went.
    pub fn families_only(&self, ids: &HashSet<String>) -> usize {
        let gone: Vec<String> = self
            .access
            .families
            .list()
            .into_iter()
            .map(|(f, _)| f.id.clone())
            .filter(|id| !ids.contains(id))
            .collect();
        for id in &gone {
            self.family_gone(id);
        }
        gone.len()
    }

    /// A link token as the cluster has it now.
    pub fn token_put(&self, token: LinkToken) {
        let tokens = &self.access.tokens;
        if let Some(current) = tokens.get(&token.id) {
            let same = current.hash == token.hash
                && current.name == token.name
                && current.rooms == token.rooms
                && current.scope == token.scope;
            if same {
                return;
            }
            // A token is never edited, only made and revoked: one that differs
            // is another token under the same id. Replace it.
            let _ = self.store.delete_token(&token.id);
        }
        if let Err(e) = self.store.create_token(&token) {
            tracing::warn!(token = %token.id, error = %e, "cannot save a link token from the cluster locally");
        }
        tracing::debug!(token = %token.id, "link token from the cluster");
        tokens.insert(token);
    }

    /// A link token revoked in the cluster: it stops here and its sockets close.
    pub fn token_gone(&self, id: &str) {
        if !self.access.tokens.remove(id) {
            return;
        }
        if let Err(e) = self.store.delete_token(id) {
            tracing::warn!(token = %id, error = %e, "cannot delete a revoked link token locally");
        }
        tracing::info!(token = %id, "link token revoked in the cluster");
    }

    /// Keeps only the link tokens in `ids`; returns how many went.
    pub fn tokens_only(&self, ids: &HashSet<String>) -> usize {
        let gone: Vec<String> = self
            .access
            .tokens
            .list()
            .into_iter()
            .map(|t| t.id.clone())
            .filter(|id| !ids.contains(id))
            .collect();
        for id in &gone {
            self.token_gone(id);
        }
        gone.len()
    }

    /// A session made on some node: in force here too if made with a code in
    /// force here. Returns whether it is.
    pub fn session_put(&self, session: &StoredSession) -> bool {
        let Some(role) = role_of(&session.role) else {
            return false;
        };
        let current = self.access.code_in_force(role, session.family.as_deref());
        self.access.sessions.adopt(session, current)
    }

    /// A session ended on some node (a logout): it ends here too.
    pub fn session_gone(&self, key: [u8; 32]) {
        self.access.sessions.end_key(key);
    }

    /// Keeps only the sessions in `keys`; returns how many went.
    pub fn sessions_only(&self, keys: &HashSet<[u8; 32]>) -> usize {
        self.access.sessions.retain_keys(keys)
    }
}

fn role_of(role: &str) -> Option<Role> {
    match role {
        "viewer" => Some(Role::Viewer),
        "staff" => Some(Role::Staff),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::families::{code_hash, Families};
    use crate::auth::tokens::{token_hash, Scope, Tokens};
    use crate::auth::{AccessSettings, DisplayName};
    use std::time::Duration;

    fn family(code: &str) -> Family {
        Family {
            id: "f1".into(),
            name: "Familia Pérez".into(),
            rooms: vec!["camera".into()],
            max_devices: 3,
            created: 1,
            last_seen: None,
            code_hash: code_hash(code),
        }
    }

    /// A node with no codes (auth off) and a database in memory.
    fn node() -> Replica {
        let store = Store::in_memory(Default::default()).unwrap();
        let access = Access::new(AccessSettings {
            codes: None,
            families: Families::default(),
            tokens: Tokens::default(),
            allowed_origins: vec![],
            session_ttl: Duration::from_secs(3600),
            tls: false,
            store: Some(store.clone()),
        });
        Replica::new(store, Arc::new(access))
    }

    /// What a family's session on this node looks like, as stored.
    fn session_of(replica: &Replica, code: &str) -> StoredSession {
        let (token, _) = replica
            .access()
            .sessions
            .create(
                Role::Viewer,
                DisplayName::parse("Ana").unwrap(),
                Some("f1".into()),
                code_hash(code),
            )
            .unwrap();
        replica.access().sessions.stored(&token).unwrap()
    }

    #[test]
    fn a_change_heard_twice_applies_once_and_a_new_code_ends_the_old_ones_sessions() {
        let replica = node();
        replica.family_put(family("code-one-1"));
        replica.family_put(family("code-one-1"));
        assert_eq!(replica.store().families().unwrap().len(), 1);
        let ended = replica.access().families.ended("f1").unwrap();
        let session = session_of(&replica, "code-one-1");
        // The same record again (a node's own change coming back) ends nothing.
        replica.family_put(family("code-one-1"));
        assert!(!*ended.borrow());
        assert_eq!(replica.access().sessions.len(), 1);

        let rotated = Family {
            name: "Pérez".into(),
            ..family("code-two-2")
        };
        replica.family_put(rotated);
        assert!(*ended.borrow(), "the old code's sockets close");
        assert!(replica.access().sessions.is_empty(), "its sessions end");
        let stored = replica.store().family("f1").unwrap().unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.code_hash),
            ("Pérez", code_hash("code-two-2")),
            "the replica has the change"
        );
        assert!(
            !replica.session_put(&session),
            "a session of the old code is not taken in"
        );
    }

    #[test]
    fn a_revoked_family_or_token_goes_with_its_sessions_and_the_clusters_content_replaces_a_nodes()
    {
        let replica = node();
        replica.family_put(family("code-one-1"));
        let other = Family {
            id: "f2".into(),
            code_hash: code_hash("code-three-3"),
            ..family("x")
        };
        replica.family_put(other);
        let session = session_of(&replica, "code-one-1");
        let signal = replica.access().families.ended("f1").unwrap();
        replica.family_gone("f1");
        replica.family_gone("f1");
        assert!(*signal.borrow());
        assert!(replica.access().sessions.is_empty());
        assert!(replica.store().family("f1").unwrap().is_none());
        // Known on another node by then: a session heard of later is refused.
        assert!(!replica.session_put(&session));

        let token = LinkToken {
            id: "t1".into(),
            name: "Home Assistant".into(),
            rooms: vec!["camera".into()],
            scope: Scope::View,
            created: 1,
            last_used: None,
            hash: token_hash("kc_one"),
        };
        replica.token_put(token.clone());
        replica.token_put(token);
        let (_, token_ended) = replica.access().tokens.by_token("kc_one").unwrap();
        assert_eq!(replica.tokens_only(&HashSet::new()), 1);
        assert!(*token_ended.borrow());
        assert!(replica.store().tokens().unwrap().is_empty());

        assert_eq!(replica.families_only(&HashSet::from(["f2".to_owned()])), 0);
        assert_eq!(replica.families_only(&HashSet::new()), 1);
        assert!(replica.access().families.is_empty());
    }
}
