//! The single writer: owns the only write connection, applies waiting writes in one
//! transaction (group commit), assigns consecutive revisions, commits, then answers and publishes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpoints;
use super::{Event, EventKind, ObjectKey, Shared, StoreConfig, StoreError, StoredObject, Write};

pub(super) enum Command {
    Write(Write, oneshot::Sender<Result<StoredObject, StoreError>>),
    Maintain {
        keep: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub(super) async fn init_schema(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    // `history` holds every kept change with its bytes; `current` maps each live key to the
    // revision of its last write, whose row in `history` compaction keeps. An object's bytes are
    // so written once per change, not once into history and again into a table of objects.
    for stmt in [
        "CREATE TABLE IF NOT EXISTS history (revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL, \
         name TEXT NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS history_by_resource ON history (resource, revision)",
        "CREATE TABLE IF NOT EXISTS current (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, \
         revision INTEGER NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0)",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await?;
    }
    migrate_objects_table(conn).await
}

/// Stores written before `current` kept each live object's bytes in a table `objects`. Move
/// them over in one transaction: a live object whose history row was compacted away gets it
/// back (below the compaction floor, so no watch replays it), then `objects` is dropped.
async fn migrate_objects_table(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let old: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'objects'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if old.is_none() {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    for stmt in [
        "INSERT OR IGNORE INTO history (revision, resource, namespace, name, kind, data) \
         SELECT revision, resource, namespace, name, 1, data FROM objects",
        "INSERT OR REPLACE INTO current (resource, namespace, name, revision) \
         SELECT resource, namespace, name, revision FROM objects",
        "DROP TABLE objects",
    ] {
        sqlx::query(stmt).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!("store: moved live objects from the `objects` table into `history`");
    Ok(())
}

/// The last revision and the compaction floor. Commits do not write the revision anywhere but
/// in their `history` rows (one page fewer per commit): the last revision is the newest row, or,
/// when compaction removed that row, what compaction recorded in `meta` when it removed it.
pub(super) async fn load_counters(conn: &mut SqliteConnection) -> Result<(u64, u64), StoreError> {
    let rev: i64 = sqlx::query_scalar(
        "SELECT max((SELECT value FROM meta WHERE key = 'revision'), \
         coalesce((SELECT max(revision) FROM history), 0))",
    )
    .fetch_one(&mut *conn)
    .await?;
    let compacted: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'compacted'")
        .fetch_one(&mut *conn)
        .await?;
    Ok((rev as u64, compacted as u64))
}

/// A commit slower than this is logged (at debug level).
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(10);

type Pending = (Write, oneshot::Sender<Result<StoredObject, StoreError>>);

pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    config: StoreConfig,
    mut checkpoints: Checkpoints,
) {
    let mut compaction = Compaction {
        durable: shared.compacted.load(Ordering::Acquire),
        upto: None,
        waiting: Vec::new(),
        started: std::time::Instant::now(),
    };
    loop {
        // While a compaction runs, take what is waiting without blocking; otherwise sleep
        // until a command comes.
        let first = if compaction.busy() {
            match rx.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.recv().await {
                Some(cmd) => Some(cmd),
                None => break,
            }
        };
        if let Some(first) = first {
            let mut batch: Vec<Pending> = Vec::new();
            let mut maintenance = Vec::new();
            let mut push = |cmd: Command, batch: &mut Vec<Pending>| match cmd {
                Command::Write(w, r) => batch.push((w, r)),
                Command::Maintain { keep, reply } => maintenance.push((keep, reply)),
            };
            push(first, &mut batch);
            while batch.len() < config.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => push(cmd, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let written = commit_batch(&mut conn, batch, &shared, compaction.durable).await;
                checkpoints.committed(&mut conn, written).await;
            }
            for (keep, reply) in maintenance {
                compaction.request(keep, reply, &shared);
            }
        }
        // One window per turn: writes wait behind one window at most, never a whole compaction.
        compaction
            .step(&mut conn, shared.revision.load(Ordering::Acquire))
            .await;
    }
    let _ = conn.close().await;
}

/// Revisions compaction looks at per transaction.
const COMPACT_WINDOW: u64 = 1_000;

/// History compaction, done a window at a time between write batches. Each window is one
/// transaction that deletes the rows in it no live object needs (a live object's last write,
/// named in `current`, stays) and moves the floor on disk; a crash midway leaves the rest for
/// the next run. The floor in memory moves first, to the target, so no watch starts from a
/// revision being removed.
struct Compaction {
    /// The floor on disk: every row at or below it is either compacted or live.
    durable: u64,
    /// Where the running compaction goes, if one runs.
    upto: Option<u64>,
    /// Who asked, answered when it ends (after a WAL checkpoint).
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
    started: std::time::Instant,
}

impl Compaction {
    fn busy(&self) -> bool {
        self.upto.is_some() || !self.waiting.is_empty()
    }

    /// Ask for history older than the newest `keep` revisions to go. A request that comes while
    /// one runs is answered when that one ends.
    fn request(
        &mut self,
        keep: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
        shared: &Shared,
    ) {
        if !self.busy() {
            self.started = std::time::Instant::now();
            let upto = shared.revision.load(Ordering::Acquire).saturating_sub(keep);
            if upto > self.durable {
                shared.compacted.fetch_max(upto, Ordering::AcqRel);
                self.upto = Some(upto);
            }
        }
        self.waiting.push(reply);
    }

    /// Compact one window; when the target is reached, checkpoint the WAL and answer.
    /// `revision`: the last committed one, recorded with each window (see [`load_counters`]).
    async fn step(&mut self, conn: &mut SqliteConnection, revision: u64) {
        if !self.busy() {
            return;
        }
        let result = match self.upto {
            Some(upto) if self.durable < upto => {
                let hi = upto.min(self.durable + COMPACT_WINDOW);
                match compact_window(conn, self.durable, hi, revision).await {
                    Ok(()) => {
                        self.durable = hi;
                        if hi < upto {
                            return;
                        }
                        checkpoint(conn).await
                    }
                    Err(e) => Err(e),
                }
            }
            _ => checkpoint(conn).await,
        };
        tracing::debug!(
            took_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            ok = result.is_ok(),
            "store maintenance"
        );
        self.upto = None;
        let msg = result.as_ref().err().map(ToString::to_string);
        for reply in self.waiting.drain(..) {
            let _ = reply.send(match &msg {
                None => Ok(()),
                Some(m) => Err(StoreError::Sqlite(sqlx::Error::Protocol(m.clone()))),
            });
        }
    }
}

/// Delete the rows in (lo, hi] that are not a live object's bytes, and record hi as the floor
/// and `revision`, the last committed one, which a deleted row may have been.
async fn compact_window(
    conn: &mut SqliteConnection,
    lo: u64,
    hi: u64,
    revision: u64,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "DELETE FROM history WHERE revision > ? AND revision <= ? AND NOT EXISTS \
         (SELECT 1 FROM current c WHERE c.resource = history.resource \
         AND c.namespace = history.namespace AND c.name = history.name \
         AND c.revision = history.revision)",
    )
    .bind(lo as i64)
    .bind(hi as i64)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE meta SET value = ? WHERE key = 'compacted'")
        .bind(hi as i64)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE meta SET value = max(value, ?) WHERE key = 'revision'")
        .bind(revision as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn checkpoint(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

struct Applied {
    result: Result<StoredObject, StoreError>,
    /// Its events: one per write (several for a transaction), none when refused.
    events: Vec<Event>,
    /// The revisions of the states updates or deletions replaced: their rows in `history` are no
    /// longer anyone's current bytes.
    replaced: Vec<u64>,
}

/// `floor`: the compaction floor on disk (rows at or below it that a write replaces are deleted
/// with it; rows above are left to compaction). Returns the bytes of the objects it stored.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: Vec<Pending>,
    shared: &Shared,
    floor: u64,
) -> u64 {
    let started = std::time::Instant::now();
    let size = batch.len();
    let start_rev = shared.revision.load(Ordering::Acquire);
    // Every write is decided in memory first (this is the only writer, and memory holds the
    // committed state); the batch then reaches SQLite as a few multi-row statements.
    let mut rev = start_rev;
    let mut seen = Current {
        shared,
        batch: HashMap::new(),
    };
    let applied: Vec<Applied> = batch
        .iter()
        .map(|(write, _)| apply(write, &mut rev, &mut seen))
        .collect();
    let outcome: Result<(), sqlx::Error> = async {
        if rev == start_rev {
            // Every write was refused: nothing to store.
            return Ok(());
        }
        persist(conn, &applied, &seen.batch, floor).await?;
        let took = started.elapsed();
        crate::metrics::commit(size, took);
        if took > SLOW_COMMIT {
            tracing::debug!(
                took_ms = took.as_secs_f64() * 1000.0,
                writes = size,
                "slow commit"
            );
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            let written = applied
                .iter()
                .flat_map(|a| a.events.iter())
                .map(|ev| ev.object.data.len() as u64)
                .sum();
            // Memory first, then the revision, then the events: whoever sees an event (or
            // the new revision) can read the object.
            if let Ok(mut cache) = shared.cache.write() {
                for ev in applied.iter().flat_map(|a| a.events.iter()) {
                    cache.apply(ev.kind, &ev.object);
                }
                cache.revision = rev;
            }
            shared.revision.store(rev, Ordering::Release);
            for ((_, reply), a) in batch.into_iter().zip(applied) {
                for ev in a.events {
                    // No receivers is fine: nobody is watching.
                    let _ = shared.events.send(Arc::new(ev));
                }
                let _ = reply.send(a.result);
            }
            written
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed; the batch was rolled back");
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Sqlite(sqlx::Error::Protocol(msg.clone()))));
            }
            0
        }
    }
}

/// Rows a multi-row statement carries at most (SQLite allows 32,766 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// Store a decided batch in one transaction: every event in `history` (with its bytes), the
/// final revision of every key it touched in `current` (a key written twice in one batch is
/// stored once; a deleted key leaves it). The new revision is its newest `history` row.
///
/// The whole transaction, `BEGIN` to `COMMIT`, is one multi-statement query: one hand-off to
/// SQLite's thread per batch instead of one per statement, so a commit costs the statements and
/// the WAL's sync, not a string of thread wake-ups. When a statement fails the transaction is
/// rolled back before the error is returned.
async fn persist(
    conn: &mut SqliteConnection,
    applied: &[Applied],
    finals: &HashMap<ObjectKey, Option<(u64, Bytes)>>,
    floor: u64,
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("BEGIN");
    // Compaction has passed these rows and kept them as live objects' bytes; now replaced,
    // they go here (rows above the floor go when compaction reaches them).
    let stale: Vec<i64> = applied
        .iter()
        .flat_map(|a| a.replaced.iter().copied())
        .filter(|r| *r <= floor)
        .map(|r| r as i64)
        .collect();
    for rows in stale.chunks(ROWS_PER_STATEMENT) {
        q.push("; DELETE FROM history WHERE revision IN (");
        let mut list = q.separated(", ");
        for r in rows {
            list.push_bind(*r);
        }
        q.push(")");
    }
    let events: Vec<&Event> = applied.iter().flat_map(|a| a.events.iter()).collect();
    for rows in events.chunks(ROWS_PER_STATEMENT) {
        q.push("; INSERT INTO history (revision, resource, namespace, name, kind, data) ");
        q.push_values(rows, |mut b, ev| {
            let key = &ev.object.key;
            b.push_bind(ev.object.revision as i64)
                .push_bind(key.resource.as_str())
                .push_bind(key.namespace.as_str())
                .push_bind(key.name.as_str())
                .push_bind(ev.kind.code())
                .push_bind(ev.object.data.as_ref());
        });
    }
    let live: Vec<(&ObjectKey, u64)> = finals
        .iter()
        .filter_map(|(key, state)| state.as_ref().map(|(r, _)| (key, *r)))
        .collect();
    for rows in live.chunks(ROWS_PER_STATEMENT) {
        q.push("; INSERT INTO current (resource, namespace, name, revision) ");
        q.push_values(rows, |mut b, (key, revision)| {
            b.push_bind(key.resource.as_str())
                .push_bind(key.namespace.as_str())
                .push_bind(key.name.as_str())
                .push_bind(*revision as i64);
        });
        q.push(
            " ON CONFLICT (resource, namespace, name) DO UPDATE SET revision = excluded.revision",
        );
    }
    let gone: Vec<&ObjectKey> = finals
        .iter()
        .filter_map(|(key, state)| state.is_none().then_some(key))
        .collect();
    for rows in gone.chunks(ROWS_PER_STATEMENT) {
        q.push("; DELETE FROM current WHERE (resource, namespace, name) IN ");
        q.push_tuples(rows, |mut b, key| {
            b.push_bind(key.resource.as_str())
                .push_bind(key.namespace.as_str())
                .push_bind(key.name.as_str());
        });
    }
    q.push("; COMMIT");
    if let Err(e) = q.build().execute(&mut *conn).await {
        // Undo what ran; when the failure was COMMIT's own, SQLite may have rolled back already
        // and this one says so, which changes nothing.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e);
    }
    Ok(())
}

/// Every stored object (to fill the cache at start-up).
pub(super) async fn load_objects(
    conn: &mut SqliteConnection,
) -> Result<Vec<StoredObject>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.resource, c.namespace, c.name, c.revision, h.data FROM current c \
         JOIN history h ON h.revision = c.revision",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredObject {
            key: ObjectKey {
                resource: r.get(0),
                namespace: r.get(1),
                name: r.get(2),
            },
            revision: r.get::<i64, _>(3) as u64,
            data: Bytes::from(r.get::<Vec<u8>, _>(4)),
        })
        .collect())
}

fn refused(e: StoreError) -> Applied {
    Applied {
        result: Err(e),
        events: Vec::new(),
        replaced: Vec::new(),
    }
}

/// The current state of a key for the writer: what this batch wrote, else the committed state
/// in memory (the writer is the only writer, and memory is updated after every commit).
/// A key's state as the writer sees it: its revision and bytes, or None when absent.
type KeyState = Option<(u64, Bytes)>;

struct Current<'a> {
    shared: &'a Shared,
    batch: HashMap<ObjectKey, Option<(u64, Bytes)>>,
}

impl Current<'_> {
    fn get(&self, key: &ObjectKey) -> Option<(u64, Bytes)> {
        match self.batch.get(key) {
            Some(v) => v.clone(),
            None => self
                .shared
                .cache
                .read()
                .ok()?
                .get(key)
                .map(|o| (o.revision, o.data)),
        }
    }
}

/// Decide one write against the current state: its result and its events (none if refused).
/// A transaction is decided write by write and, when one is refused, undone as a whole.
fn apply(write: &Write, rev: &mut u64, seen: &mut Current<'_>) -> Applied {
    let Write::Txn(writes) = write else {
        let applied = apply_one(write, rev, seen);
        record(&applied, seen);
        return applied;
    };
    let start = *rev;
    // Each key's state in the batch before the transaction touched it (None: not in it).
    let mut undo: Vec<(ObjectKey, Option<KeyState>)> = Vec::new();
    let mut out = Applied {
        result: Err(StoreError::Refused {
            index: 0,
            source: Box::new(StoreError::NotFound),
        }),
        events: Vec::new(),
        replaced: Vec::new(),
    };
    for (index, w) in writes.iter().enumerate() {
        let applied = match w {
            Write::Txn(_) => refused(StoreError::Transform(
                "a transaction may not hold another".into(),
            )),
            w => apply_one(w, rev, seen),
        };
        if let Err(e) = applied.result {
            *rev = start;
            for (key, before) in undo.into_iter().rev() {
                match before {
                    Some(state) => seen.batch.insert(key, state),
                    None => seen.batch.remove(&key),
                };
            }
            return refused(StoreError::Refused {
                index,
                source: Box::new(e),
            });
        }
        for ev in &applied.events {
            undo.push((
                ev.object.key.clone(),
                seen.batch.get(&ev.object.key).cloned(),
            ));
        }
        record(&applied, seen);
        if index == 0 {
            out.result = applied.result;
        }
        out.events.extend(applied.events);
        out.replaced.extend(applied.replaced);
    }
    out
}

/// What an applied write leaves as the current state of its keys, for the writes after it.
fn record(applied: &Applied, seen: &mut Current<'_>) {
    for ev in &applied.events {
        let state = match ev.kind {
            EventKind::Deleted => None,
            _ => Some((ev.object.revision, ev.object.data.clone())),
        };
        seen.batch.insert(ev.object.key.clone(), state);
    }
}

fn apply_one(write: &Write, rev: &mut u64, seen: &Current<'_>) -> Applied {
    // The current state of a key that must exist, with the write's precondition checked.
    let current = |key: &ObjectKey, precondition: &Option<u64>| {
        let (cur, old) = seen.get(key).ok_or(StoreError::NotFound)?;
        match precondition {
            Some(p) if *p != cur => Err(StoreError::Conflict { current: cur }),
            _ => Ok((cur, old)),
        }
    };
    let decided = match write {
        Write::Create { key, data } => match seen.get(key) {
            Some(_) => Err(StoreError::AlreadyExists),
            None => Ok((key, EventKind::Added, data.clone(), None, None)),
        },
        Write::Update {
            key,
            data,
            precondition,
        } => current(key, precondition)
            .map(|(cur, old)| (key, EventKind::Modified, data.clone(), Some(old), Some(cur))),
        // A deletion's event carries the last state.
        Write::Delete { key, precondition } => current(key, precondition)
            .map(|(cur, old)| (key, EventKind::Deleted, old.clone(), Some(old), Some(cur))),
        Write::Release { key } => match seen.get(key) {
            Some((cur, old)) => Ok((key, EventKind::Deleted, old.clone(), Some(old), Some(cur))),
            // Nothing to release: a write with no event.
            None => {
                return Applied {
                    result: Ok(StoredObject {
                        key: key.clone(),
                        revision: *rev,
                        data: Bytes::new(),
                    }),
                    events: Vec::new(),
                    replaced: Vec::new(),
                }
            }
        },
        Write::Txn(_) => Err(StoreError::Transform(
            "a transaction is decided by apply".into(),
        )),
    };
    let (key, kind, data, previous, replaced) = match decided {
        Ok(d) => d,
        Err(e) => return refused(e),
    };
    *rev += 1;
    let object = StoredObject {
        key: key.clone(),
        revision: *rev,
        data,
    };
    Applied {
        result: Ok(object.clone()),
        events: vec![Event {
            kind,
            object,
            previous,
            memo: Default::default(),
        }],
        replaced: replaced.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EventKind, ObjectKey, Store, StoreConfig, StoreError, Write};
    use bytes::Bytes;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("pods", "default", name)
    }

    fn data(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn create(n: &str, d: &str) -> Write {
        Write::Create {
            key: key(n),
            data: data(d),
        }
    }

    fn update(n: &str, d: &str, precondition: Option<u64>) -> Write {
        Write::Update {
            key: key(n),
            data: data(d),
            precondition,
        }
    }

    fn delete(n: &str) -> Write {
        Write::Delete {
            key: key(n),
            precondition: None,
        }
    }

    /// One batch with every kind of write, refusals, and a key written several times: each write
    /// gets its answer and revision, and a store opened again on the file finds the final
    /// objects and every event in order.
    #[tokio::test]
    async fn a_batch_is_decided_in_order_and_stored_as_its_final_state() {
        let (dir, path) = temp_store_path("batch");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let writes = vec![
            create("a", "a1"),
            update("a", "a2", Some(1)),
            delete("b"),
            create("b", "b1"),
            delete("b"),
            create("c", "c1"),
            create("c", "c2"),
            update("c", "c3", Some(999)),
            update("missing", "x", None),
        ];
        // Sent together on one thread, they reach the writer as one batch.
        let results = futures::future::join_all(writes.into_iter().map(|w| store.write(w))).await;
        let got: Vec<Result<u64, String>> = results
            .into_iter()
            .map(|r| r.map(|o| o.revision).map_err(|e| format!("{e:?}")))
            .collect();
        let expected: Vec<Result<u64, String>> = vec![
            Ok(1),
            Ok(2),
            Err(format!("{:?}", StoreError::NotFound)),
            Ok(3),
            Ok(4),
            Ok(5),
            Err(format!("{:?}", StoreError::AlreadyExists)),
            Err(format!("{:?}", StoreError::Conflict { current: 5 })),
            Err(format!("{:?}", StoreError::NotFound)),
        ];
        assert_eq!(got, expected);

        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(again.revision(), 5);
        let listed: Vec<(String, u64, Bytes)> = again
            .list("pods", None)
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| (o.key.name, o.revision, o.data))
            .collect();
        assert_eq!(
            listed,
            vec![("a".into(), 2, data("a2")), ("c".into(), 5, data("c1"))]
        );
        let mut watch = again.watch_all(0).await.unwrap();
        let mut events = Vec::new();
        for _ in 0..5 {
            let ev = watch.next().await.unwrap();
            events.push((
                ev.kind,
                ev.object.key.name.clone(),
                ev.object.revision,
                ev.object.data.clone(),
            ));
        }
        assert_eq!(
            events,
            vec![
                (EventKind::Added, "a".into(), 1, data("a1")),
                (EventKind::Modified, "a".into(), 2, data("a2")),
                (EventKind::Added, "b".into(), 3, data("b1")),
                (EventKind::Deleted, "b".into(), 4, data("b1")),
                (EventKind::Added, "c".into(), 5, data("c1")),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A transaction is all or nothing, inside a batch too: a refused write undoes the writes
    /// before it (in memory, on disk and in the events), and later writes of the batch see the
    /// state as if the transaction had never been sent.
    #[tokio::test]
    async fn a_transaction_is_all_or_nothing() {
        let (dir, path) = temp_store_path("txn");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let writes = vec![
            create("taken", "t1"),
            // Refused at its second write: "x" must not appear.
            Write::Txn(vec![create("x", "x1"), create("taken", "t2")]),
            create("x", "x2"),
            Write::Txn(vec![
                create("y", "y1"),
                update("taken", "t3", Some(1)),
                Write::Release {
                    key: key("never-there"),
                },
            ]),
            Write::Txn(vec![delete("y"), Write::Release { key: key("taken") }]),
        ];
        let results = futures::future::join_all(writes.into_iter().map(|w| store.write(w))).await;
        let got: Vec<Result<u64, String>> = results
            .into_iter()
            .map(|r| r.map(|o| o.revision).map_err(|e| format!("{e:?}")))
            .collect();
        let refused = StoreError::Refused {
            index: 1,
            source: Box::new(StoreError::AlreadyExists),
        };
        assert_eq!(
            got,
            vec![Ok(1), Err(format!("{refused:?}")), Ok(2), Ok(3), Ok(5)]
        );
        let names: Vec<(String, u64)> = store
            .list("pods", None)
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| (o.key.name, o.revision))
            .collect();
        assert_eq!(names, vec![("x".into(), 2)]);
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(again.revision(), 6);
        let mut watch = again.watch_all(0).await.unwrap();
        let mut events = Vec::new();
        for _ in 0..6 {
            let ev = watch.next().await.unwrap();
            events.push((ev.kind, ev.object.key.name.clone(), ev.object.revision));
        }
        assert_eq!(
            events,
            vec![
                (EventKind::Added, "taken".into(), 1),
                (EventKind::Added, "x".into(), 2),
                (EventKind::Added, "y".into(), 3),
                (EventKind::Modified, "taken".into(), 4),
                (EventKind::Deleted, "y".into(), 5),
                (EventKind::Deleted, "taken".into(), 6),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_store_path(what: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "skiff-writer-{what}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let path = dir.join("store.db");
        (dir, path)
    }

    async fn history_revisions(path: &std::path::Path) -> Vec<i64> {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT revision FROM history ORDER BY revision")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }

    async fn names_and_data(store: &Store) -> Vec<(String, u64, Bytes)> {
        store
            .list("pods", None)
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| (o.key.name, o.revision, o.data))
            .collect()
    }

    /// Compaction drops old history but keeps the row that holds each live object's bytes; a
    /// later write that replaces such a row removes it; a store opened again finds every object.
    #[tokio::test]
    async fn compaction_keeps_the_bytes_of_live_objects() {
        let (dir, path) = temp_store_path("compact");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        for w in [
            create("a", "a1"),       // 1
            create("b", "b1"),       // 2
            update("b", "b2", None), // 3
            create("c", "c1"),       // 4
            delete("c"),             // 5
            update("b", "b3", None), // 6
        ] {
            store.write(w).await.unwrap();
        }
        store.maintain(1).await.unwrap();
        assert_eq!(store.compacted(), 5);
        // 1 is a's live row, 6 is above the floor; 2-5 are gone.
        assert_eq!(history_revisions(&path).await, vec![1, 6]);
        assert!(matches!(
            store.watch("pods", 4).await.err(),
            Some(StoreError::Gone { .. })
        ));
        // Replacing a's row below the floor removes it; a's new row stays.
        store.write(update("a", "a2", Some(1))).await.unwrap(); // 7
        assert_eq!(history_revisions(&path).await, vec![6, 7]);
        drop(store);
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(again.compacted(), 5);
        assert_eq!(
            names_and_data(&again).await,
            vec![("a".into(), 7, data("a2")), ("b".into(), 6, data("b3"))]
        );
        // Deleting an object whose row is below the floor removes the row.
        again.maintain(0).await.unwrap();
        assert_eq!(history_revisions(&path).await, vec![6, 7]);
        again.write(delete("b")).await.unwrap(); // 8
        assert_eq!(history_revisions(&path).await, vec![7, 8]);
        // Compaction removes the newest row (8, a deletion): opened again, the store still
        // knows 8 was used, and the next write gets 9, never 8 again.
        again.maintain(0).await.unwrap();
        assert_eq!(history_revisions(&path).await, vec![7]);
        drop(again);
        let third = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(third.revision(), 8);
        assert_eq!(third.write(create("d", "d1")).await.unwrap().revision, 9);
        drop(third);
        // Commits do not record the revision: opened again, it is the newest row's.
        let fourth = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(fourth.revision(), 9);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch whose transaction fails midway (here a trigger refuses one row) is rolled back
    /// whole: its writes get the error, nothing of it is stored or cached, and the next batch
    /// commits on a connection with no transaction left open.
    #[tokio::test]
    async fn a_failed_commit_is_rolled_back_and_the_next_one_commits() {
        use sqlx::Connection;
        let (dir, path) = temp_store_path("rollback");
        drop(Store::open(&path, StoreConfig::default()).await.unwrap());
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON current WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let err = store.write(create("boom", "x")).await.unwrap_err();
        assert!(err.to_string().contains("refused by the test"), "{err}");
        assert!(store.get(&key("boom")).await.is_err());
        assert_eq!(store.revision(), 0);
        assert_eq!(store.write(create("ok", "y")).await.unwrap().revision, 1);
        drop(store);
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(history_revisions(&path).await, vec![1]);
        assert_eq!(
            names_and_data(&again).await,
            vec![("ok".into(), 1, data("y"))]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under a steady stream of writes (no pause for a checkpoint to catch up), the WAL still
    /// starts over: 48 MiB written leave a WAL file far shorter than that, and every object
    /// is there when the store is opened again.
    #[tokio::test]
    async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
        let (dir, path) = temp_store_path("wal");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let value = "v".repeat(256 << 10);
        for i in 0..192 {
            store.write(create(&format!("o{i}"), &value)).await.unwrap();
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_len = std::fs::metadata(&wal).unwrap().len();
        assert!(wal_len < 32 << 20, "the WAL grew to {wal_len} bytes");
        drop(store);
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(again.revision(), 192);
        assert_eq!(again.list("pods", None).await.unwrap().objects.len(), 192);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store written before `current` existed (live bytes in `objects`, some of their history
    /// rows compacted away) opens with every object, and its history still serves watches.
    #[tokio::test]
    async fn a_store_with_an_objects_table_is_migrated() {
        use sqlx::Connection;
        let (dir, path) = temp_store_path("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        for stmt in [
            "CREATE TABLE objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, \
             revision INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID",
            "CREATE TABLE history (revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL, \
             name TEXT NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL)",
            "CREATE INDEX history_by_resource ON history (resource, revision)",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO meta (key, value) VALUES ('revision', 4), ('compacted', 2)",
            // a was created at 1 (compacted away), b at 3 and updated at 4.
            "INSERT INTO objects VALUES ('pods', 'default', 'a', 1, 'a1'), ('pods', 'default', 'b', 4, 'b2')",
            "INSERT INTO history VALUES (3, 'pods', 'default', 'b', 0, 'b1'), (4, 'pods', 'default', 'b', 1, 'b2')",
        ] {
            sqlx::query(stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();

        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!((store.revision(), store.compacted()), (4, 2));
        assert_eq!(
            names_and_data(&store).await,
            vec![("a".into(), 1, data("a1")), ("b".into(), 4, data("b2"))]
        );
        let mut watch = store.watch("pods", 2).await.unwrap();
        let first = watch.next().await.unwrap();
        assert_eq!(
            (first.object.revision, first.object.data.clone()),
            (3, data("b1"))
        );
        drop(store);
        // Opened again: nothing is migrated twice, nothing lost.
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        assert_eq!(names_and_data(&again).await.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writes go on while a compaction of many windows runs (it yields to them between
    /// windows): every write is answered, and afterwards history holds exactly the live
    /// objects' rows at or below the floor and everything above it.
    #[tokio::test]
    async fn writes_interleave_with_a_long_compaction() {
        let (dir, path) = temp_store_path("interleave");
        let store = Store::open(&path, StoreConfig::default()).await.unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        for n in &names {
            store.write(create(n, "0")).await.unwrap();
        }
        // 5,000 more revisions: five windows of compaction.
        for round in 1..=500 {
            let writes = names
                .iter()
                .map(|n| store.write(update(n, &round.to_string(), None)));
            for r in futures::future::join_all(writes).await {
                r.unwrap();
            }
        }
        let floor_target = store.revision();
        let compacting = store.maintain(0);
        let more = async {
            for round in 501..=520 {
                for n in &names {
                    store
                        .write(update(n, &round.to_string(), None))
                        .await
                        .unwrap();
                }
            }
        };
        let (compacted, ()) = futures::join!(compacting, more);
        compacted.unwrap();
        assert!(store.compacted() >= floor_target);
        let floor = store.compacted() as i64;
        let live: Vec<i64> = store
            .list("pods", None)
            .await
            .unwrap()
            .objects
            .iter()
            .map(|o| o.revision as i64)
            .collect();
        let rows = history_revisions(&path).await;
        let expected: Vec<i64> = rows
            .iter()
            .copied()
            .filter(|r| *r > floor || live.contains(r))
            .collect();
        assert_eq!(rows, expected, "rows below the floor that are not live");
        assert!(rows.iter().filter(|r| **r > floor).count() <= 200);
        let again = Store::open(&path, StoreConfig::default()).await.unwrap();
        let got: Vec<Bytes> = again
            .list("pods", None)
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| o.data)
            .collect();
        assert_eq!(got, vec![data("520"); 10]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
