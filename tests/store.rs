//! The store (src/store) through its public API: families, sessions, the viewing
//! log, chat history, the import of the JSON state files (made by the current code),
//! a full disk and a read-only one, kill -9 in the middle of writes, and backups
//! taken while it writes.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use kindercam::store::{
    audit_csv, unix_now, Family, FamilyChange, SessionsOf, Store, StoreError, StoreSettings,
    StoredSession, ViewStart, DB_FILE,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const DAY: i64 = 24 * 3600;

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreSettings::default()).expect("the store opens")
}

fn family(id: &str, code: &str) -> Family {
    Family {
        id: id.to_owned(),
        name: format!("Familia {id}"),
        rooms: vec!["camera".into(), "sala-2".into()],
        max_devices: 3,
        code_hash: Sha256::digest(code.as_bytes()).into(),
        created: unix_now(),
        last_seen: None,
    }
}

fn session(key: u8, role: &str, family: Option<&str>, expires: i64) -> StoredSession {
    StoredSession {
        key: [key; 32],
        role: role.to_owned(),
        name: format!("name{key}"),
        family: family.map(str::to_owned),
        code: [7; 32],
        expires,
    }
}

fn view(family: Option<&str>, name: &str, stream: &str, start: i64) -> ViewStart {
    ViewStart {
        family_name: None,
        family: family.map(str::to_owned),
        name: Some(name.to_owned()),
        role: if family.is_some() { "viewer" } else { "staff" }.to_owned(),
        stream: stream.to_owned(),
        start,
        address: "192.0.2.7".to_owned(),
    }
}

fn session_keys(store: &Store) -> HashSet<[u8; 32]> {
    store.sessions().unwrap().iter().map(|s| s.key).collect()
}

// ---- log capture -----------------------------------------------------------

/// Every log line of this test binary: the writer logs from its own thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let sink = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        captured
    })
}

// ---- families, sessions, log, chat ---------------------------------------------

#[test]
fn families_are_created_listed_changed_recoded_and_deleted() {
    let state = TempDir::new("families");
    let store = open(state.path());
    let perez = family("fperez", "code-perez");
    let diaz = family("fdiaz", "code-diaz");
    store.create_family(&perez).unwrap();
    store.create_family(&diaz).unwrap();

    // No two families share a code, nor an id; nothing of a refused one stays.
    let same_code = family("fother", "code-perez");
    assert_eq!(
        store.create_family(&same_code),
        Err(StoreError::Conflict("another family has this code".into()))
    );
    assert!(matches!(
        store.create_family(&family("fdiaz", "fresh")),
        Err(StoreError::Conflict(_))
    ));
    let mut nobody_may_watch = family("fzero", "code-zero");
    nobody_may_watch.max_devices = 0;
    assert!(matches!(
        store.create_family(&nobody_may_watch),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.families().unwrap(), vec![perez.clone(), diaz.clone()]);
    assert_eq!(
        store.family_by_code(&perez.code_hash).unwrap(),
        Some(perez.clone())
    );

    let patch = FamilyChange {
        rooms: Some(vec!["sala-3".into()]),
        max_devices: Some(5),
        ..FamilyChange::default()
    };
    let changed = store
        .update_family("fperez", patch.clone())
        .unwrap()
        .unwrap();
    assert_eq!(changed.rooms, ["sala-3"]);
    assert_eq!(
        (changed.max_devices, changed.name.as_str()),
        (5, "Familia fperez")
    );
    assert_eq!(store.family("fperez").unwrap(), Some(changed));
    assert_eq!(store.update_family("nobody", patch).unwrap(), None);

    // Last visits only move forward.
    store.touch_family("fdiaz", 2_000);
    store.touch_family("fdiaz", 1_500);
    store.flush().unwrap();
    assert_eq!(
        store.family("fdiaz").unwrap().unwrap().last_seen,
        Some(2_000)
    );

    // A new code ends that family's sessions, and only those.
    let later = unix_now() + 3600;
    store.put_session(session(1, "viewer", Some("fperez"), later));
    store.put_session(session(2, "viewer", Some("fdiaz"), later));
    store.put_session(session(3, "staff", None, later));
    store.flush().unwrap();
    let new_hash: [u8; 32] = Sha256::digest(b"code-perez-2").into();
    assert!(store.set_family_code("fperez", new_hash).unwrap());
    assert!(!store.set_family_code("nobody", new_hash).unwrap());
    assert_eq!(store.family_by_code(&perez.code_hash).unwrap(), None);
    assert_eq!(
        store.family_by_code(&new_hash).unwrap().map(|f| f.id),
        Some("fperez".to_owned())
    );
    assert_eq!(session_keys(&store), HashSet::from([[2; 32], [3; 32]]));
    // Taking another family's code is refused, and changes nothing.
    assert!(matches!(
        store.set_family_code("fdiaz", new_hash),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(session_keys(&store).len(), 2);

    // Deleting a family ends its sessions; the viewing log keeps its rows.
    let id = store.audit_open(view(Some("fdiaz"), "Ana", "camera", 100));
    store.audit_close(id, 200);
    assert!(store.delete_family("fdiaz").unwrap());
    assert!(!store.delete_family("fdiaz").unwrap());
    assert_eq!(session_keys(&store), HashSet::from([[3; 32]]));
    assert_eq!(
        store.audit(0, 1_000).unwrap()[0].family.as_deref(),
        Some("fdiaz")
    );

    // All of it is on disk.
    drop(store);
    let reopened = open(state.path());
    let ids: Vec<String> = reopened
        .families()
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, ["fperez"]);
}

#[test]
fn sessions_load_only_unexpired_and_end_by_key_role_or_family() {
    let state = TempDir::new("sessions");
    let store = open(state.path());
    store.create_family(&family("fperez", "c1")).unwrap();
    let now = unix_now();
    store.put_session(session(1, "viewer", Some("fperez"), now + 3600));
    store.put_session(session(2, "viewer", None, now + 3600));
    store.put_session(session(3, "staff", None, now + 3600));
    store.put_session(session(4, "admin", None, now + 3600));
    store.put_session(session(5, "viewer", None, now - 1));
    store.flush().unwrap();
    let all = store.sessions().unwrap();
    assert_eq!(all.len(), 4, "the expired one is left out");
    let first = all.iter().find(|s| s.key == [1; 32]).unwrap();
    assert_eq!(first, &session(1, "viewer", Some("fperez"), now + 3600));

    store.delete_session([2; 32]);
    store.delete_sessions(SessionsOf::Role("staff".into()));
    store.flush().unwrap();
    assert_eq!(session_keys(&store), HashSet::from([[1; 32], [4; 32]]));
    store.delete_sessions(SessionsOf::Family("fperez".into()));
    store.flush().unwrap();
    assert_eq!(session_keys(&store), HashSet::from([[4; 32]]));

    // Expired sessions are pruned from the file at the next open.
    drop(store);
    let _reopened = open(state.path());
    let conn = rusqlite::Connection::open(state.path().join(DB_FILE)).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn the_viewing_log_answers_who_watched_between_two_times() {
    let state = TempDir::new("audit");
    let store = open(state.path());
    // Ana watched 100-200, Ben 150-400, Profe from 300 and still watches.
    let ana = store.audit_open(view(Some("fperez"), "Ana", "camera", 100));
    let ben = store.audit_open(view(Some("fdiaz"), "Ben, \"el grande\"", "sala-2", 150));
    let profe = store.audit_open(view(None, "Profe", "camera", 300));
    assert!(ana != ben && ben != profe, "ids are given at once, unique");
    store.audit_close(ana, 200);
    store.audit_close(ben, 400);
    store.flush().unwrap();

    let names = |since, until| -> Vec<String> {
        store
            .audit(since, until)
            .unwrap()
            .into_iter()
            .map(|r| r.name.unwrap())
            .collect()
    };
    assert_eq!(names(0, 1_000), ["Ana", "Ben, \"el grande\"", "Profe"]);
    assert_eq!(names(201, 299), ["Ben, \"el grande\""]);
    assert_eq!(
        names(200, 200),
        ["Ana", "Ben, \"el grande\""],
        "bounds included"
    );
    assert_eq!(
        names(500, 600),
        ["Profe"],
        "an open session overlaps any later time"
    );
    assert!(names(0, 99).is_empty());

    let records = store.audit(0, 1_000).unwrap();
    assert_eq!(records[2].end, None);
    assert_eq!(
        serde_json::to_value(&records[0]).unwrap(),
        json!({"family": "fperez", "name": "Ana", "role": "viewer", "stream": "camera",
               "start": 100, "end": 200, "address": "192.0.2.7", "family_name": null,
               "kind": "watch"})
    );
    let csv = audit_csv(&records);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "family,name,role,stream,start,end,address,family_name,kind,until,resumed_by"
    );
    assert_eq!(
        lines[2],
        "fdiaz,\"Ben, \"\"el grande\"\"\",viewer,sala-2,1970-01-01T00:02:30Z,1970-01-01T00:06:40Z,192.0.2.7,,watch,,"
    );
    assert_eq!(
        lines[3],
        ",Profe,staff,camera,1970-01-01T00:05:00Z,,192.0.2.7,,watch,,"
    );
    assert_eq!(lines.len(), 5, "three rows and the final line end");
}

#[test]
fn sessions_left_open_by_a_crash_are_closed_at_the_next_start_and_ids_stay_unique() {
    let state = TempDir::new("leftover");
    let start = unix_now() - 60;
    let first = {
        let store = open(state.path());
        let id = store.audit_open(view(None, "Profe", "camera", start));
        store.flush().unwrap();
        id
        // The daemon stops without closing it.
    };
    let before = unix_now();
    let store = open(state.path());
    let rows = store.audit(0, i64::MAX).unwrap();
    assert_eq!(rows.len(), 1);
    let end = rows[0].end.expect("closed at the restart");
    assert!(
        end >= before && end <= unix_now(),
        "ended at the restart: {end}"
    );

    let next = store.audit_open(view(None, "Profe", "camera", unix_now()));
    assert!(next.get() > first.get(), "a new row never takes an old id");
    store.flush().unwrap();
    assert_eq!(store.audit(0, i64::MAX).unwrap().len(), 2);
}

#[test]
fn old_viewing_sessions_are_pruned_on_request_at_open_and_by_the_store_itself() {
    let state = TempDir::new("prune");
    let now = unix_now();
    let store = open(state.path());
    for (name, ended_days_ago) in [("old", 40), ("edge", 31), ("recent", 10)] {
        let end = now - ended_days_ago * DAY;
        let id = store.audit_open(view(None, name, "camera", end - 600));
        store.audit_close(id, end);
    }
    store.audit_open(view(None, "still", "camera", now - 50 * DAY));
    store.flush().unwrap();
    assert_eq!(store.prune_audit(now - 35 * DAY).unwrap(), 1, "only `old`");
    drop(store);

    // At open, with the default 30 days: `edge` goes, `recent` and the open one stay
    // (the open one is closed by the restart).
    let names = |store: &Store| -> Vec<String> {
        store
            .audit(0, i64::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.name.unwrap())
            .collect()
    };
    assert_eq!(names(&open(state.path())), ["still", "recent"]);

    // Left alone, the store prunes by itself what ended too long ago.
    let settings = StoreSettings {
        audit_days: 30,
        prune_every: Duration::from_millis(50),
    };
    let store = Store::open(state.path(), settings).unwrap();
    let late = store.audit_open(view(None, "late", "camera", now - 40 * DAY));
    store.audit_close(late, now - 39 * DAY);
    let deadline = Instant::now() + WAIT;
    while names(&store) != ["still", "recent"] {
        assert!(Instant::now() < deadline, "not pruned: {:?}", names(&store));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chat_history_is_kept_per_room_trimmed_to_the_newest_and_deletable() {
    let state = TempDir::new("chat");
    let store = open(state.path());
    for id in 1..=5 {
        store.chat_append("camera", id, &format!("camera {id}"), 3);
    }
    store.chat_append("sala-2", 1, "sala 1", 3);
    store.chat_delete("camera", 4);
    store.flush().unwrap();
    assert_eq!(
        store.chat_history("camera", 10).unwrap(),
        [(3, "camera 3".to_owned()), (5, "camera 5".to_owned())],
        "the newest three, oldest first, minus the deleted one"
    );
    assert_eq!(
        store.chat_history("camera", 1).unwrap(),
        [(5, "camera 5".to_owned())]
    );
    assert_eq!(
        store.chat_history("sala-2", 10).unwrap(),
        [(1, "sala 1".to_owned())]
    );
    assert!(store.chat_history("sala-3", 10).unwrap().is_empty());
    drop(store);
    assert_eq!(
        open(state.path()).chat_history("camera", 10).unwrap().len(),
        2
    );
}

#[test]
fn opening_hours_set_by_the_admin_survive_a_restart_and_always_open_is_kept_too() {
    let state = TempDir::new("schedules");
    let hours = r#"{"timezone":"America/Bogota","open":[],"closed_dates":[]}"#;
    {
        let store = open(state.path());
        assert!(store.schedules().unwrap().is_empty());
        store
            .set_schedule("sala-1", Some(hours.to_owned()))
            .unwrap();
        store
            .set_schedule("camera", Some(hours.to_owned()))
            .unwrap();
        // A DELETE: always open, which must still win over the file after a restart.
        store.set_schedule("camera", None).unwrap();
    }
    let store = open(state.path());
    assert_eq!(
        store.schedules().unwrap(),
        [
            ("camera".to_owned(), None),
            ("sala-1".to_owned(), Some(hours.to_owned()))
        ]
    );
}

#[test]
fn the_database_files_are_private() {
    let state = TempDir::new("private");
    let store = open(state.path());
    store.chat_append("camera", 1, "hola", 10);
    store.flush().unwrap();
    for name in [DB_FILE, "kindercam.db-wal", "kindercam.db-shm"] {
        let mode = std::fs::metadata(state.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn a_store_in_memory_behaves_the_same_and_keeps_nothing() {
    let store = Store::in_memory(StoreSettings::default()).unwrap();
    assert_eq!(store.path(), None);
    store.create_family(&family("fperez", "c1")).unwrap();
    store.chat_append("camera", 1, "hola", 10);
    let id = store.audit_open(view(Some("fperez"), "Ana", "camera", 10));
    store.audit_close(id, 20);
    store.flush().unwrap();
    assert_eq!(store.families().unwrap().len(), 1);
    assert_eq!(store.chat_history("camera", 10).unwrap().len(), 1);
    assert_eq!(store.audit(0, 100).unwrap()[0].end, Some(20));
    let other = Store::in_memory(StoreSettings::default()).unwrap();
    assert!(other.families().unwrap().is_empty());
}

// ---- the JSON state files --------------------------------------------------------

#[test]
fn the_json_state_files_are_imported_once_and_kept_renamed() {
    let state = TempDir::new("json");
    let now = unix_now();
    let hex = |b: u8| format!("{b:02x}").repeat(32);
    // Exactly as src/auth/sessions.rs and src/ws/chat.rs write them.
    let sessions = json!([
        {"key": hex(1), "role": "viewer", "name": "Ana", "expires_unix": now + 3600, "code": hex(9)},
        {"key": hex(2), "role": "staff", "name": "Profe", "expires_unix": now + 7200, "code": hex(8)},
        {"key": hex(3), "role": "viewer", "name": "Caducada", "expires_unix": now - 10, "code": hex(9)},
    ]);
    let chat = json!([
        {"id": 7, "text": r##"{"type":"usermsg","id":7,"name":"Ana","message":"hola","color":"#3a86ff"}"##},
        {"id": 9, "text": r##"{"type":"usermsg","id":9,"name":"Profe","message":"buenos días","color":"#e63946","staff":true}"##},
    ]);
    state.write("sessions.json", &sessions.to_string());
    state.write("chat-history.json", &chat.to_string());

    let store = open(state.path());
    let mut imported = store.sessions().unwrap();
    imported.sort_by_key(|s| s.key);
    assert_eq!(
        imported,
        [
            StoredSession {
                key: [1; 32],
                role: "viewer".into(),
                name: "Ana".into(),
                family: None,
                code: [9; 32],
                expires: now + 3600,
            },
            StoredSession {
                key: [2; 32],
                role: "staff".into(),
                name: "Profe".into(),
                family: None,
                code: [8; 32],
                expires: now + 7200,
            },
        ]
    );
    let history = store.chat_history("camera", 50).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].0, 9);
    assert_eq!(history[1].1, chat[1]["text"].as_str().unwrap());
    for name in ["sessions.json", "chat-history.json"] {
        assert!(!state.path().join(name).exists(), "{name} was renamed");
        assert!(state.path().join(format!("{name}.migrated")).exists());
    }

    // Once: a later start does not bring back what was deleted since.
    store.delete_session([1; 32]);
    store.flush().unwrap();
    drop(store);
    assert_eq!(session_keys(&open(state.path())), HashSet::from([[2; 32]]));
}

#[test]
fn an_unreadable_json_file_is_logged_and_left_in_place() {
    let logs = logs();
    let state = TempDir::new("badjson");
    state.write("sessions.json", "{ not json");
    state.write(
        "chat-history.json",
        r##"[{"id": 1, "text": "{\"type\":\"usermsg\",\"id\":1,\"name\":\"Ana\",\"message\":\"hola\",\"color\":\"#fff\"}"}]"##,
    );
    let store = open(state.path());
    assert!(store.sessions().unwrap().is_empty());
    assert_eq!(
        store.chat_history("camera", 10).unwrap().len(),
        1,
        "the good one is imported"
    );
    assert!(state.path().join("sessions.json").exists(), "left in place");
    assert!(!state.path().join("sessions.json.migrated").exists());
    assert!(state.path().join("chat-history.json.migrated").exists());
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains(&state.path().join("sessions.json").display().to_string()))
        .unwrap_or_else(|| panic!("no log line names the file:\n{text}"));
    assert!(line.contains("not imported, left in place"), "{line}");
}

/// Logs in and chats on a running server, stops it, then opens the store on its
/// state directory: the daemon keeps its sessions and chat there, not in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_sessions_and_chat_in_the_database() {
    let state = TempDir::new("daemon-json");
    let dir = state.path().to_str().unwrap();
    let server = start_secured(&["--state-dir", dir]).await;
    let reply = http_request(
        server.http,
        "POST",
        "/login",
        &[],
        &format!("name=Ana&code={VIEWER_CODE}"),
    )
    .await;
    assert_eq!(reply.status, 303, "login: {}", reply.text());
    let cookie = reply
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();

    let mut request = server.ws_url("/chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("chat opens");
    send_json(&mut ws, &json!({"message": "¿a qué hora es la salida?"})).await;
    let posted = recv_json_until(&mut ws, "Ana's message", |v| v["type"] == "usermsg").await;
    drop(ws);
    server.stop().await;
    assert!(!state.path().join("sessions.json").exists());
    assert!(!state.path().join("chat-history.json").exists());

    let store = tokio::task::spawn_blocking({
        let dir = state.path().to_owned();
        move || open(&dir)
    })
    .await
    .unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert_eq!(sessions[0].key, key, "the session of the cookie");
    assert_eq!(
        (sessions[0].role.as_str(), sessions[0].name.as_str()),
        ("viewer", "Ana")
    );
    assert!(sessions[0].expires > unix_now());
    let history = store.chat_history("camera", 50).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, posted["id"].as_u64().unwrap());
    let kept: serde_json::Value = serde_json::from_str(&history[0].1).unwrap();
    assert_eq!(kept, posted, "the message exactly as clients received it");
}

// ---- full and read-only disks ------------------------------------------------------

/// A small tmpfs of our own, unmounted when dropped; `None` where mounting is not
/// allowed (not root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, options: &str) -> Option<Tmpfs> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kindercam-test-tmpfs-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root); src/store/tests.rs covers a full database with max_page_count");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system under `dir` with a file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_disk_fails_writes_with_a_logged_reason_and_they_succeed_again_once_there_is_room() {
    let logs = logs();
    let Some(disk) = Tmpfs::mount("full", "size=1m,mode=0700") else {
        return;
    };
    let store = open(&disk.0);
    store.create_family(&family("fperez", "c1")).unwrap();
    let filler = fill(&disk.0);

    // An acknowledged change says it failed, and why; nothing of it is applied.
    let mut big = family("fdiaz", "c2");
    big.name = "x".repeat(256 * 1024);
    assert_eq!(store.create_family(&big), Err(StoreError::Full));
    // Queued writes fail too, logged with the reason and the database.
    for id in 0..16 {
        store.chat_append("camera", id, &"y".repeat(32 * 1024), 100);
    }
    store.flush().unwrap();
    assert!(
        store.write_stats().failed >= 17,
        "{:?}",
        store.write_stats()
    );
    let text = logs.text();
    let db = disk.0.join(DB_FILE).display().to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains(&db) && l.contains("the disk is full")),
        "no error logged for {db}:\n{text}"
    );
    // Reading goes on: logins and the admin page still work.
    assert_eq!(store.families().unwrap().len(), 1);

    // Room again: the same writer carries on.
    std::fs::remove_file(filler).unwrap();
    store.create_family(&big).unwrap();
    store.chat_append("camera", 100, "hola", 100);
    store.flush().unwrap();
    assert_eq!(store.families().unwrap().len(), 2);
    assert_eq!(
        store.chat_history("camera", 100).unwrap(),
        [(100, "hola".to_owned())]
    );
    drop(store);
    assert_eq!(open(&disk.0).families().unwrap().len(), 2);
}

#[test]
fn a_read_only_state_directory_is_refused_at_open_and_memory_still_works() {
    let Some(disk) = Tmpfs::mount("ro", "size=1m,mode=0700") else {
        return;
    };
    // Empty and read-only: no database can be made.
    disk.remount("ro");
    let err = Store::open(&disk.0, StoreSettings::default()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
    assert!(err.to_string().contains(DB_FILE), "names the file: {err}");

    // A database that became read-only (the card was remounted after an error).
    disk.remount("rw");
    let store = open(&disk.0);
    store.create_family(&family("fperez", "c1")).unwrap();
    drop(store);
    disk.remount("ro");
    let err = Store::open(&disk.0, StoreSettings::default()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");

    // The daemon's fallback.
    let memory = Store::in_memory(StoreSettings::default()).unwrap();
    memory.create_family(&family("fperez", "c1")).unwrap();
}

/// Runs `command`, or `None` when this machine cannot start it: an ARM test binary
/// under qemu-user without binfmt_misc (scripts/test-cross says so, too).
fn output_or_skip(command: &mut Command) -> Option<std::process::Output> {
    match command.output() {
        Ok(output) => Some(output),
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            eprintln!("skipped: cannot start {command:?} here: {e}");
            None
        }
        Err(e) => panic!("cannot start {command:?}: {e}"),
    }
}

// ---- kill -9 -----------------------------------------------------------------------

const WRITER_CHILD: &str = "KINDERCAM_TEST_STORE_WRITER_CHILD";

/// Not a test by itself: `kill_9_mid_write_loses_no_acknowledged_write` runs this
/// binary again with only this function, and kills it.
#[test]
#[ignore = "the child process of kill_9_mid_write_loses_no_acknowledged_write"]
fn store_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_CHILD) else {
        return;
    };
    let store = open(Path::new(&dir));
    let first = store.families().unwrap().len();
    let mut out = std::io::stdout().lock();
    for n in first.. {
        // Queued writes around each acknowledged one: the kill lands among both.
        for j in 0..10 {
            let id = store.audit_open(view(Some("fx"), "Ana", "camera", unix_now()));
            store.audit_close(id, unix_now());
            store.chat_append("camera", (n * 10 + j) as u64, "hola", 100);
        }
        store
            .create_family(&family(&format!("f{n}"), &format!("code-{n}")))
            .expect("the child's write");
        writeln!(out, "acked f{n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_mid_write_loses_no_acknowledged_write() {
    let state = TempDir::new("kill9");
    let mut acked: Vec<String> = Vec::new();
    for kill_after in [30, 100, 250] {
        let spawned = Command::new(std::env::current_exe().unwrap())
            .args(["store_writer_child", "--exact", "--ignored", "--nocapture"])
            .env(WRITER_CHILD, state.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
                eprintln!("skipped: cannot start this test binary again here: {e}");
                return;
            }
            Err(e) => panic!("cannot start the writer child: {e}"),
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("acked ") {
                    let _ = tx.send(id.to_owned());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut this_round = 0;
        while this_round < kill_after {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(id) => {
                    acked.push(id);
                    this_round += 1;
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("the child stopped after {this_round} acknowledged writes");
                }
            }
        }
        // SIGKILL while it writes as fast as it can.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child died of the kill: {status}"
        );
        // Acknowledgements printed before the kill are still in the pipe.
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let conn = rusqlite::Connection::open(state.path().join(DB_FILE)).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(conn);
        let store = open(state.path());
        let kept: HashSet<String> = store
            .families()
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !kept.contains(*id)).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    }
}

// ---- backup ------------------------------------------------------------------------

#[test]
fn a_backup_taken_while_the_store_writes_is_a_consistent_copy() {
    let state = TempDir::new("backup");
    let copies = TempDir::new("backup-dest");
    let store = open(state.path());
    for n in 0..50 {
        store
            .create_family(&family(&format!("f{n}"), &format!("code-{n}")))
            .unwrap();
    }
    let acked = Arc::new(AtomicUsize::new(50));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        move || {
            let mut n = 50;
            while !stop.load(Ordering::Relaxed) {
                for j in 0..20 {
                    let id = store.audit_open(view(None, "Profe", "camera", unix_now()));
                    store.audit_close(id, unix_now());
                    store.chat_append("camera", n * 20 + j, "hola", 1_000_000);
                }
                store
                    .create_family(&family(&format!("f{n}"), &format!("code-{n}")))
                    .unwrap();
                acked.store(n as usize + 1, Ordering::Relaxed);
                n += 1;
            }
        }
    });

    let dest = copies.path().join("kindercam-backup.db");
    let mut last = 50;
    for _ in 0..3 {
        // The writer has moved on since the last copy.
        let deadline = Instant::now() + WAIT;
        while acked.load(Ordering::Relaxed) < last + 5 {
            assert!(Instant::now() < deadline, "the writer is stuck");
            std::thread::yield_now();
        }
        let before = acked.load(Ordering::Relaxed);
        let report = kindercam::store::backup(state.path(), &dest).unwrap();
        assert!(report.families as usize >= before, "{report}");
        assert!(report.families as usize > last, "{report}");
        last = report.families as usize;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!copies.path().join("kindercam-backup.db.tmp").exists());
        let copy = rusqlite::Connection::open(&dest).unwrap();
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let (families, chat): (i64, i64) = copy
            .query_row(
                "SELECT (SELECT count(*) FROM families), (SELECT count(*) FROM chat)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (families as u64, chat as u64),
            (report.families, report.chat)
        );
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "one self-contained file");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Restore, as documented: the copy becomes kindercam.db of a stopped daemon.
    let restored = TempDir::new("restored");
    std::fs::copy(&dest, restored.path().join(DB_FILE)).unwrap();
    let back = open(restored.path());
    assert_eq!(back.families().unwrap().len(), last);
    let ids: HashSet<String> = back.families().unwrap().into_iter().map(|f| f.id).collect();
    assert!((0..last).all(|n| ids.contains(&format!("f{n}"))));
}

#[test]
fn a_backup_of_a_stopped_daemon_leaves_its_files_usable_by_the_daemon() {
    use std::os::unix::fs::MetadataExt;
    let state = TempDir::new("backup-owner");
    let store = open(state.path());
    store.create_family(&family("fperez", "c1")).unwrap();
    drop(store);
    // The daemon's files belong to its (dynamic) user; the backup runs as root.
    let db = state.path().join(DB_FILE);
    let daemon = (4_242_424, 4_242_424);
    if std::os::unix::fs::chown(&db, Some(daemon.0), Some(daemon.1)).is_err() {
        eprintln!("skipped: cannot give a file away here (needs root)");
        return;
    }
    for sidecar in ["kindercam.db-wal", "kindercam.db-shm"] {
        assert!(
            !state.path().join(sidecar).exists(),
            "a clean stop removes {sidecar}"
        );
    }
    // Reading a stopped daemon's database makes its -wal and -shm files; SQLite,
    // run as root, gives them the database's owner, or the daemon could not open
    // them at its next start.
    kindercam::store::backup(state.path(), &state.path().join("copia.db")).unwrap();
    for sidecar in ["kindercam.db-wal", "kindercam.db-shm"] {
        if let Ok(meta) = std::fs::metadata(state.path().join(sidecar)) {
            assert_eq!(
                (meta.uid(), meta.gid()),
                daemon,
                "{sidecar} is the daemon's"
            );
        }
    }
}

#[test]
fn kindercam_backup_copies_the_database_of_the_state_directory() {
    let state = TempDir::new("backup-cli");
    let store = open(state.path());
    store.create_family(&family("fperez", "c1")).unwrap();
    store.chat_append("camera", 1, "hola", 10);
    store.flush().unwrap();
    let dest = state.path().join("copia.db");
    let kindercam = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kindercam"));
        command.env_clear();
        // Under qemu-user (binfmt), the target's loader is found through this.
        if let Some(prefix) = std::env::var_os("QEMU_LD_PREFIX") {
            command.env("QEMU_LD_PREFIX", prefix);
        }
        command
    };
    // While the store is open, as with the daemon running.
    let Some(out) = output_or_skip(kindercam().args([
        "backup",
        dest.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ])) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 families") && stdout.contains("1 chat messages"),
        "{stdout}"
    );
    let copy = rusqlite::Connection::open(&dest).unwrap();
    let name: String = copy
        .query_row("SELECT name FROM families", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "Familia fperez");

    // The state directory comes from the environment as for the daemon, too.
    let out = kindercam()
        .args(["backup", dest.to_str().unwrap()])
        .env("KINDERCAM_STATE_DIR", state.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("elsewhere/kindercam.db"), "{stderr}");

    let out = kindercam().arg("backup").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: kindercam backup FILE"));
}
