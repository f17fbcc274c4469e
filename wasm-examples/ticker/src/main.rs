//! `ticker`: prints a numbered line every second (or every TICK_MS milliseconds) until stopped.
use std::time::Duration;

fn main() {
    let ms: u64 = std::env::var("TICK_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut n: u64 = 0;
    loop {
        n += 1;
        println!("tick {n}");
        std::thread::sleep(Duration::from_millis(ms));
    }
}
