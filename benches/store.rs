//! What the store costs at the size of a large centre: 200 families and 30 days of
//! viewing log (200 families x 20 viewing sessions a day x 30 days = 120,000 rows),
//! 600 sessions and a full chat history. Figures per call, median and 99th
//! percentile, for what the daemon does on a login or a handshake (`families()`,
//! `family_by_code`, `sessions()`), on a viewer's start and end (`audit_open` +
//! `audit_close`, the caller's side: queueing, no I/O), on an admin change (an
//! acknowledged `create_family`: one transaction, one fsync) and on an audit report.
//!
//!     cargo bench --bench store      # ~1 minute, most of it filling the log
//!
//! The database lives in the system's temporary directory; acknowledged writes
//! wait for an fsync of that disk, so they say as much about the disk as about
//! the store (an SD card is slower than a server's SSD).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kindercam::store::{
    audit_csv, unix_now, Family, Store, StoreSettings, StoredSession, ViewStart, DB_FILE,
};

const FAMILIES: usize = 200;
const VIEWS_PER_FAMILY_PER_DAY: usize = 20;

fn code_hash(n: usize) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&(n as u64).to_le_bytes());
    hash[31] = 0xa5;
    hash
}

fn family(n: usize) -> Family {
    Family {
        id: format!("f{n:010}"),
        name: format!("Familia número {n}"),
        rooms: vec!["camera".into(), format!("sala-{}", n % 6)],
        max_devices: 3,
        code_hash: code_hash(n),
        created: unix_now(),
        last_seen: None,
    }
}

/// Median and 99th percentile of `runs` timed calls of `f`.
fn timed(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[(runs * 99 / 100).min(runs - 1)])
}

fn row(what: &str, (median, p99): (Duration, Duration)) {
    println!(
        "{what:<52} {:>12.1} {:>12.1}",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let days = if quick { 1 } else { 30 };
    let dir = std::env::temp_dir().join(format!("kindercam-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, StoreSettings::default()).expect("store opens");

    let t = Instant::now();
    for n in 0..FAMILIES {
        store.create_family(&family(n)).expect("create");
    }
    let setup_families = t.elapsed();
    let now = unix_now();
    for n in 0..600 {
        store.put_session(StoredSession {
            key: code_hash(100_000 + n),
            role: "viewer".into(),
            name: format!("Padre {n}"),
            family: Some(family(n % FAMILIES).id),
            code: code_hash(n % FAMILIES),
            expires: now + 7 * 24 * 3600,
        });
    }
    for id in 0..50 {
        store.chat_append("camera", id, &format!("{{\"type\":\"usermsg\",\"id\":{id},\"name\":\"Ana\",\"message\":\"hola a todos, ¿qué tal el día?\",\"color\":\"#3a86ff\"}}"), 50);
    }
    // The log: each family watches 20 times a day for about 10 minutes, spread over the day.
    let t = Instant::now();
    let mut rows = 0usize;
    for day in 0..days {
        for n in 0..FAMILIES {
            for v in 0..VIEWS_PER_FAMILY_PER_DAY {
                let start = now - (days - day) as i64 * 86_400 + (v * 3_600 + n * 13) as i64;
                let id = store.audit_open(ViewStart {
                    family_name: None,
                    family: Some(family(n).id),
                    name: Some(format!("Padre {n}")),
                    role: "viewer".into(),
                    stream: format!("sala-{}", n % 6),
                    start,
                    address: format!("192.0.2.{}", n % 250),
                });
                store.audit_close(id, start + 600);
                rows += 1;
                // Stay within the queue (4096 writes), as a real day's pace would.
                if rows % 1000 == 0 {
                    store.flush().expect("flush");
                }
            }
        }
    }
    store.flush().expect("flush");
    let fill = t.elapsed();
    let dropped = store.write_stats().dropped;
    drop(store);
    let size = std::fs::metadata(dir.join(DB_FILE)).map_or(0, |m| m.len());

    let t = Instant::now();
    let store = Store::open(&dir, StoreSettings::default()).expect("store reopens");
    let reopen = t.elapsed();

    println!(
        "kindercam store bench: {FAMILIES} families, {rows} viewing-log rows ({days} days), \
         600 sessions; database {:.1} MiB in {}",
        size as f64 / (1024.0 * 1024.0),
        dir.display()
    );
    println!(
        "setup: {FAMILIES} acknowledged creates in {:.0} ms; log filled through the queue in {:.0} ms \
         ({:.0} rows/s, {dropped} dropped); reopen (migrate, tidy, prune) {:.1} ms",
        setup_families.as_secs_f64() * 1e3,
        fill.as_secs_f64() * 1e3,
        rows as f64 / fill.as_secs_f64(),
        reopen.as_secs_f64() * 1e3
    );
    println!("{:<52} {:>12} {:>12}", "per call", "median us", "p99 us");
    let runs = if quick { 20 } else { 500 };
    row(
        "families() (200 rows)",
        timed(runs, || {
            black_box(store.families().unwrap());
        }),
    );
    let mut n = 0;
    row(
        "family_by_code (a login)",
        timed(runs, || {
            n = (n + 1) % FAMILIES;
            black_box(store.family_by_code(&code_hash(n)).unwrap());
        }),
    );
    row(
        "sessions() (600 rows, the start-up load)",
        timed(runs.min(100), || {
            black_box(store.sessions().unwrap());
        }),
    );
    let mut next = FAMILIES;
    row(
        "create_family, acknowledged (commit + fsync)",
        timed(if quick { 5 } else { 100 }, || {
            store.create_family(&family(next)).unwrap();
            next += 1;
        }),
    );
    let start = unix_now();
    row(
        "audit_open + audit_close, caller's side",
        timed(if quick { 100 } else { 2000 }, || {
            let id = store.audit_open(ViewStart {
                family_name: None,
                family: Some("f0000000001".into()),
                name: Some("Ana".into()),
                role: "viewer".into(),
                stream: "sala-1".into(),
                start,
                address: "192.0.2.7".into(),
            });
            store.audit_close(id, start + 1);
        }),
    );
    let t = Instant::now();
    store.flush().unwrap();
    println!(
        "  (then the writer committed them within {:.1} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    row(
        "touch_family (a visit), caller's side",
        timed(runs, || store.touch_family("f0000000001", unix_now())),
    );
    let report_runs = if quick { 3 } else { 20 };
    row(
        "audit(last 24 h)",
        timed(report_runs, || {
            black_box(store.audit(now - 86_400, now).unwrap());
        }),
    );
    let month = store.audit(now - 31 * 86_400, now).unwrap();
    row(
        &format!("audit(whole log, {days} days) ({} rows)", month.len()),
        timed(report_runs, || {
            black_box(store.audit(now - 31 * 86_400, now).unwrap());
        }),
    );
    row(
        "audit_csv(whole log)",
        timed(report_runs, || {
            black_box(audit_csv(&month));
        }),
    );
    drop(store);
    let backup: PathBuf = dir.join("backup.db");
    let t = Instant::now();
    let report = kindercam::store::backup(&dir, &backup).expect("backup");
    println!(
        "backup: {:.0} ms for {:.1} MiB",
        t.elapsed().as_secs_f64() * 1e3,
        report.bytes as f64 / (1024.0 * 1024.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
