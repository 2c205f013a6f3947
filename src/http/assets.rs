//! The pages, scripts and styles embedded from `web/`, kept gzip-compressed in
//! the binary: about a quarter of the bytes, which a Pi's 6 MiB binary budget
//! needs (BENCHMARKS.md, "Binary size"). A browser says it takes gzip and gets
//! the stored bytes as they are (fewer bytes over a classroom's Wi-Fi, too);
//! anything that does not (`curl` without `--compressed`, a monitoring probe)
//! gets the file unpacked.

/// One embedded file (`build.rs` writes the table).
pub struct Asset {
    /// Its URL path, e.g. `/viewer.js`.
    pub path: &'static str,
    /// The file as a gzip member with a plain 10-byte header.
    pub gzip: &'static [u8],
    /// The file's own length.
    pub len: usize,
}

mod table {
    use super::Asset;
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The gzip header `build.rs` writes and the trailer (CRC-32, length) after
/// the deflate data.
const HEADER: usize = 10;
const TRAILER: usize = 8;

/// The embedded file at `path`, if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    table::ASSETS.iter().find(|a| a.path == path)
}

impl Asset {
    /// The file itself, unpacked.
    pub fn unpacked(&self) -> Vec<u8> {
        let deflate = &self.gzip[HEADER..self.gzip.len() - TRAILER];
        miniz_oxide::inflate::decompress_to_vec_with_limit(deflate, self.len)
            .expect("build.rs compressed this file")
    }
}

/// Whether an `Accept-Encoding` header value takes gzip (RFC 9110 12.5.3): its
/// `gzip` (or `x-gzip`) entry, else its `*` entry, has a `q` above zero.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let q_of = |names: &[&str]| {
        accept_encoding.split(',').find_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            names
                .iter()
                .any(|n| coding.eq_ignore_ascii_case(n))
                .then(|| {
                    parts
                        .filter_map(|p| p.trim().split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                        .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0))
                })
        })
    };
    q_of(&["gzip", "x-gzip"])
        .or_else(|| q_of(&["*"]))
        .is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_web_unpacks_to_its_bytes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let viewer = find("/viewer.js").expect("viewer.js is embedded");
        assert_eq!(
            viewer.unpacked(),
            std::fs::read(dir.join("viewer.js")).unwrap()
        );
        let mut packed = 0;
        let mut unpacked = 0;
        for asset in table::ASSETS {
            let on_disk = std::fs::read(dir.join(&asset.path[1..])).unwrap();
            assert_eq!(asset.unpacked(), on_disk, "{}", asset.path);
            packed += asset.gzip.len();
            unpacked += on_disk.len();
        }
        assert!(
            packed * 2 < unpacked,
            "{packed} bytes compressed for {unpacked}"
        );
    }

    #[test]
    fn gzip_only_when_the_client_says_so() {
        for yes in [
            "gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, GZIP;q=0.5",
            "x-gzip",
            "*",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br, zstd",
            "gzip;q=0",
            "gzip; q=0.0",
            "gzipx",
            "gzip;q=0, *",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }
}
