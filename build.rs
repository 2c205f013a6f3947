//! Embeds every file under web/ into the binary, so a Pi needs nothing but the
//! executable. Generates `$OUT_DIR/assets.rs` with one `Asset` entry per file:
//! its URL path and the file gzip-compressed (`src/http/assets.rs` serves it as
//! it is to browsers, unpacked to anything else). Compressed, the pages take
//! about a quarter of the binary they took as they are.

use std::fs;
use std::path::{Path, PathBuf};

/// `data` as a gzip member (RFC 1952) with the fixed 10-byte header that
/// `src/http/assets.rs` skips: no name, no time stamp, so the build is repeatable.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 10));
    out.extend(crc32fast::hash(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    collect(&root, &mut files);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let gz_dir = out_dir.join("web.gz");
    fs::create_dir_all(&gz_dir).expect("create web.gz");
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (i, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", file.display());
        let rel = file.strip_prefix(&root).expect("under web/");
        let url = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        let data = fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let gz = gz_dir.join(format!("{i}.gz"));
        fs::write(&gz, gzip(&data)).expect("write a compressed asset");
        code.push_str(&format!(
            "    Asset {{ path: {url:?}, gzip: include_bytes!({:?}), len: {} }},\n",
            gz.display().to_string(),
            data.len()
        ));
    }
    code.push_str("];\n");
    fs::write(out_dir.join("assets.rs"), code).expect("write assets.rs");
}
