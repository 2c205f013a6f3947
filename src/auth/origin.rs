//! Origin checks against cross-site WebSocket hijacking and CSRF: a browser
//! always says which page opened a socket or posted a form, and only our own
//! pages (or an explicitly allowed reverse-proxy origin) may.

/// `scheme://host:port`, lowercased, with the scheme's default port made explicit.
pub fn normalize(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    let port = port.unwrap_or(default_port);
    Some(format!("{scheme}://{}:{port}", host.to_ascii_lowercase()))
}

/// Splits `host[:port]`, keeping IPv6 brackets on the host.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(end) = authority.strip_prefix('[').and_then(|r| r.find(']')) {
        let host = &authority[..end + 2];
        return match &authority[end + 2..] {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (!host.is_empty()).then_some(())?;
            Some((host, Some(port.parse().ok()?)))
        }
        Some(_) => None, // bare IPv6 without brackets
        None => (!authority.is_empty()).then_some((authority, None)),
    }
}

/// Whether `origin` may talk to us. With an explicit allowlist only those match;
/// otherwise the one origin of our own pages: the host the client used (from its
/// `Host` header) on the HTTP port, with our scheme.
pub fn allowed(
    origin: &str,
    allowlist: &[String],
    host_header: Option<&str>,
    http_port: u16,
    tls: bool,
) -> bool {
    let Some(origin) = normalize(origin) else {
        return false;
    };
    if !allowlist.is_empty() {
        return allowlist
            .iter()
            .any(|a| normalize(a).as_deref() == Some(origin.as_str()));
    }
    let Some((host, _)) = host_header.and_then(split_host_port) else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    origin == format!("{scheme}://{}:{http_port}", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allows_exactly_our_pages_origin() {
        let ok = |o: &str, host: &str| allowed(o, &[], Some(host), 8080, false);
        assert!(ok("http://192.168.1.20:8080", "192.168.1.20:9000"));
        assert!(ok("http://127.0.0.1:8080", "127.0.0.1:9000"));
        assert!(ok("HTTP://Pi.Local:8080", "pi.local:9000"));
        assert!(ok("http://[::1]:8080", "[::1]:9000"));
        assert!(
            !ok("http://127.0.0.1:8081", "127.0.0.1:9000"),
            "same host, other port"
        );
        assert!(
            !ok("https://127.0.0.1:8080", "127.0.0.1:9000"),
            "other scheme"
        );
        assert!(!ok("http://evil.example:8080", "127.0.0.1:9000"));
        assert!(!ok("null", "127.0.0.1:9000"));
        assert!(
            !ok("http://127.0.0.1", "127.0.0.1:9000"),
            "port 80 is not 8080"
        );
    }

    #[test]
    fn allowlist_replaces_the_default() {
        let list = vec!["https://kita.example.org".to_owned()];
        assert!(allowed(
            "https://kita.example.org:443",
            &list,
            Some("x:9000"),
            8080,
            false
        ));
        assert!(!allowed(
            "http://x:8080",
            &list,
            Some("x:9000"),
            8080,
            false
        ));
    }

    #[test]
    fn normalizes_or_refuses() {
        assert_eq!(normalize("https://A.b"), Some("https://a.b:443".into()));
        assert_eq!(normalize("ftp://a"), None);
        assert_eq!(normalize("http://a/path"), None);
        assert_eq!(normalize("http://user@a"), None);
        assert_eq!(normalize("http://a:notaport"), None);
    }
}
