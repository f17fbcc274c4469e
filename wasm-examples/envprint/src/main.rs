//! `envprint`: shows what a pod's sandbox gives it.
//!
//! - `envprint show DIR...`: the environment (sorted), then every file under each DIR with its
//!   contents, then proof that `..` does not lead out of a mount.
//! - `envprint write FILE TEXT`: write TEXT to FILE (an init container filling an emptyDir).
//! - `envprint cat FILE`: print FILE, or fail with exit code 1.
//! - `envprint fill DIR MIB`: write MIB mebibytes into DIR (to exceed an emptyDir sizeLimit),
//!   then wait.
//! - `envprint link TARGET LINK`: create the symbolic link LINK -> TARGET (LINK inside a
//!   mount): what a hostile pod does to lead a later container, or the node, out of a volume.
use std::path::Path;

/// WASI preview 1 `path_symlink` (std has no stable symlink call on WASI).
#[cfg(target_os = "wasi")]
mod raw {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        pub fn path_symlink(old: *const u8, old_len: usize, fd: u32, new: *const u8, new_len: usize) -> u16;
        pub fn fd_prestat_get(fd: u32, prestat: *mut u32) -> u16;
        pub fn fd_prestat_dir_name(fd: u32, path: *mut u8, len: usize) -> u16;
    }
}

/// Create `link` -> `target`: `link` is resolved against the preopened directory that holds it.
#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> Result<(), String> {
    for fd in 3..64u32 {
        let mut prestat = [0u32; 2];
        // SAFETY: WASI calls with buffers of the sizes they take.
        if unsafe { raw::fd_prestat_get(fd, prestat.as_mut_ptr()) } != 0 {
            continue;
        }
        let mut name = vec![0u8; prestat[1] as usize];
        if unsafe { raw::fd_prestat_dir_name(fd, name.as_mut_ptr(), name.len()) } != 0 {
            continue;
        }
        let dir = String::from_utf8_lossy(&name).trim_end_matches('/').to_string();
        let Some(rest) = link.strip_prefix(&format!("{dir}/")) else {
            continue;
        };
        let errno = unsafe {
            raw::path_symlink(target.as_ptr(), target.len(), fd, rest.as_ptr(), rest.len())
        };
        return if errno == 0 { Ok(()) } else { Err(format!("errno {errno}")) };
    }
    Err(format!("no mount holds {link}"))
}

#[cfg(not(target_os = "wasi"))]
fn symlink(target: &str, link: &str) -> Result<(), String> {
    std::os::unix::fs::symlink(target, link).map_err(|e| e.to_string())
}

fn walk(dir: &Path) {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().collect(),
        Err(e) => {
            println!("{}: cannot list: {e}", dir.display());
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p);
        } else {
            match std::fs::read_to_string(&p) {
                Ok(s) => println!("{} = {}", p.display(), s.trim_end()),
                Err(e) => println!("{}: {e}", p.display()),
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") if args.len() == 3 => {
            std::fs::write(&args[1], &args[2]).unwrap_or_else(|e| {
                eprintln!("write {}: {e}", args[1]);
                std::process::exit(1)
            });
            println!("wrote {}", args[1]);
        }
        Some("link") if args.len() == 3 => match symlink(&args[1], &args[2]) {
            Ok(()) => println!("linked {} -> {}", args[2], args[1]),
            Err(e) => {
                eprintln!("link {}: {e}", args[2]);
                std::process::exit(1)
            }
        },
        Some("cat") if args.len() == 2 => match std::fs::read_to_string(&args[1]) {
            Ok(s) => println!("{}", s.trim_end()),
            Err(e) => {
                eprintln!("cat {}: {e}", args[1]);
                std::process::exit(1)
            }
        },
        Some("fill") if args.len() == 3 => {
            let mib: usize = args[2].parse().unwrap_or(1);
            let chunk = vec![b'x'; 1 << 20];
            for i in 0..mib {
                let path = Path::new(&args[1]).join(format!("fill-{i}"));
                if let Err(e) = std::fs::write(&path, &chunk) {
                    eprintln!("{}: {e}", path.display());
                    std::process::exit(1);
                }
            }
            println!("wrote {mib} MiB into {}", args[1]);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        Some("show") => {
            let mut env: Vec<(String, String)> = std::env::vars().collect();
            env.sort();
            for (k, v) in env {
                println!("env {k}={v}");
            }
            for d in &args[1..] {
                walk(Path::new(d));
                let escape = Path::new(d).join("../../../etc/hostname");
                match std::fs::read_to_string(&escape) {
                    Ok(_) => println!("ESCAPED: read {}", escape.display()),
                    Err(e) => println!("no escape from {d}: {e}"),
                }
                match std::fs::write(Path::new(d).join(".probe"), b"x") {
                    Ok(()) => println!("{d} is writable"),
                    Err(e) => println!("{d} is read-only: {e}"),
                }
            }
            match std::fs::read_to_string("/etc/hostname") {
                Ok(_) => println!("ESCAPED: read /etc/hostname"),
                Err(e) => println!("no host filesystem: {e}"),
            }
        }
        _ => {
            eprintln!("usage: envprint show DIR... | write FILE TEXT | cat FILE | fill DIR MIB | link TARGET LINK");
            std::process::exit(2);
        }
    }
}
