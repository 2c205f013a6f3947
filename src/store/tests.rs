//! Store behaviours that need its insides: a database that is full, a writer that
//! stalls, the settings of the writer's connection. The rest of the store's tests,
//! through its public API only, are in tests/store.rs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "kc-store-{tag}-{}-{n}-{}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The writer thread held inside a change, as on a hung SD card, until released.
struct Stalled {
    release: std::sync::mpsc::Sender<()>,
    waiter: std::thread::JoinHandle<()>,
}

fn stall(store: &Store) -> Stalled {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let store = store.clone();
    let waiter = std::thread::spawn(move || {
        store
            .on_writer(move |_| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .unwrap();
    });
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer takes the change");
    Stalled { release, waiter }
}

impl Stalled {
    fn release(self) {
        drop(self.release);
        self.waiter.join().unwrap();
    }
}

fn family(id: &str, code: u8) -> Family {
    Family {
        id: id.to_owned(),
        name: format!("Familia {id}"),
        rooms: vec!["camera".into()],
        max_devices: 3,
        code_hash: [code; 32],
        created: 1_000,
        last_seen: None,
    }
}

#[test]
fn the_writer_connection_is_durable_wal_with_foreign_keys() {
    let dir = TempDir::new("pragmas");
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    let (mode, sync, fk, busy) = store
        .on_writer(|c| {
            let get = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            Ok((
                mode,
                get("synchronous")?,
                get("foreign_keys")?,
                get("busy_timeout")?,
            ))
        })
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(fk, 1);
    assert!(busy > 0);
}

#[test]
fn a_full_database_fails_writes_with_a_reason_and_they_succeed_once_there_is_room() {
    let dir = TempDir::new("full");
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    store.create_family(&family("fa", 1)).unwrap();
    // The database may not grow: SQLite answers SQLITE_FULL, exactly as on a full disk.
    let pages: i64 = store
        .on_writer(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0)))
        .unwrap();
    store
        .on_writer(move |c| {
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        })
        .unwrap();

    let big = "x".repeat(8 * 1024);
    for id in 0..20 {
        store.chat_append("camera", id, &big, 100);
    }
    store.flush().unwrap();
    let stats = store.write_stats();
    assert_eq!(stats.failed, 20, "every queued write failed: {stats:?}");
    assert_eq!(stats.dropped, 0);
    assert!(store.chat_history("camera", 100).unwrap().is_empty());

    let mut crowded = family("fb", 2);
    crowded.name = big.repeat(4);
    assert_eq!(store.create_family(&crowded), Err(StoreError::Full));
    assert_eq!(store.families().unwrap().len(), 1, "nothing half-applied");
    assert_eq!(store.write_stats().failed, 21);

    // Room again: the same writer thread carries on.
    store
        .on_writer(|c| c.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(())))
        .unwrap();
    store.create_family(&crowded).unwrap();
    store.chat_append("camera", 30, "hola", 100);
    store.flush().unwrap();
    assert_eq!(store.families().unwrap().len(), 2);
    assert_eq!(
        store.chat_history("camera", 100).unwrap(),
        vec![(30, "hola".to_owned())]
    );
    assert_eq!(store.write_stats().failed, 21);
}

#[test]
fn a_stalled_writer_never_blocks_queued_writes_it_drops_and_counts_them() {
    let dir = TempDir::new("stalled");
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    let stalled = stall(&store);
    let sent = 2 * QUEUE as u64;
    let began = Instant::now();
    for id in 0..sent {
        store.chat_append("camera", id, "hola", usize::MAX);
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "queued writes waited for the stalled writer: {took:?}"
    );
    assert_eq!(
        store.write_stats().dropped,
        sent - QUEUE as u64,
        "the queue's overflow"
    );
    stalled.release();
    store.flush().unwrap();
    let kept = store.chat_history("camera", usize::MAX).unwrap().len();
    assert_eq!(kept, QUEUE, "every write that was queued landed");
    assert_eq!(store.write_stats().failed, 0);
}

#[test]
fn a_write_breaking_a_rule_is_skipped_alone_and_its_batch_commits() {
    let store = Store::in_memory(StoreSettings::default()).unwrap();
    let session = |family: Option<&str>, key: u8| StoredSession {
        key: [key; 32],
        role: "viewer".into(),
        name: "Ana".into(),
        family: family.map(str::to_owned),
        code: [0; 32],
        expires: unix_now() + 3600,
    };
    // Queued while the writer is busy, the three writes make one batch.
    let stalled = stall(&store);
    store.put_session(session(None, 1));
    store.put_session(session(Some("no-such-family"), 2));
    store.chat_append("camera", 1, "hola", 10);
    stalled.release();
    store.flush().unwrap();
    let keys: Vec<[u8; 32]> = store.sessions().unwrap().iter().map(|s| s.key).collect();
    assert_eq!(keys, vec![[1; 32]]);
    assert_eq!(store.chat_history("camera", 10).unwrap().len(), 1);
    assert_eq!(store.write_stats().failed, 1);
}

#[test]
fn close_commits_what_was_queued_and_later_writes_are_refused() {
    let dir = TempDir::new("close");
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    let other = store.clone();
    for id in 1..=100 {
        store.chat_append("camera", id, "hola", 1000);
    }
    store.close();
    assert_eq!(
        other.create_family(&family("fa", 1)),
        Err(StoreError::Closed)
    );
    other.chat_append("camera", 101, "tarde", 1000);
    assert_eq!(other.write_stats().dropped, 1);
    assert_eq!(other.flush(), Err(StoreError::Closed));
    drop((store, other));
    let reopened = Store::open(dir.path(), StoreSettings::default()).unwrap();
    assert_eq!(reopened.chat_history("camera", 1000).unwrap().len(), 100);
}

#[test]
fn stream_masks_survive_a_reopen_and_a_damaged_one_masks_everything() {
    let dir = TempDir::new("masks");
    let mask = Mask::from_json(r#"[{"x":0.05,"y":0.6,"w":0.3,"h":0.4}]"#).unwrap();
    {
        let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
        assert!(store.stream_masks().unwrap().is_empty());
        store.set_stream_masks("camera", &mask).unwrap();
        store.set_stream_masks("hall", &mask).unwrap();
        // Replaced, and an empty list is kept: it overrides the file's masks.
        store.set_stream_masks("hall", &Mask::none()).unwrap();
        store
            .on_writer(|c| {
                c.execute(
                    "INSERT INTO stream_masks VALUES ('yard', '[{\"x\": 2}]', 0)",
                    [],
                )
            })
            .unwrap();
        store.close();
    }
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    let stored = store.stream_masks().unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored["camera"], mask);
    assert!(stored["hall"].is_empty());
    assert_eq!(stored["yard"], Mask::full(), "fails closed");
}

/// Another node's viewing-log changes, heard twice (a reconnect replays them),
/// make one row, closed, naming that node; its open pause is not restored here.
#[test]
fn other_nodes_rows_are_ingested_once_and_their_pauses_stay_theirs() {
    let store = Store::in_memory(StoreSettings::default()).unwrap();
    let open = |id, kind: &str| AuditEvent::Open {
        id,
        kind: kind.into(),
        family: Some("f1".into()),
        family_name: Some("Pérez".into()),
        name: Some("Ana".into()),
        role: "viewer".into(),
        stream: "camera".into(),
        start: 1000,
        address: "192.0.2.7".into(),
        until: (kind == "pause").then_some(2000),
    };
    let close = AuditEvent::Close {
        id: 7,
        end: 1060,
        resumed_by: None,
    };
    let events = vec![
        ("relay-2".to_owned(), open(7, "watch")),
        ("relay-2".to_owned(), open(8, "pause")),
        ("relay-2".to_owned(), close.clone()),
    ];
    store.ingest_audit(events.clone(), 3).unwrap();
    store.ingest_audit(events, 3).unwrap();
    // The same id from another node is another row.
    store
        .ingest_audit(vec![("relay-3".to_owned(), open(7, "watch"))], 4)
        .unwrap();
    let mine = store.audit_open(ViewStart {
        family: None,
        family_name: None,
        name: Some("Luis".into()),
        role: "staff".into(),
        stream: "camera".into(),
        start: 1001,
        address: "127.0.0.1".into(),
    });
    store.flush().unwrap();
    let rows = store.audit(0, i64::MAX).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let watched: Vec<_> = rows
        .iter()
        .filter(|r| r.node.as_deref() == Some("relay-2") && r.kind == "watch")
        .collect();
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].end, Some(1060));
    let own = rows.iter().find(|r| r.id == mine).unwrap();
    assert_eq!(own.node, None, "this node's own row");
    assert_eq!(store.audit_seq().unwrap(), 4);
    assert!(
        store.open_pauses().unwrap().is_empty(),
        "another node's pause is not restored here"
    );
}

/// Rows an unclean stop left open (a viewing, a link token's) are closed at
/// the next open, and their closes are handed once to a cluster's publisher;
/// another node's open row and this node's pause stay open.
#[test]
fn rows_left_open_are_closed_at_open_and_their_closes_handed_over_once() {
    let dir = TempDir::new("leftovers");
    let start = |name: &str| ViewStart {
        family: None,
        family_name: None,
        name: Some(name.into()),
        role: "staff".into(),
        stream: "camera".into(),
        start: 1000,
        address: "127.0.0.1".into(),
    };
    let (watched, token) = {
        let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
        let ids = (
            store.audit_open(start("Ana")),
            store.audit_open_token(start("Home Assistant")),
        );
        store
            .ingest_audit(
                vec![(
                    "relay-2".to_owned(),
                    AuditEvent::Open {
                        id: 1,
                        kind: "watch".into(),
                        family: None,
                        family_name: None,
                        name: Some("Luis".into()),
                        role: "staff".into(),
                        stream: "camera".into(),
                        start: 1000,
                        address: "192.0.2.7".into(),
                        until: None,
                    },
                )],
                1,
            )
            .unwrap();
        store.flush().unwrap();
        ids
    };
    let store = Store::open(dir.path(), StoreSettings::default()).unwrap();
    let closes = store.take_leftover_closes();
    let mut closed: Vec<i64> = closes
        .iter()
        .map(|c| match c {
            AuditEvent::Close { id, .. } => *id,
            other => panic!("{other:?}"),
        })
        .collect();
    closed.sort();
    assert_eq!(closed, [watched.get(), token.get()]);
    assert!(store.take_leftover_closes().is_empty(), "handed over once");
    let rows = store.audit(0, i64::MAX).unwrap();
    let open: Vec<_> = rows.iter().filter(|r| r.end.is_none()).collect();
    assert_eq!(open.len(), 1, "{rows:?}");
    assert_eq!(open[0].node.as_deref(), Some("relay-2"));
}
