//! The single writer: owns the only write connection, applies waiting writes in one
//! transaction (group commit), assigns consecutive revisions, commits, then answers and publishes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{Event, EventKind, ObjectKey, Shared, StoreConfig, StoreError, StoredObject, Write};

pub(super) enum Command {
    Write(Write, oneshot::Sender<Result<StoredObject, StoreError>>),
    Maintain {
        keep: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub(super) async fn init_schema(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    for stmt in [
        "CREATE TABLE IF NOT EXISTS objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, \
         revision INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS history (revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL, \
         name TEXT NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS history_by_resource ON history (resource, revision)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0)",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await?;
    }
    Ok(())
}

pub(super) async fn load_counters(conn: &mut SqliteConnection) -> Result<(u64, u64), StoreError> {
    let rev: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revision'")
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
) {
    while let Some(first) = rx.recv().await {
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
            commit_batch(&mut conn, batch, &shared).await;
        }
        for (keep, reply) in maintenance {
            let started = std::time::Instant::now();
            let result = maintain(&mut conn, keep, &shared).await;
            tracing::debug!(
                took_ms = started.elapsed().as_secs_f64() * 1000.0,
                ok = result.is_ok(),
                "store maintenance"
            );
            let _ = reply.send(result);
        }
    }
    let _ = conn.close().await;
}

struct Applied {
    result: Result<StoredObject, StoreError>,
    event: Option<Event>,
}

async fn commit_batch(conn: &mut SqliteConnection, batch: Vec<Pending>, shared: &Shared) {
    let started = std::time::Instant::now();
    let size = batch.len();
    let start_rev = shared.revision.load(Ordering::Acquire);
    let outcome: Result<(Vec<Applied>, u64), sqlx::Error> = async {
        let mut tx = conn.begin().await?;
        let mut rev = start_rev;
        let mut applied = Vec::with_capacity(batch.len());
        let mut seen = Current {
            shared,
            batch: HashMap::new(),
        };
        for (write, _) in &batch {
            applied.push(apply(&mut tx, write, &mut rev, &mut seen).await?);
        }
        if rev != start_rev {
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'revision'")
                .bind(rev as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let took = started.elapsed();
        crate::metrics::commit(size, took);
        if took > SLOW_COMMIT {
            tracing::debug!(
                took_ms = took.as_secs_f64() * 1000.0,
                writes = size,
                "slow commit"
            );
        }
        Ok((applied, rev))
    }
    .await;
    match outcome {
        Ok((applied, rev)) => {
            // Memory first, then the revision, then the events: whoever sees an event (or
            // the new revision) can read the object.
            if let Ok(mut cache) = shared.cache.write() {
                for ev in applied.iter().filter_map(|a| a.event.as_ref()) {
                    cache.apply(ev.kind, &ev.object);
                }
                cache.revision = rev;
            }
            shared.revision.store(rev, Ordering::Release);
            for ((_, reply), a) in batch.into_iter().zip(applied) {
                if let Some(ev) = a.event {
                    // No receivers is fine: nobody is watching.
                    let _ = shared.events.send(Arc::new(ev));
                }
                let _ = reply.send(a.result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed; the batch was rolled back");
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Sqlite(sqlx::Error::Protocol(msg.clone()))));
            }
        }
    }
}

/// Every stored object (to fill the cache at start-up).
pub(super) async fn load_objects(
    conn: &mut SqliteConnection,
) -> Result<Vec<StoredObject>, sqlx::Error> {
    let rows = sqlx::query("SELECT resource, namespace, name, revision, data FROM objects")
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

async fn record(
    tx: &mut SqliteConnection,
    rev: u64,
    key: &ObjectKey,
    kind: EventKind,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO history (revision, resource, namespace, name, kind, data) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(rev as i64)
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(kind.code())
        .bind(data)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn refused(e: StoreError) -> Applied {
    Applied {
        result: Err(e),
        event: None,
    }
}

/// The current state of a key for the writer: what this batch wrote, else the committed state
/// in memory (the writer is the only writer, and memory is updated after every commit).
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

async fn apply(
    tx: &mut SqliteConnection,
    write: &Write,
    rev: &mut u64,
    seen: &mut Current<'_>,
) -> Result<Applied, sqlx::Error> {
    let applied = apply_one(tx, write, rev, seen).await?;
    if let Some(ev) = &applied.event {
        let state = match ev.kind {
            EventKind::Deleted => None,
            _ => Some((ev.object.revision, ev.object.data.clone())),
        };
        seen.batch.insert(ev.object.key.clone(), state);
    }
    Ok(applied)
}

async fn apply_one(
    tx: &mut SqliteConnection,
    write: &Write,
    rev: &mut u64,
    seen: &Current<'_>,
) -> Result<Applied, sqlx::Error> {
    match write {
        Write::Create { key, data } => {
            if seen.get(key).is_some() {
                return Ok(refused(StoreError::AlreadyExists));
            }
            *rev += 1;
            sqlx::query("INSERT INTO objects (resource, namespace, name, revision, data) VALUES (?, ?, ?, ?, ?)")
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .bind(*rev as i64)
                .bind(data.as_ref())
                .execute(&mut *tx)
                .await?;
            record(tx, *rev, key, EventKind::Added, data).await?;
            let obj = StoredObject {
                key: key.clone(),
                revision: *rev,
                data: data.clone(),
            };
            Ok(Applied {
                result: Ok(obj.clone()),
                event: Some(Event {
                    kind: EventKind::Added,
                    object: obj,
                    previous: None,
                    memo: Default::default(),
                }),
            })
        }
        Write::Update {
            key,
            data,
            precondition,
        } => {
            let Some((cur, old)) = seen.get(key) else {
                return Ok(refused(StoreError::NotFound));
            };
            if precondition.is_some_and(|p| p != cur) {
                return Ok(refused(StoreError::Conflict { current: cur }));
            }
            *rev += 1;
            sqlx::query("UPDATE objects SET revision = ?, data = ? WHERE resource = ? AND namespace = ? AND name = ?")
                .bind(*rev as i64)
                .bind(data.as_ref())
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .execute(&mut *tx)
                .await?;
            record(tx, *rev, key, EventKind::Modified, data).await?;
            let obj = StoredObject {
                key: key.clone(),
                revision: *rev,
                data: data.clone(),
            };
            Ok(Applied {
                result: Ok(obj.clone()),
                event: Some(Event {
                    kind: EventKind::Modified,
                    object: obj,
                    previous: Some(old),
                    memo: Default::default(),
                }),
            })
        }
        Write::Delete { key, precondition } => {
            let Some((cur, old)) = seen.get(key) else {
                return Ok(refused(StoreError::NotFound));
            };
            if precondition.is_some_and(|p| p != cur) {
                return Ok(refused(StoreError::Conflict { current: cur }));
            }
            *rev += 1;
            sqlx::query("DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?")
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .execute(&mut *tx)
                .await?;
            record(tx, *rev, key, EventKind::Deleted, &old).await?;
            let obj = StoredObject {
                key: key.clone(),
                revision: *rev,
                data: old.clone(),
            };
            Ok(Applied {
                result: Ok(obj.clone()),
                event: Some(Event {
                    kind: EventKind::Deleted,
                    object: obj,
                    previous: Some(old),
                    memo: Default::default(),
                }),
            })
        }
    }
}

/// Drop history older than the newest `keep` revisions, in small batches, then checkpoint the WAL.
async fn maintain(
    conn: &mut SqliteConnection,
    keep: u64,
    shared: &Shared,
) -> Result<(), StoreError> {
    let rev = shared.revision.load(Ordering::Acquire);
    let upto = rev.saturating_sub(keep);
    if upto > shared.compacted.load(Ordering::Acquire) {
        // Publish the new floor before deleting, so no watch starts from a revision being removed.
        shared.compacted.store(upto, Ordering::Release);
        loop {
            let mut tx = conn.begin().await?;
            let n = sqlx::query("DELETE FROM history WHERE revision IN (SELECT revision FROM history WHERE revision <= ? LIMIT 1000)")
                .bind(upto as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'compacted'")
                .bind(upto as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if n < 1000 {
                break;
            }
        }
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
