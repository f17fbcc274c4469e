//! `crash`: prints a message to stderr and exits with code 3.
fn main() {
    println!("crash: about to fail");
    eprintln!("crash: something went wrong, exiting with code 3");
    std::process::exit(3);
}
