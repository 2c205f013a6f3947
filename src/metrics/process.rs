//! The standard `process_*` metrics (CPU time, memory, file descriptors, start
//! time), read from `/proc/self` at each scrape: prometheus-client has no
//! process collector of its own. A figure that cannot be read is left out of
//! that scrape rather than reported wrong.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub struct ProcessCollector {
    /// Clock ticks per second (`/proc/self/stat` counts CPU time in them).
    ticks_per_second: f64,
    page_size: u64,
    /// The process's start, in seconds since the epoch: fixed, read once.
    start_time: Option<f64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Since boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parses `/proc/self/stat`; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields from 3 (state) on; `field(n)` is proc(5)'s field number n.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time (`btime`) from `/proc/stat`, in seconds since the epoch.
/// Resident memory: from `stat`, or from `/proc/self/status`'s `VmRSS` where
/// `stat` says 0 (qemu-user, which runs the Pi builds' tests, emulates `stat`
/// with a zero there).
fn resident_bytes(stat: &Stat, page_size: u64) -> u64 {
    if stat.resident_pages > 0 {
        return stat.resident_pages * page_size;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let ticks_per_second = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
        let start_time = (|| {
            let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
            let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
            Some(boot as f64 + stat.start_ticks as f64 / ticks_per_second)
        })();
        ProcessCollector {
            ticks_per_second,
            page_size: sysconf(libc::_SC_PAGESIZE).unwrap_or(4096),
            start_time,
        }
    }
}

/// Open file descriptors: the entries of `/proc/self/fd` (the directory handle
/// that reads them is one of them, and is not counted).
fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // rlim_t is 32 bits wide on 32-bit ARM.
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     unit: Option<Unit>,
                     value: f64|
         -> Result<(), std::fmt::Error> {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                metric.metric_type(),
            )?)
        };
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            let cpu = ConstCounter::new(stat.cpu_ticks as f64 / self.ticks_per_second);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
            let resident = resident_bytes(&stat, self.page_size) as f64;
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                resident,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                stat.virtual_bytes as f64,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                None,
                n as f64,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The most file descriptors the process may open",
                None,
                n as f64,
            )?;
        }
        if let Some(start) = self.start_time {
            gauge(
                &mut encoder,
                "process_start_time",
                "When the process started, since the Unix epoch",
                Some(Unit::Seconds),
                start,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_a_command_name_with_spaces_and_parentheses() {
        // proc(5): pid (comm) state ppid ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24)
        let line = "4242 (k (a) m) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 987654321 1500 18446744073709551615";
        let stat = parse_stat(line).expect("parsed");
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 300,
                start_ticks: 12345,
                virtual_bytes: 987_654_321,
                resident_pages: 1500,
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert!(
            resident_bytes(&stat, 4096) > 0,
            "a running process is resident"
        );
        let emulated = Stat {
            resident_pages: 0,
            ..stat
        };
        assert!(
            resident_bytes(&emulated, 4096) > 0,
            "where stat says 0 (qemu-user), VmRSS from status"
        );
        let start = ProcessCollector::new().start_time.expect("a start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(open_fds().unwrap() >= 3, "stdin, stdout, stderr at least");
    }
}
