//! `crash`: prints a message to stderr, leaves a termination message (at
//! `TERMINATION_LOG`, default `/dev/termination-log`, when it can be written) and exits with
//! code 3.
fn main() {
    println!("crash: about to fail");
    eprintln!("crash: something went wrong, exiting with code 3");
    let path = std::env::var("TERMINATION_LOG").unwrap_or_else(|_| "/dev/termination-log".into());
    let _ = std::fs::write(path, "crash: gave up on purpose (exit code 3)");
    std::process::exit(3);
}
