//! WAL checkpoints off the write path. The writer's connection never checkpoints on its own
//! (`wal_autocheckpoint=0`): a checkpoint copies pages into the database file and syncs it, and
//! done inside a commit it held every waiting write for that long. A checkpointer task with a
//! connection of its own copies the WAL back in the background (SQLite lets a PASSIVE checkpoint
//! run while the writer appends), woken by the writer every [`WAKE_EVERY`] bytes written.
//!
//! A WAL only starts again from its beginning when every frame in it was copied back, which a
//! checkpoint running beside a busy writer never reaches. So when the WAL has grown past
//! [`RESTART_FRAMES`], the writer itself checkpoints right after a background checkpoint ended:
//! only the frames written meanwhile are left to copy, and its next transaction starts the WAL
//! over. The store's periodic maintenance still truncates the WAL file.
//!
//! Invariant: nothing here changes what a commit makes durable (each commit still syncs the
//! WAL); it only moves when the database file catches up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::SqliteConnection;
use tokio::sync::mpsc;

/// Bytes of rows the writer commits between wake-ups of the checkpointer.
const WAKE_EVERY: u64 = 1 << 20;

/// WAL frames (pages) past which the writer makes the WAL start over: 16 MiB of 4 KiB pages.
/// A start-over holds the writer for one checkpoint, and that takes longer the longer the WAL
/// is (even with only a few frames left to copy), so it is kept short: short stalls often, not
/// long ones seldom.
const RESTART_FRAMES: u64 = 4_096;

/// The writer's side of the checkpointer.
pub(super) struct Checkpoints {
    wake: mpsc::Sender<()>,
    /// Set by the checkpointer after each checkpoint it completed; taken by the writer.
    fresh: Arc<AtomicBool>,
    /// Frames in the WAL when the last checkpoint ran.
    frames: Arc<AtomicU64>,
    /// Bytes committed since the checkpointer was last woken.
    written: u64,
}

impl Checkpoints {
    /// Start the checkpointer on its own connection; it stops when this is dropped.
    pub(super) fn start(conn: SqliteConnection) -> Checkpoints {
        let (wake, rx) = mpsc::channel(1);
        let fresh = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(conn, rx, fresh.clone(), frames.clone()));
        Checkpoints {
            wake,
            fresh,
            frames,
            written: 0,
        }
    }

    /// After a commit that wrote `bytes`: wake the checkpointer when enough was written, and
    /// start the WAL over when it is long and a background checkpoint has just caught up.
    pub(super) async fn committed(&mut self, conn: &mut SqliteConnection, bytes: u64) {
        self.written += bytes;
        if self.written >= WAKE_EVERY {
            self.written = 0;
            // Full: one is already asked for.
            let _ = self.wake.try_send(());
        }
        if self.frames.load(Ordering::Acquire) >= RESTART_FRAMES
            && self.fresh.swap(false, Ordering::AcqRel)
        {
            let started = std::time::Instant::now();
            let outcome = Passive::run(conn).await;
            tracing::debug!(
                took_ms = started.elapsed().as_secs_f64() * 1000.0,
                complete = outcome.as_ref().is_ok_and(Passive::complete),
                "store: the writer checkpointed the WAL to start it over"
            );
            match outcome {
                Ok(p) if p.complete() => self.frames.store(0, Ordering::Release),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "store: WAL checkpoint by the writer failed"),
            }
        }
    }
}

/// What one PASSIVE checkpoint (it never waits for readers or the writer) saw.
struct Passive {
    /// Another checkpoint held the lock.
    busy: bool,
    /// Frames in the WAL.
    frames: u64,
    /// Frames now copied into the database file.
    copied: u64,
}

impl Passive {
    async fn run(conn: &mut SqliteConnection) -> Result<Passive, sqlx::Error> {
        let (busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Passive {
            busy: busy != 0,
            frames: log.max(0) as u64,
            copied: copied.max(0) as u64,
        })
    }

    /// Every frame of the WAL is in the database file.
    fn complete(&self) -> bool {
        !self.busy && self.frames == self.copied
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut wake: mpsc::Receiver<()>,
    fresh: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
) {
    while wake.recv().await.is_some() {
        let started = std::time::Instant::now();
        let outcome = Passive::run(&mut conn).await;
        tracing::debug!(
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            frames = outcome.as_ref().map_or(0, |p| p.frames),
            "store: background WAL checkpoint"
        );
        match outcome {
            Ok(p) if !p.busy => {
                frames.store(p.frames, Ordering::Release);
                fresh.store(true, Ordering::Release);
            }
            // Another checkpoint (maintenance's) held the lock: the next wake-up retries.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "store: background WAL checkpoint failed"),
        }
    }
    let _ = sqlx::Connection::close(conn).await;
}
