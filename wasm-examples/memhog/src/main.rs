//! `memhog MIB`: grows its memory by one mebibyte at a time up to MIB (default 1024), touching
//! every page, and reports progress; with `limits.memory` below that it is OOMKilled.
fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 1..=target {
        held.push(vec![i as u8; 1 << 20]);
        if i % 16 == 0 {
            println!("holding {i} MiB");
        }
    }
    println!("held {target} MiB without being stopped");
}
