//! `spinner`: burns CPU forever, printing how many rounds it did each second of its own clock.
//! With `limits.cpu: 100m` it gets a tenth of a core; without a limit it still cannot starve the
//! node (the runtime preempts it every epoch tick).
fn main() {
    let mut rounds: u64 = 0;
    let mut x: u64 = 1;
    let mut last = std::time::Instant::now();
    loop {
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        rounds += 1;
        if last.elapsed() >= std::time::Duration::from_secs(1) {
            println!("spinning: {rounds} rounds (x={})", x % 1000);
            rounds = 0;
            last = std::time::Instant::now();
        }
    }
}
