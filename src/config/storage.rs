//! The storage section: the directories the daemon reads and writes (its state
//! directory, and in development a directory of pages to serve instead of the
//! embedded ones), how much chat history it keeps and how long the viewing log is
//! kept. Its flags, variables, file
//! keys, defaults and checks sit together so that a key is added in one place.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::layers::{in_range, non_empty_path, Layers};

/// What the daemon keeps, and where.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub state_dir: PathBuf,
    /// Serve pages from this directory instead of the embedded copy (development).
    pub web_dir: Option<PathBuf>,
    /// Chat messages replayed to a client that joins.
    pub chat_history: usize,
    /// Days the viewing log keeps a row before it is pruned.
    pub audit_days: u32,
}

impl Default for StorageConfig {
    /// The state directory follows the process environment, as `load` does.
    fn default() -> Self {
        StorageConfig::defaults(&|k| std::env::var(k).ok())
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct StorageFlags {
    /// Directory for persistent state [env: KINDERCAM_STATE_DIR]
    /// [default: $STATE_DIRECTORY, else $XDG_STATE_HOME/kindercam, else ~/.local/state/kindercam]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Serve pages from DIR instead of the copy built into the binary (development)
    /// [env: KINDERCAM_WEB_DIR]
    #[arg(long, value_name = "DIR")]
    web_dir: Option<String>,
    /// Chat messages replayed to a client that joins [env: KINDERCAM_CHAT_HISTORY] [default: 50]
    #[arg(long, value_name = "N")]
    chat_history: Option<String>,
    /// Days the viewing log is kept, 1-3650 [env: KINDERCAM_AUDIT_DAYS] [default: 30]
    #[arg(long, value_name = "N")]
    audit_days: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StorageFile {
    state_dir: Option<PathBuf>,
    web_dir: Option<PathBuf>,
    chat_history: Option<usize>,
    audit_days: Option<u32>,
}

impl StorageConfig {
    /// The defaults, with the state directory taken from `env`.
    fn defaults(env: &dyn Fn(&str) -> Option<String>) -> StorageConfig {
        StorageConfig {
            state_dir: default_state_dir(env),
            web_dir: None,
            chat_history: 50,
            audit_days: 30,
        }
    }

    pub(super) fn resolve(flags: &StorageFlags, layers: &Layers) -> anyhow::Result<StorageConfig> {
        let file: StorageFile = layers.file()?;
        let d = StorageConfig::defaults(layers.env);
        Ok(StorageConfig {
            state_dir: layers.resolve(
                "state_dir",
                &flags.state_dir,
                file.state_dir,
                d.state_dir,
                non_empty_path,
            )?,
            web_dir: layers.resolve(
                "web_dir",
                &flags.web_dir,
                file.web_dir,
                d.web_dir,
                |p: PathBuf| non_empty_path(p).map(Some),
            )?,
            chat_history: layers.resolve(
                "chat_history",
                &flags.chat_history,
                file.chat_history,
                d.chat_history,
                in_range(0, 1000),
            )?,
            audit_days: layers.resolve(
                "audit_days",
                &flags.audit_days,
                file.audit_days,
                d.audit_days,
                in_range(1, 3650),
            )?,
        })
    }
}

/// systemd's `StateDirectory=` sets `STATE_DIRECTORY`; a developer's run falls back to XDG.
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several colon-separated directories; the first is ours.
        return PathBuf::from(dir.split(':').next().unwrap_or(&dir));
    }
    if let Some(dir) = env("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("kindercam");
    }
    if let Some(home) = env("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/state/kindercam");
    }
    PathBuf::from("/var/lib/kindercam")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{load, TomlFile};

    #[test]
    fn the_state_directory_follows_systemd_then_xdg_then_home() {
        let dir = |env: &[(&str, &str)]| load(&[], env).unwrap().storage.state_dir;
        assert_eq!(
            dir(&[
                ("STATE_DIRECTORY", "/var/lib/kindercam:/var/lib/other"),
                ("HOME", "/home/ana")
            ]),
            Path::new("/var/lib/kindercam"),
            "systemd's first directory"
        );
        assert_eq!(
            dir(&[("XDG_STATE_HOME", "/x"), ("HOME", "/home/ana")]),
            Path::new("/x/kindercam")
        );
        assert_eq!(
            dir(&[("HOME", "/home/ana")]),
            Path::new("/home/ana/.local/state/kindercam")
        );
        assert_eq!(dir(&[]), Path::new("/var/lib/kindercam"));
        assert_eq!(
            dir(&[("STATE_DIRECTORY", "/s"), ("KINDERCAM_STATE_DIR", "/k")]),
            Path::new("/k"),
            "the setting beats systemd's default"
        );
    }

    #[test]
    fn the_viewing_log_is_kept_30_days_unless_set_within_1_to_3650() {
        assert_eq!(load(&[], &[]).unwrap().storage.audit_days, 30);
        let file = TomlFile::new("audit", "audit_days = 365\n");
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.storage.audit_days, 365);
        let c = load(
            &["--config", file.path()],
            &[("KINDERCAM_AUDIT_DAYS", "3650")],
        )
        .unwrap();
        assert_eq!(c.storage.audit_days, 3650, "the environment beats the file");
        let c = load(&["--config", file.path(), "--audit-days", "1"], &[]).unwrap();
        assert_eq!(c.storage.audit_days, 1, "the flag beats both");
        let e = load(&["--audit-days", "0"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--audit-days") && e.to_string().contains("1 and 3650"),
            "{e}"
        );
        let e = load(&[], &[("KINDERCAM_AUDIT_DAYS", "3651")]).unwrap_err();
        assert!(e.to_string().contains("KINDERCAM_AUDIT_DAYS"), "{e}");
        file.write("audit_days = -1\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string().contains(file.path()) && e.to_string().contains("audit_days"),
            "{e}"
        );
        file.write("audit_days = 0\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("audit_days in {}", file.path())),
            "{e}"
        );
    }

    #[test]
    fn storage_settings_are_checked_with_their_origin() {
        let file = TomlFile::new("storage", "chat_history = 0\nweb_dir = \"/srv/web\"\n");
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.storage.chat_history, 0, "0 keeps no history");
        assert_eq!(c.storage.web_dir.as_deref(), Some(Path::new("/srv/web")));
        let e = load(&["--chat-history", "1001"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--chat-history") && e.to_string().contains("0 and 1000"),
            "{e}"
        );
        file.write("state_dir = \"\"\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("state_dir in {}", file.path())),
            "{e}"
        );
    }
}
