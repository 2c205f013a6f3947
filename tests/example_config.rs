//! The example /etc/kindercam/kindercam.toml shipped in the .deb (pkg/kindercam.toml)
//! must stay true: every key the daemon reads is in it, every line in it is valid,
//! and every value shown as a default is the default.
//!
//! Its convention: `#key = value` is a key at its default; a line with a trailing
//! `# example` comment shows a key that has no default. Prose has a space after `#`.

use std::path::{Path, PathBuf};

const EXAMPLE: &str = "pkg/kindercam.toml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The keys the file may hold, as the daemon knows them.
fn file_config_keys() -> Vec<String> {
    kindercam::config::file_keys()
        .iter()
        .map(|k| k.to_string())
        .collect()
}

/// The example's `#key = value` lines (and `#[[table]]` headers), uncommented;
/// with `defaults_only`, without the lines marked `# example`.
fn uncommented(defaults_only: bool) -> String {
    let text = std::fs::read_to_string(root().join(EXAMPLE)).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let Some(setting) = line.strip_prefix('#') else {
            assert!(
                line.trim().is_empty(),
                "{EXAMPLE}: a setting left on: {line:?}"
            );
            continue;
        };
        if setting.starts_with(' ') || setting.is_empty() {
            continue; // prose
        }
        if defaults_only && setting.contains("# example") {
            continue;
        }
        out.push_str(setting);
        out.push('\n');
    }
    out
}

fn load(toml: Option<&str>, name: &str) -> anyhow::Result<kindercam::Config> {
    let mut args = vec!["kindercam".to_owned()];
    let path = std::env::temp_dir().join(format!(
        "kindercam-example-{}-{name}.toml",
        std::process::id()
    ));
    if let Some(toml) = toml {
        std::fs::write(&path, toml).unwrap();
        args.push("--config".into());
        args.push(path.display().to_string());
    }
    // No environment at all: the defaults are the ones a systemd-less run gets,
    // except state_dir, which under systemd comes from STATE_DIRECTORY.
    let env = |k: &str| (k == "STATE_DIRECTORY").then(|| "/var/lib/kindercam".to_owned());
    let config = kindercam::Config::load(&args, &env);
    let _ = std::fs::remove_file(PathBuf::from(&path));
    config
}

#[test]
fn the_example_config_lists_every_key() {
    let all = uncommented(false);
    let missing: Vec<String> = file_config_keys()
        .into_iter()
        .filter(|key| {
            !all.lines()
                .any(|l| l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[[{key}]]")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{EXAMPLE} does not show these keys the daemon reads: {missing:?}; \
         add each as `#key = default` with a comment saying what it does"
    );
}

#[test]
fn every_line_of_the_example_config_is_valid() {
    let all = uncommented(false);
    // A build without the cluster feature refuses NATS servers, by design.
    #[cfg(not(feature = "cluster"))]
    let all: String = all
        .lines()
        .filter(|l| !l.starts_with("nats_urls ="))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Err(e) = load(Some(&all), "all") {
        panic!("{EXAMPLE} with every setting switched on is refused: {e:#}\n{all}");
    }
}

#[test]
fn the_defaults_in_the_example_config_are_the_defaults() {
    let defaults = uncommented(true);
    let with_file = load(Some(&defaults), "defaults").expect("the defaults load");
    let without = load(None, "none").expect("no file loads");
    assert_eq!(
        format!("{with_file:#?}"),
        format!("{without:#?}"),
        "{EXAMPLE} shows a default that is not the default"
    );
}
