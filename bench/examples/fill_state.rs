//! Fills a kindercam state directory the way a large centre's looks after a month,
//! for `kindercam-bench login`: 200 families (each with its own code), 30 days of
//! viewing log (200 families x 20 viewings a day = 120,000 rows) and 3 saved login
//! sessions per family (600). It writes through the kindercam library's own store
//! (`kindercam::store::Store`), so the database has exactly the schema, indexes and
//! rows the daemon would have written itself.
//!
//!     fill_state OUT_DIR [--families 200] [--days 30] [--views-per-day 20] [--sessions-per-family 3]
//!
//! OUT_DIR/state/ is the state directory to copy before starting the daemon;
//! OUT_DIR/family-codes.txt has one family code a line, for the logins.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use kindercam::auth::families::code_hash;
use kindercam::store::{unix_now, Family, Store, StoreSettings, StoredSession, ViewStart, DB_FILE};

struct Options {
    out: PathBuf,
    families: usize,
    days: usize,
    views_per_day: usize,
    sessions_per_family: usize,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        out: PathBuf::new(),
        families: 200,
        days: 30,
        views_per_day: 20,
        sessions_per_family: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))
        };
        match arg.as_str() {
            "--families" => o.families = number(&arg)?,
            "--days" => o.days = number(&arg)?,
            "--views-per-day" => o.views_per_day = number(&arg)?,
            "--sessions-per-family" => o.sessions_per_family = number(&arg)?,
            a if a.starts_with("--") => bail!("unknown flag {a}"),
            _ if o.out.as_os_str().is_empty() => o.out = arg.into(),
            _ => bail!("one output directory only"),
        }
    }
    if o.out.as_os_str().is_empty() {
        bail!("usage: fill_state OUT_DIR [--families N] [--days N] [--views-per-day N] [--sessions-per-family N]");
    }
    // Viewings are spread over 20 hours of each day, one start per hour at most.
    anyhow::ensure!(
        (1..=20).contains(&o.views_per_day),
        "--views-per-day must be 1-20"
    );
    anyhow::ensure!(
        (1..=30).contains(&o.days),
        "--days must be 1-30 (the daemon prunes what is older)"
    );
    Ok(o)
}

/// A family code as the admin API makes them: letters and digits, long enough.
fn family_code(n: usize) -> String {
    format!("bench-family-{n:04}-7kq2m9xw")
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let state = o.out.join("state");
    if state.exists() {
        bail!("{} exists already; remove it first", state.display());
    }
    std::fs::create_dir_all(&state)?;
    let store = Store::open(&state, StoreSettings::default())
        .map_err(|e| anyhow::anyhow!("cannot open the store in {}: {e}", state.display()))?;
    let now = unix_now();
    let t = Instant::now();

    let mut codes = String::new();
    let mut families = Vec::with_capacity(o.families);
    for n in 0..o.families {
        let code = family_code(n);
        let family = Family {
            id: Family::new_id()?,
            name: format!("Familia número {n}"),
            rooms: vec!["camera".into(), format!("sala-{}", n % 6)],
            max_devices: 3,
            created: now - 60 * 86_400,
            last_seen: Some(now - 3_600),
            code_hash: code_hash(&code),
        };
        store
            .create_family(&family)
            .map_err(|e| anyhow::anyhow!("create_family: {e}"))?;
        codes.push_str(&code);
        codes.push('\n');
        families.push(family);
    }

    // Sessions made with each family's current code: the daemon keeps them at start.
    for (n, family) in families.iter().enumerate() {
        for s in 0..o.sessions_per_family {
            // A session's key is the SHA-256 of its cookie's token; code_hash is that
            // SHA-256, and these tokens are never presented.
            let key = code_hash(&format!("bench-session-{n}-{s}"));
            store.put_session(StoredSession {
                key,
                role: "viewer".into(),
                name: format!("Padre {n}-{s}"),
                family: Some(family.id.clone()),
                code: family.code_hash,
                expires: now + 6 * 86_400,
            });
        }
    }

    // The log: day d (0 = yesterday) holds each family's viewings, one an hour from
    // 01:00 on, about 10 minutes each, so every row is within the kept 30 days.
    let mut rows = 0usize;
    for d in 0..o.days {
        let day_start = now - (d as i64 + 1) * 86_400 + 3_600;
        for (n, family) in families.iter().enumerate() {
            for v in 0..o.views_per_day {
                let start = day_start + (v * 3_600 + n * 13) as i64;
                let id = store.audit_open(ViewStart {
                    family: Some(family.id.clone()),
                    family_name: Some(family.name.clone()),
                    name: Some(format!("Padre {n}-{}", v % o.sessions_per_family.max(1))),
                    role: "viewer".into(),
                    stream: if v % 2 == 0 {
                        "camera".into()
                    } else {
                        family.rooms[1].clone()
                    },
                    start,
                    address: format!("192.0.2.{}", n % 250 + 1),
                });
                store.audit_close(id, start + 600);
                rows += 1;
                // The writer's queue holds 4096 writes: let it drain now and then.
                if rows % 1000 == 0 {
                    store.flush().map_err(|e| anyhow::anyhow!("flush: {e}"))?;
                }
            }
        }
    }
    store.flush().map_err(|e| anyhow::anyhow!("flush: {e}"))?;
    let dropped = store.write_stats().dropped;
    anyhow::ensure!(dropped == 0, "the store dropped {dropped} queued writes");
    let written = store
        .audit(now - 31 * 86_400, now)
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?
        .len();
    anyhow::ensure!(
        written == rows,
        "the viewing log holds {written} rows, not {rows}"
    );
    store.close();
    drop(store);
    std::fs::write(o.out.join("family-codes.txt"), codes)?;
    let size = std::fs::metadata(state.join(DB_FILE)).map_or(0, |m| m.len());
    eprintln!(
        "fill_state: {} families, {} sessions, {rows} viewing-log rows over {} days; \
         {DB_FILE} {:.1} MiB; {:.1} s",
        o.families,
        o.families * o.sessions_per_family,
        o.days,
        size as f64 / (1024.0 * 1024.0),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
