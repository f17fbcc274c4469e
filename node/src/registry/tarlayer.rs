//! A `wasi/wasm` image's module inside its one tar layer (plain or gzip), as `docker buildx
//! --platform wasi/wasm` builds it for runwasi: the one regular `.wasm` file, unpacked with a
//! bound. Links, devices and directories are skipped, never followed.

use std::io::Read;

use super::MAX_MODULE;

/// The most bytes a tar layer is unpacked to while looking for its module.
pub(super) const MAX_UNPACKED: u64 = 2 * MAX_MODULE as u64;

/// The one `.wasm` regular file of a tar (gzipped or not), unpacking at most `MAX_UNPACKED`
/// bytes and taking a module of at most `MAX_MODULE`. Links, devices and directories are
/// skipped, never followed.
pub(super) fn module_from_tar(layer: &[u8], gzip: bool) -> Result<Vec<u8>, String> {
    let raw: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(raw.take(MAX_UNPACKED));
    let mut found: Option<(String, Vec<u8>)> = None;
    let bad = |e: std::io::Error| format!("a tar layer that does not unpack ({e})");
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if !path.ends_with(".wasm") {
            continue;
        }
        if let Some((first, _)) = &found {
            return Err(format!(
                "a tar layer with more than one .wasm file ({first}, {path})"
            ));
        }
        let size = entry.header().size().map_err(bad)?;
        if size > MAX_MODULE as u64 {
            return Err(format!("{path} of {size} bytes (at most {MAX_MODULE})"));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(bad)?;
        found = Some((path, bytes));
    }
    let (path, bytes) = found.ok_or("a tar layer without a .wasm file")?;
    if !bytes.starts_with(b"\0asm") {
        return Err(format!(
            "{path}, which is not WebAssembly (no \\0asm header)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).expect("append");
        }
        let mut sym = tar::Header::new_gnu();
        sym.set_entry_type(tar::EntryType::Symlink);
        sym.set_size(0);
        b.append_link(&mut sym, "link.wasm", "/etc/passwd")
            .expect("link");
        let raw = b.into_inner().expect("tar");
        if !gzip {
            return raw;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn a_tar_layer_gives_its_one_module() {
        let module: &[u8] = b"\0asm\x01\0\0\0";
        type Case<'a> = (&'a [(&'a str, &'a [u8])], Result<&'a [u8], &'a str>);
        let cases: &[Case] = &[
            (&[("app.wasm", module), ("README", b"hi")], Ok(module)),
            (&[("dir/app.wasm", module)], Ok(module)),
            (&[("README", b"hi")], Err("without a .wasm file")),
            (
                &[("a.wasm", module), ("b.wasm", module)],
                Err("more than one .wasm file"),
            ),
            (&[("a.wasm", b"#!/bin/sh")], Err("not WebAssembly")),
        ];
        for gzip in [false, true] {
            for (files, want) in cases {
                let got = module_from_tar(&tarball(files, gzip), gzip);
                match (got, want) {
                    (Ok(m), Ok(w)) => assert_eq!(m, *w),
                    (Err(e), Err(part)) => assert!(e.contains(part), "{e} lacks {part}"),
                    (got, want) => panic!("{files:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        // Not a tar at all, and a gzip bomb's worth of zeros: errors, bounded.
        assert!(module_from_tar(b"garbage", true).is_err());
        let zeros = tarball(&[("big", &vec![0u8; 1 << 20])], true);
        assert!(module_from_tar(&zeros, true).is_err());
    }
}
