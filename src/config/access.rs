//! The access section: whether access control is on, the codes each role logs in
//! with, which other origins may open sockets and post forms, and how long a login
//! lasts. Its flags, variables, file keys, defaults and checks sit together so
//! that a key is added in one place.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::layers::{in_range, Layers};
use crate::auth::codes::Code;

/// Who may log in, with what, from where, and for how long.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// `false` only with `auth = "off"`, which is refused unless both listeners are loopback.
    pub auth: bool,
    /// Configured codes; `None` means "use the generated ones from the state directory".
    pub viewer_code: Option<Code>,
    pub staff_code: Option<Code>,
    /// The director's code (admin role); `None` until one is generated on first start.
    pub admin_code: Option<Code>,
    /// Exact origins allowed to open sockets and post forms; empty means our own pages only.
    pub allowed_origins: Vec<String>,
    pub session_ttl: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            auth: true,
            viewer_code: None,
            staff_code: None,
            admin_code: None,
            allowed_origins: Vec::new(),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct AccessFlags {
    /// `on` (default) or `off`; `off` is accepted only when both listeners are on loopback
    /// [env: KINDERCAM_AUTH]
    #[arg(long, value_name = "on|off")]
    auth: Option<String>,
    /// Access code for parents (watch and chat); in TOML it may be an argon2 hash from
    /// `kindercam hash-code` [env: KINDERCAM_VIEWER_CODE] [default: generated on first start]
    #[arg(long, value_name = "CODE")]
    viewer_code: Option<String>,
    /// Access code for staff (also broadcast and moderate) [env: KINDERCAM_STAFF_CODE]
    /// [default: generated on first start]
    #[arg(long, value_name = "CODE")]
    staff_code: Option<String>,
    /// Access code for the director (admin: also families, rooms, hours and the viewing log)
    /// [env: KINDERCAM_ADMIN_CODE] [default: generated on first start]
    #[arg(long, value_name = "CODE")]
    admin_code: Option<String>,
    /// An origin (scheme://host[:port]) allowed to open WebSockets and post forms, e.g. a
    /// reverse proxy's https://camera.example.org; repeat for several
    /// [env: KINDERCAM_ALLOWED_ORIGINS, comma-separated] [default: the pages' own origin]
    #[arg(long = "allowed-origin", value_name = "URL")]
    allowed_origins: Vec<String>,
    /// Hours a login lasts [env: KINDERCAM_SESSION_HOURS] [default: 168]
    #[arg(long, value_name = "H")]
    session_hours: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AccessFile {
    auth: Option<String>,
    viewer_code: Option<String>,
    staff_code: Option<String>,
    admin_code: Option<String>,
    allowed_origins: Option<Vec<String>>,
    session_hours: Option<u64>,
}

impl AccessConfig {
    pub(super) fn resolve(flags: &AccessFlags, layers: &Layers) -> anyhow::Result<AccessConfig> {
        let file: AccessFile = layers.file()?;
        let d = AccessConfig::default();
        let config = AccessConfig {
            auth: layers.resolve("auth", &flags.auth, file.auth, d.auth, on_off)?,
            viewer_code: layers.resolve(
                "viewer_code",
                &flags.viewer_code,
                file.viewer_code,
                d.viewer_code,
                |c: String| Code::parse(&c).map(Some),
            )?,
            staff_code: layers.resolve(
                "staff_code",
                &flags.staff_code,
                file.staff_code,
                d.staff_code,
                |c: String| Code::parse(&c).map(Some),
            )?,
            admin_code: layers.resolve(
                "admin_code",
                &flags.admin_code,
                file.admin_code,
                d.admin_code,
                |c: String| Code::parse(&c).map(Some),
            )?,
            allowed_origins: origins(layers, &flags.allowed_origins, file.allowed_origins)?,
            session_ttl: layers.resolve(
                "session_hours",
                &flags.session_hours,
                file.session_hours,
                d.session_ttl,
                |h: u64| in_range(1, 24 * 365)(h).map(|h| Duration::from_secs(h * 3600)),
            )?,
        };
        if let (Some(Code::Plain(v)), Some(Code::Plain(s))) =
            (&config.viewer_code, &config.staff_code)
        {
            if v == s {
                bail!("the viewer and staff codes must differ");
            }
        }
        if let Some(Code::Plain(admin)) = &config.admin_code {
            let taken = [&config.viewer_code, &config.staff_code]
                .into_iter()
                .any(|c| matches!(c, Some(Code::Plain(other)) if other == admin));
            if taken {
                bail!("the admin code must differ from the viewer and staff codes");
            }
        }
        Ok(config)
    }
}

fn on_off(v: String) -> Result<bool, String> {
    match v.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("must be \"on\" or \"off\"".into()),
    }
}

/// Origins from repeated flags, a comma-separated variable, or a TOML array.
fn origins(
    layers: &Layers,
    flags: &[String],
    file: Option<Vec<String>>,
) -> anyhow::Result<Vec<String>> {
    let (list, origin) = if !flags.is_empty() {
        (flags.to_vec(), "--allowed-origin".to_owned())
    } else if let Some(v) =
        (layers.env)("KINDERCAM_ALLOWED_ORIGINS").filter(|v| !v.trim().is_empty())
    {
        let list = v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        (list, "KINDERCAM_ALLOWED_ORIGINS".to_owned())
    } else if let Some(list) = file {
        (list, layers.file_origin("allowed_origins"))
    } else {
        return Ok(Vec::new());
    };
    for o in &list {
        if crate::auth::origin::normalize(o).is_none() {
            bail!("invalid {origin}: {o:?} is not an origin like https://camera.example.org or http://192.168.1.20:8080");
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{load, TomlFile};
    use crate::auth::codes::Code;

    #[test]
    fn codes_may_be_plain_or_hashed_and_must_differ() {
        let hashed = crate::auth::codes::hash_code("staff-secret").unwrap();
        let file = TomlFile::new("access", &format!("staff_code = \"{hashed}\"\n"));
        let c = load(
            &["--config", file.path()],
            &[("KINDERCAM_VIEWER_CODE", "parents-123")],
        )
        .unwrap();
        assert_eq!(
            c.access.viewer_code,
            Some(Code::Plain("parents-123".into()))
        );
        assert_eq!(c.access.staff_code, Some(Code::Hashed(hashed)));
        let e = load(&["--viewer-code", "short"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--viewer-code") && e.to_string().contains("6 characters"),
            "{e}"
        );
        let e = load(
            &["--viewer-code", "same-code", "--staff-code", "same-code"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("must differ"), "{e}");
    }

    #[test]
    fn the_admin_code_is_set_like_the_others_and_must_differ_from_them() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(
            c.access.admin_code, None,
            "generated on first start by default"
        );
        let c = load(&[], &[("KINDERCAM_ADMIN_CODE", "director-2468")]).unwrap();
        assert_eq!(
            c.access.admin_code,
            Some(Code::Plain("director-2468".into()))
        );
        let hashed = crate::auth::codes::hash_code("director-2468").unwrap();
        let file = TomlFile::new("admin", &format!("admin_code = \"{hashed}\"\n"));
        let c = load(
            &["--config", file.path(), "--admin-code", "director-1357"],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.access.admin_code,
            Some(Code::Plain("director-1357".into())),
            "the flag beats the file"
        );
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.access.admin_code, Some(Code::Hashed(hashed)));
        let e = load(&["--admin-code", "short"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--admin-code") && e.to_string().contains("6 characters"),
            "{e}"
        );
        file.write("admin_code = \"$argon2id$nonsense\"\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("admin_code in {}", file.path()))
                && e.to_string().contains("argon2"),
            "{e}"
        );
        let e = load(
            &["--admin-code", "same-code", "--staff-code", "same-code"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("admin code must differ"), "{e}");
        let e = load(
            &["--admin-code", "same-code"],
            &[("KINDERCAM_VIEWER_CODE", "same-code")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("admin code must differ"), "{e}");
    }

    #[test]
    fn origins_come_from_repeated_flags_a_list_variable_or_the_file() {
        let file = TomlFile::new(
            "origins",
            "allowed_origins = [\"https://camera.example.org\"]\nsession_hours = 2\n",
        );
        let c = load(&["--config", file.path()], &[]).unwrap();
        assert_eq!(c.access.allowed_origins, ["https://camera.example.org"]);
        assert_eq!(c.access.session_ttl, Duration::from_secs(2 * 3600));
        let c = load(
            &["--config", file.path()],
            &[(
                "KINDERCAM_ALLOWED_ORIGINS",
                "https://a.example.org, http://192.168.1.20:8080",
            )],
        )
        .unwrap();
        assert_eq!(
            c.access.allowed_origins,
            ["https://a.example.org", "http://192.168.1.20:8080"],
            "the variable's list replaces the file's"
        );
        let e = load(&["--allowed-origin", "camera.example.org"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--allowed-origin") && e.to_string().contains("not an origin"),
            "{e}"
        );
        let e = load(&[], &[("KINDERCAM_AUTH", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("KINDERCAM_AUTH"), "{e}");
    }
}
