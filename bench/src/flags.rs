//! The bench's command lines: `--flag VALUE` pairs and `--help`, one parser for
//! every mode (fan-out, logins, cluster), so each mode only says what a flag sets.

use std::time::Duration;

use anyhow::Context;

/// The `--flag VALUE` pairs of `args`, in order; prints `usage` and exits on
/// `--help` or `-h`.
pub fn pairs(
    args: impl Iterator<Item = String>,
    usage: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut args = args;
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{usage}"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// A duration given in seconds, fractions allowed.
pub fn secs(value: &str) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs_f64(value.parse()?))
}
