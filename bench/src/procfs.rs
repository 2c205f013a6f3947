//! Reads the figures the benchmark reports straight from /proc: a process's CPU
//! time (utime + stime, in clock ticks), its VmRSS / VmHWM, the machine-wide CPU
//! counters (to see contention from anything else running), and raises the
//! open-file limit so 500 viewers fit.

use std::fs;

use anyhow::Context;

/// CPU time a process has used so far, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    /// Seconds of CPU spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTicks) -> (f64, f64) {
        let hz = clock_ticks_per_second();
        (
            self.user.saturating_sub(earlier.user) as f64 / hz,
            self.system.saturating_sub(earlier.system) as f64 / hz,
        )
    }
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// `pid` is a number or "self".
pub fn cpu(pid: &str) -> anyhow::Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let rest = &text[text.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .context("short stat line")?
            .parse()
            .context("bad stat field")
    };
    Ok(CpuTicks {
        user: field(14)?,
        system: field(15)?,
    })
}

/// A `Vm*` or `Threads` line of /proc/PID/status, in its own unit (kB for Vm*).
pub fn status_field(pid: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Machine-wide CPU counters: (busy, total) ticks over all cores.
pub fn machine_cpu() -> anyhow::Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(v.len() == 8, "short cpu line in /proc/stat");
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Ok((total - idle, total))
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
/// The daemon inherits it too.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Nanoseconds on CPU summed over a process's live threads (schedstat): a
/// fine-grained cross-check of the tick-based utime + stime. Threads that exit
/// take their time with them, so this can only read low, never high.
pub fn threads_runtime_ns(pid: &str) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Nanoseconds on CPU of a process's live threads, summed by thread name
/// (`/proc/PID/task/TID/comm`): which part of the daemon did the work.
pub fn threads_runtime_ns_by_name(pid: &str) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Some(ns) = fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let name = fs::read_to_string(task.path().join("comm"))
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        *by_name.entry(name).or_insert(0) += ns;
    }
    by_name
}
