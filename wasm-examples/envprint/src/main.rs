//! `envprint`: shows what a pod's sandbox gives it.
//!
//! - `envprint show DIR...`: the environment (sorted), then every file under each DIR with its
//!   contents, then proof that `..` does not lead out of a mount.
//! - `envprint write FILE TEXT`: write TEXT to FILE (an init container filling an emptyDir).
//! - `envprint cat FILE`: print FILE, or fail with exit code 1.
//! - `envprint fill DIR MIB`: write MIB mebibytes into DIR (to exceed an emptyDir sizeLimit),
//!   then wait.
use std::path::Path;

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
            eprintln!("usage: envprint show DIR... | write FILE TEXT | cat FILE | fill DIR MIB");
            std::process::exit(2);
        }
    }
}
