//! How the database gets its shape and its first data: versioned schema migrations
//! (`PRAGMA user_version` is the number applied), and the one-time import of the
//! JSON state files that kindercam kept before it had a database.
//!
//! Adding a migration is one line: append its SQL to [`MIGRATIONS`]. Migration N
//! (1-based) runs once, in a transaction of its own together with setting
//! `user_version` to N, so a crash mid-migration leaves the previous version. Never
//! edit a migration that has shipped: databases in the field already ran it.

use std::fs;
use std::io;
use std::path::Path;

use rusqlite::{params, Connection, TransactionBehavior};
use serde::de::DeserializeOwned;

use super::StoreError;

/// Migration 1: families, login sessions, the viewing log, chat history and meta.
const SCHEMA_1: &str = r#"
CREATE TABLE families (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    rooms       TEXT NOT NULL,            -- JSON array of stream names
    max_devices INTEGER NOT NULL CHECK (max_devices >= 1),
    code_hash   BLOB NOT NULL UNIQUE CHECK (length(code_hash) = 32),  -- SHA-256 of the code
    created     INTEGER NOT NULL,         -- UNIX seconds, like every time here
    last_seen   INTEGER
) STRICT;

CREATE TABLE sessions (
    key     BLOB PRIMARY KEY NOT NULL CHECK (length(key) = 32),  -- SHA-256 of the token
    role    TEXT NOT NULL CHECK (role IN ('viewer', 'staff', 'admin')),
    name    TEXT NOT NULL,
    family  TEXT REFERENCES families (id) ON DELETE CASCADE,
    code    BLOB NOT NULL CHECK (length(code) = 32),  -- fingerprint of the code used
    expires INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_family ON sessions (family);

-- The viewing log. `family` is no foreign key: the log outlives a deleted family.
CREATE TABLE viewing (
    id      INTEGER PRIMARY KEY,
    family  TEXT,
    name    TEXT,
    role    TEXT NOT NULL,
    stream  TEXT NOT NULL,
    start   INTEGER NOT NULL,
    "end"   INTEGER,                      -- NULL while the viewer watches
    address TEXT NOT NULL
) STRICT;
CREATE INDEX viewing_start ON viewing (start);
CREATE INDEX viewing_end ON viewing ("end");     -- reports on recent days, pruning

CREATE TABLE chat (
    room TEXT NOT NULL,
    id   INTEGER NOT NULL,
    text TEXT NOT NULL,                   -- the message as clients received it
    PRIMARY KEY (room, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Every migration, in order; entry N-1 is migration N.
pub(super) const MIGRATIONS: &[&str] = &[
    SCHEMA_1,
    FAMILY_NAMES_2,
    STREAM_MASKS_3,
    SCHEDULES_4,
    PAUSES_5,
    LINK_TOKENS_6,
    VIEWING_NODES_7,
];

/// In a cluster every node's viewing log holds every node's rows (see
/// `cluster::audit`): a row another node logged names that node and its id
/// there, so the same row heard twice is one row. `node` is NULL for this
/// node's own rows.
const VIEWING_NODES_7: &str = r#"
ALTER TABLE viewing ADD COLUMN node TEXT;
ALTER TABLE viewing ADD COLUMN origin_id INTEGER;
CREATE UNIQUE INDEX viewing_origin ON viewing (node, origin_id) WHERE node IS NOT NULL;
"#;

/// The viewing log keeps the family's name as it was, so a report still says who
/// watched after the family is removed.
const FAMILY_NAMES_2: &str = "ALTER TABLE viewing ADD COLUMN family_name TEXT;";

/// Privacy masks set over the admin API, which win over the config file's. A row
/// with `[]` is kept: it says the director removed the file's masks.
const STREAM_MASKS_3: &str = r#"
CREATE TABLE stream_masks (
    stream  TEXT PRIMARY KEY NOT NULL,
    masks   TEXT NOT NULL,                -- JSON array of {x, y, w, h}, fractions of the frame
    updated INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Opening hours set by the admin, per room: the schedule as its JSON, or NULL for
/// "always open" (a DELETE). A row wins over the config file's schedule.
const SCHEDULES_4: &str = "
CREATE TABLE schedules (
    stream   TEXT PRIMARY KEY NOT NULL,
    schedule TEXT                         -- JSON; NULL: always open
) STRICT, WITHOUT ROWID;
";

/// A teacher's pauses go into the viewing log too: who paused which room, from
/// when (`start`) until it resumed (`end`, NULL while it lasts), until when it was
/// set to last (`until`) and, when someone resumed it early, who (`resumed_by`).
/// An open pause row is also how a pause outlives a restart.
const PAUSES_5: &str = r#"
ALTER TABLE viewing ADD COLUMN kind TEXT NOT NULL DEFAULT 'watch' CHECK (kind IN ('watch', 'pause'));
ALTER TABLE viewing ADD COLUMN until INTEGER;
ALTER TABLE viewing ADD COLUMN resumed_by TEXT;
CREATE INDEX viewing_open_pauses ON viewing (stream) WHERE kind = 'pause' AND "end" IS NULL;
"#;

/// Link tokens (src/auth/tokens.rs): only the SHA-256 of each token is kept. The
/// viewing log learns a third kind of row, `token`: a viewing through a link
/// token, named by the token's name. SQLite cannot change a CHECK in place, so
/// the log's table is rebuilt with the same columns, rows and indexes.
const LINK_TOKENS_6: &str = r#"
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    rooms      TEXT NOT NULL,             -- JSON array of stream names
    scope      TEXT NOT NULL CHECK (scope IN ('view', 'metrics', 'push')),
    token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),  -- SHA-256 of the token
    created    INTEGER NOT NULL,
    last_used  INTEGER
) STRICT;

CREATE TABLE viewing_6 (
    id          INTEGER PRIMARY KEY,
    family      TEXT,
    name        TEXT,
    role        TEXT NOT NULL,
    stream      TEXT NOT NULL,
    start       INTEGER NOT NULL,
    "end"       INTEGER,
    address     TEXT NOT NULL,
    family_name TEXT,
    kind        TEXT NOT NULL DEFAULT 'watch' CHECK (kind IN ('watch', 'pause', 'token')),
    until       INTEGER,
    resumed_by  TEXT
) STRICT;
INSERT INTO viewing_6 (id, family, name, role, stream, start, "end", address, family_name, kind, until, resumed_by)
    SELECT id, family, name, role, stream, start, "end", address, family_name, kind, until, resumed_by FROM viewing;
DROP TABLE viewing;
ALTER TABLE viewing_6 RENAME TO viewing;
CREATE INDEX viewing_start ON viewing (start);
CREATE INDEX viewing_end ON viewing ("end");
CREATE INDEX viewing_open_pauses ON viewing (stream) WHERE kind = 'pause' AND "end" IS NULL;
"#;

/// Brings the database up to `migrations.len()`. Refuses a database from a newer
/// kindercam (a downgrade): its schema is unknown here.
pub(super) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = migrations.len();
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > known {
        return Err(StoreError::Failed(format!(
            "the database has schema version {current}, from a newer kindercam \
             (this one knows up to {known}); restore a backup or upgrade"
        )));
    }
    for (index, sql) in migrations.iter().enumerate().skip(current) {
        let version = index + 1;
        let applied = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(version).unwrap_or(i64::MAX),
            )?;
            tx.commit()
        })();
        applied.map_err(|e| match StoreError::from(e) {
            StoreError::Failed(why) => {
                StoreError::Failed(format!("schema migration {version}: {why}"))
            }
            other => other,
        })?;
        if current > 0 {
            tracing::info!(version, "database schema upgraded");
        }
    }
    Ok(())
}

/// Login sessions before the database: `[{key, role, name, expires_unix, code}]`,
/// hex SHA-256s (src/auth/sessions.rs `Stored`).
pub(super) const LEGACY_SESSIONS: &str = "sessions.json";
/// The chat's history before the database: `[{id, text}]` (src/ws/chat.rs `Saved`).
pub(super) const LEGACY_CHAT: &str = "chat-history.json";
/// There was one chat then, the `camera` stream's.
const LEGACY_CHAT_ROOM: &str = "camera";

#[derive(serde::Deserialize)]
struct LegacySession {
    key: String,
    role: String,
    name: String,
    expires_unix: u64,
    code: String,
}

#[derive(serde::Deserialize)]
struct LegacyMessage {
    id: u64,
    text: String,
}

/// Imports the JSON state files, if any, in one transaction, then renames each to
/// `<name>.migrated` (kept, never deleted). Expired sessions are left out. A file
/// that cannot be read or parsed is logged and left in place. Importing twice (a
/// rename failed) changes nothing: keys and message ids are unique.
pub(super) fn import_json(
    conn: &mut Connection,
    state_dir: &Path,
    now: i64,
) -> Result<(), StoreError> {
    let sessions_file = state_dir.join(LEGACY_SESSIONS);
    let chat_file = state_dir.join(LEGACY_CHAT);
    let sessions: Option<Vec<LegacySession>> = read_legacy(&sessions_file);
    let chat: Option<Vec<LegacyMessage>> = read_legacy(&chat_file);
    if sessions.is_none() && chat.is_none() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut imported_sessions = 0;
    for s in sessions.iter().flatten() {
        let (Some(key), Some(code)) = (unhex(&s.key), unhex(&s.code)) else {
            continue;
        };
        let Ok(expires) = i64::try_from(s.expires_unix) else {
            continue;
        };
        if expires <= now || !matches!(s.role.as_str(), "viewer" | "staff" | "admin") {
            continue;
        }
        tx.execute(
            "INSERT OR REPLACE INTO sessions (key, role, name, family, code, expires)
             VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
            params![key, s.role, s.name, code, expires],
        )?;
        imported_sessions += 1;
    }
    let mut imported_messages = 0;
    for m in chat.iter().flatten() {
        let Ok(id) = super::sqlite::int(m.id) else {
            continue;
        };
        imported_messages += tx.execute(
            "INSERT OR IGNORE INTO chat (room, id, text) VALUES (?1, ?2, ?3)",
            params![LEGACY_CHAT_ROOM, id, m.text],
        )?;
    }
    tx.commit()?;
    tracing::info!(
        sessions = imported_sessions,
        chat_messages = imported_messages,
        "imported the JSON state files into the database"
    );
    for (file, imported) in [
        (sessions_file, sessions.is_some()),
        (chat_file, chat.is_some()),
    ] {
        if imported {
            let mut kept = file.clone().into_os_string();
            kept.push(".migrated");
            if let Err(e) = fs::rename(&file, &kept) {
                tracing::warn!(file = %file.display(), error = %e, "imported, but cannot rename it; it will be imported again (harmlessly) at the next start");
            }
        }
    }
    Ok(())
}

/// The parsed file, or `None` when it is absent or unusable (logged).
fn read_legacy<T: DeserializeOwned>(file: &Path) -> Option<T> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read this state file; not imported, left in place");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "this state file is not in the expected format; not imported, left in place");
            None
        }
    }
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a later issue adds as migration 2 (masks and schedules, say).
    const TEST_2: &str = "ALTER TABLE families ADD COLUMN note TEXT NOT NULL DEFAULT '';
                          CREATE TABLE masks (stream TEXT PRIMARY KEY NOT NULL, shape TEXT NOT NULL) STRICT;";

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn an_old_database_is_upgraded_by_a_later_migration_and_keeps_its_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &[SCHEMA_1]).unwrap();
        assert_eq!(version(&conn), 1);
        conn.execute(
            "INSERT INTO families VALUES ('fabc', 'Pérez', '[\"camera\"]', 3, ?1, 10, NULL)",
            [[1u8; 32]],
        )
        .unwrap();

        migrate(&mut conn, &[SCHEMA_1, TEST_2]).unwrap();
        assert_eq!(version(&conn), 2);
        let (name, note): (String, String) = conn
            .query_row(
                "SELECT name, note FROM families WHERE id = 'fabc'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), note.as_str()), ("Pérez", ""));
        conn.execute("INSERT INTO masks VALUES ('camera', '[]')", [])
            .unwrap();
        // Running again applies nothing twice.
        migrate(&mut conn, &[SCHEMA_1, TEST_2]).unwrap();
        assert_eq!(version(&conn), 2);
    }

    /// The shipped migration 2 keeps family names in the viewing log; rows from
    /// before it keep theirs empty.
    #[test]
    fn the_viewing_log_gains_family_names_and_keeps_older_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &[SCHEMA_1]).unwrap();
        conn.execute(
            r#"INSERT INTO viewing (id, family, name, role, stream, start, "end", address)
               VALUES (1, 'fabc', 'Ana', 'viewer', 'camera', 10, 20, '10.0.0.1')"#,
            [],
        )
        .unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        let (name, family_name): (String, Option<String>) = conn
            .query_row(
                "SELECT name, family_name FROM viewing WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), family_name), ("Ana", None));
    }

    /// Migration 6 rebuilds the viewing log to let it hold token rows: every
    /// older row, watch or pause, comes through whole, and its indexes are back.
    #[test]
    fn the_viewing_log_rebuilt_for_tokens_keeps_every_row_and_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS[..5]).unwrap();
        conn.execute_batch(
            r#"INSERT INTO viewing (id, family, name, role, stream, start, "end", address, family_name)
                   VALUES (1, 'fabc', 'Ana', 'viewer', 'camera', 10, 20, '10.0.0.1', 'Pérez');
               INSERT INTO viewing (id, kind, name, role, stream, start, "end", until, address)
                   VALUES (2, 'pause', 'Eva', 'staff', 'hall', 30, NULL, 90, '10.0.0.2');"#,
        )
        .unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        let rows: Vec<(i64, String, Option<i64>, Option<String>)> = conn
            .prepare(r#"SELECT id, kind, until, family_name FROM viewing ORDER BY id"#)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "watch".to_owned(), None, Some("Pérez".to_owned())),
                (2, "pause".to_owned(), Some(90), None)
            ]
        );
        conn.execute(
            r#"INSERT INTO viewing (id, kind, name, role, stream, start, address)
               VALUES (3, 'token', 'Home Assistant', 'viewer', 'camera', 40, '10.0.0.3')"#,
            [],
        )
        .expect("a token row is allowed now");
        assert!(conn
            .execute(
                r#"INSERT INTO viewing (id, kind, role, stream, start, address)
                   VALUES (4, 'other', 'viewer', 'camera', 40, '-')"#,
                [],
            )
            .is_err());
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'viewing' \
                 AND name IN ('viewing_start', 'viewing_end', 'viewing_open_pauses')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 3);
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version_whole() {
        let mut conn = Connection::open_in_memory().unwrap();
        let broken = "CREATE TABLE half (x INTEGER); INSERT INTO nowhere VALUES (1);";
        let err = migrate(&mut conn, &[SCHEMA_1, broken]).unwrap_err();
        assert!(err.to_string().contains("schema migration 2"), "{err}");
        assert_eq!(version(&conn), 1);
        let half: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(half, 0, "nothing of migration 2 stays");
    }

    #[test]
    fn a_database_from_a_newer_kindercam_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &[SCHEMA_1, TEST_2]).unwrap();
        let err = migrate(&mut conn, &[SCHEMA_1]).unwrap_err();
        assert!(err.to_string().contains("newer kindercam"), "{err}");
    }
}
