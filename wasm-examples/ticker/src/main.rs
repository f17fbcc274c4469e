//! `ticker`: prints a numbered line every second (or every TICK_MS milliseconds) until stopped,
//! or until it printed TICKS lines (then exits 0).
use std::time::Duration;

fn main() {
    let ms: u64 = std::env::var("TICK_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let ticks: Option<u64> = std::env::var("TICKS").ok().and_then(|v| v.parse().ok());
    let mut n: u64 = 0;
    loop {
        n += 1;
        println!("tick {n}");
        if ticks.is_some_and(|t| n >= t) {
            return;
        }
        std::thread::sleep(Duration::from_millis(ms));
    }
}
