//! The cluster section: the NATS servers a relay joins (`--nats`, `nats_urls` in
//! the file) and the name it goes by there (`--node-name`, the host name by
//! default). Without `--nats` kindercam is a single node, as it always was; with
//! it, `crate::cluster` shares frames and demand with the other relays. Its
//! flags, variables, file keys, defaults and checks sit together so that a key
//! is added in one place.

use serde::Deserialize;

use super::layers::Layers;

/// How this node joins a cluster of relays, if it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS servers, tried in any order (the client moves to another by
    /// itself); empty: a single node.
    pub nats_urls: Vec<String>,
    /// This node's name on NATS and in `/healthz`; unique per relay.
    pub node_name: String,
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }
}

/// The section's command-line flags, as text for the shared parser.
#[derive(Debug, clap::Args)]
pub(super) struct ClusterFlags {
    /// NATS servers of a relay cluster, comma-separated (nats://HOST:PORT or
    /// tls://HOST:PORT); without it this is a single node [env: KINDERCAM_NATS]
    /// [file: nats_urls = ["nats://...", ...]]
    #[arg(long, value_name = "URL[,URL...]")]
    nats: Option<String>,
    /// This relay's name in the cluster: letters, digits, '.', '-' and '_'
    /// [env: KINDERCAM_NODE_NAME] [default: the host name]
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
}

/// The section's keys in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ClusterFile {
    nats_urls: Option<Vec<String>>,
    node_name: Option<String>,
}

impl ClusterConfig {
    pub(super) fn resolve(flags: &ClusterFlags, layers: &Layers) -> anyhow::Result<ClusterConfig> {
        let file: ClusterFile = layers.file()?;
        let nats_urls = match (layers.text("nats", &flags.nats), file.nats_urls) {
            (Some(found), _) => {
                nats_urls(found.value.split(',').map(str::to_owned)).map_err(|why| {
                    anyhow::anyhow!("invalid {} {:?}: {why}", found.origin, found.value)
                })?
            }
            (None, Some(list)) => nats_urls(list).map_err(|why| {
                anyhow::anyhow!("invalid {}: {why}", layers.file_origin("nats_urls"))
            })?,
            (None, None) => Vec::new(),
        };
        #[cfg(not(feature = "cluster"))]
        if !nats_urls.is_empty() {
            anyhow::bail!(
                "--nats: this kindercam was built without the cluster feature \
                 (build with `cargo build --features cluster` to join a NATS cluster)"
            );
        }
        let node_name = layers.resolve(
            "node_name",
            &flags.node_name,
            file.node_name,
            host_name(),
            node_name,
        )?;
        Ok(ClusterConfig {
            nats_urls,
            node_name,
        })
    }
}

/// Checks each URL: `nats://` or `tls://` (or none, meaning `nats://`), a host
/// and a port; surrounding spaces and empty entries are left out.
fn nats_urls(list: impl IntoIterator<Item = String>) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for url in list {
        let url = url.trim();
        if url.is_empty() {
            continue;
        }
        let rest = match url.split_once("://") {
            Some(("nats" | "tls", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{url:?}: unknown scheme {scheme:?}, use nats://HOST:PORT or tls://HOST:PORT"
                ))
            }
            None => url,
        };
        // user:password@ may precede the host.
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let port = host_port.rsplit_once(':');
        match port {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("{url:?} is not a server like nats://HOST:PORT")),
        }
        urls.push(url.to_owned());
    }
    if urls.is_empty() {
        return Err("no server given; leave it out for a single node".into());
    }
    Ok(urls)
}

fn node_name(name: String) -> Result<String, String> {
    let name = name.trim();
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("must be 1-64 letters, digits, '.', '-' or '_'".into())
    }
}

/// The host name, made a valid node name; `kindercam` if there is none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..if ok { end } else { 0 }])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "kindercam".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, TomlFile};

    #[test]
    fn without_nats_it_is_a_single_node_named_after_the_host() {
        let c = load(&[], &[]).unwrap().cluster;
        assert!(!c.enabled());
        assert!(c.nats_urls.is_empty());
        assert_eq!(c.node_name, super::host_name());
        assert!(!c.node_name.is_empty());
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn nats_servers_come_from_the_flag_the_environment_or_the_file() {
        let file = TomlFile::new(
            "cluster",
            "nats_urls = [\"nats://a:4222\", \"tls://b:4222\"]\nnode_name = \"relay-file\"\n",
        );
        let c = load(&["--config", file.path()], &[]).unwrap().cluster;
        assert_eq!(c.nats_urls, ["nats://a:4222", "tls://b:4222"]);
        assert_eq!(c.node_name, "relay-file");
        assert!(c.enabled());

        let c = load(
            &["--config", file.path()],
            &[
                ("KINDERCAM_NATS", "nats://e:1, nats://f:2"),
                ("KINDERCAM_NODE_NAME", "relay-env"),
            ],
        )
        .unwrap()
        .cluster;
        assert_eq!(c.nats_urls, ["nats://e:1", "nats://f:2"], "env beats file");
        assert_eq!(c.node_name, "relay-env");

        let c = load(
            &[
                "--config",
                file.path(),
                "--nats",
                "127.0.0.1:4301,nats://127.0.0.1:4302",
                "--node-name",
                "relay-1",
            ],
            &[("KINDERCAM_NATS", "nats://e:1")],
        )
        .unwrap()
        .cluster;
        assert_eq!(
            c.nats_urls,
            ["127.0.0.1:4301", "nats://127.0.0.1:4302"],
            "the flag beats both"
        );
        assert_eq!(c.node_name, "relay-1");
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn bad_servers_and_names_are_refused_with_their_origin() {
        let e = load(&["--nats", "http://a:80"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--nats") && e.to_string().contains("unknown scheme"),
            "{e}"
        );
        let e = load(&["--nats", "nats://no-port"], &[]).unwrap_err();
        assert!(e.to_string().contains("nats://HOST:PORT"), "{e}");
        let e = load(&[], &[("KINDERCAM_NATS", " , ")]).unwrap_err();
        assert!(
            e.to_string().contains("KINDERCAM_NATS") && e.to_string().contains("no server"),
            "{e}"
        );
        let file = TomlFile::new("cluster-bad", "nats_urls = [\"nats://a:0\"]\n");
        let e = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("nats_urls in {}", file.path())),
            "{e}"
        );
        let e = load(&["--node-name", "relay 1"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--node-name") && e.to_string().contains("1-64"),
            "{e}"
        );
    }

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn without_the_feature_nats_is_refused_clearly() {
        let e = load(&["--nats", "nats://a:4222"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("built without the cluster feature"),
            "{e}"
        );
        let _ = TomlFile::new("cluster-off", "");
    }
}
