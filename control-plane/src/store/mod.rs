//! The cluster store: objects as bytes in SQLite (WAL mode), every write serialized through one
//! writer task with group commit, a global revision (`resourceVersion`), a history table that
//! lets watches resume, and an in-memory hub that fans committed events out to watchers.
//!
//! `etcd` is the other backend of the same [`Storage`] trait (`--datastore-endpoint`).
//!
//! Invariants: this and `crate::snapshot` are the only modules that import sqlx (and `etcd` the
//! only one that imports etcd-client); a write is answered only after its
//! transaction committed with `synchronous=FULL`; revisions are consecutive and never reused;
//! events are published in revision order, after commit; the `history` row of each live object's
//! last write is never compacted (it holds the object's bytes). Objects are opaque bytes here: the API
//! layer owns their meaning (and writes `metadata.resourceVersion` into them when serving).

mod backend;
mod cache;
mod cacher;
mod checkpoint;
#[cfg(test)]
mod conformance;
mod encryption;
pub mod etcd;
mod writer;

pub use backend::{EventStream, Storage};
pub use cacher::Cached;
pub use encryption::{Encrypted, EncryptionConfig, EncryptionError};

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Errors of the store. `Conflict`, `AlreadyExists` and `NotFound` are answers about the data;
/// `Gone` asks the client to relist; `Sqlite` and `Closed` are internal and not retryable here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under that key.
    #[error("not found")]
    NotFound,
    /// An object already exists under that key.
    #[error("already exists")]
    AlreadyExists,
    /// The precondition's revision is not the object's current one.
    #[error("the object has been modified (current revision {current})")]
    Conflict {
        /// The object's current revision.
        current: u64,
    },
    /// The requested revision was compacted away.
    #[error("too old resource version: {requested} ({compacted})")]
    Gone {
        /// What the client asked for.
        requested: u64,
        /// The oldest revision a watch can start from.
        compacted: u64,
    },
    /// SQLite failed.
    #[error("storage error: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// The writer task has stopped.
    #[error("the store is shutting down")]
    Closed,
    /// Could not create the data directory.
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// A value could not be encrypted or decrypted (encryption at rest), or a write was malformed.
    #[error("{0}")]
    Transform(String),
    /// etcd failed or could not be reached.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A write of a transaction was refused, so none of them was made.
    #[error("write {index} of the transaction: {source}")]
    Refused {
        /// Which write (from 0).
        index: usize,
        /// Why it was refused.
        source: Box<StoreError>,
    },
}

/// Identity of a stored object. `resource` is `group/plural` (`plural` for the core group).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `group/plural`, or `plural` in the core group.
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Build a key.
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// An object as stored: its bytes and the revision that last wrote it.
#[derive(Clone, Debug)]
pub struct StoredObject {
    /// Where it lives.
    pub key: ObjectKey,
    /// Revision of the last write.
    pub revision: u64,
    /// The object's bytes (JSON for API objects).
    pub data: Bytes,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted (the event carries the last state).
    Deleted,
}

impl EventKind {
    fn code(self) -> i64 {
        match self {
            EventKind::Added => 0,
            EventKind::Modified => 1,
            EventKind::Deleted => 2,
        }
    }
    fn from_code(c: i64) -> Self {
        match c {
            0 => EventKind::Added,
            1 => EventKind::Modified,
            _ => EventKind::Deleted,
        }
    }
}

/// A committed change. `object.revision` is the revision of this change (for a deletion too).
#[derive(Clone, Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (the last state for a deletion).
    pub object: StoredObject,
    /// The object before the change, when the change was seen live (not replayed from history).
    pub previous: Option<Bytes>,
    /// A slot for one encoded form of this event, filled by the first watcher that encodes it
    /// and reused by every other watcher of the event (as kube-apiserver's `cachingObject`).
    /// The store never reads it.
    pub memo: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// One write request.
#[derive(Debug)]
pub enum Write {
    /// Create; fails with `AlreadyExists`.
    Create { key: ObjectKey, data: Bytes },
    /// Replace; fails with `NotFound`, or `Conflict` when `precondition` is not the current revision.
    Update {
        key: ObjectKey,
        data: Bytes,
        precondition: Option<u64>,
    },
    /// Delete; fails with `NotFound`, or `Conflict` when `precondition` is not the current revision.
    Delete {
        key: ObjectKey,
        precondition: Option<u64>,
    },
    /// Delete when present; nothing happens (and nothing is published) when absent. For
    /// claims that a transaction gives up and that may never have been written.
    Release { key: ObjectKey },
    /// Every write or none, decided in order (each sees the ones before it) and committed
    /// together, each with its own revision; answered with the first write's result, or
    /// `Refused` naming the write that was refused. Not nested.
    Txn(Vec<Write>),
}

/// Tuning of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// History entries kept for watches to resume from.
    pub history_keep: u64,
    /// How often compaction and WAL checkpoints run.
    pub maintenance_every: Duration,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_keep: 50_000,
            maintenance_every: Duration::from_secs(30),
            max_batch: 512,
        }
    }
}

struct Shared {
    reader: SqlitePool,
    /// Current objects, updated after each commit (see [`cache`]).
    cache: std::sync::RwLock<cache::Cache>,
    events: broadcast::Sender<Arc<Event>>,
    /// Last committed revision.
    revision: AtomicU64,
    /// Highest revision removed from history; watches must start after it.
    compacted: AtomicU64,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writes: mpsc::Sender<writer::Command>,
}

/// Result of a consistent list.
pub struct Listing {
    /// The objects, ordered by namespace and name.
    pub objects: Vec<StoredObject>,
    /// The revision the list was read at.
    pub revision: u64,
}

/// The database and its WAL and shared-memory files hold every Secret: mode 0600. The database
/// is created here with that mode (SQLite gives its WAL and SHM files the database's mode), and
/// files from before this rule are tightened.
fn restrict_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

impl Store {
    /// Open (or create) the store at `path` and start its writer task.
    pub async fn open(path: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        restrict_files(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // Pages the writer keeps in memory (negative: KiB). SQLite's default, 2 MiB, is far
            // below a cluster's working set, so each upsert of a pod re-read its pages (pread,
            // ~6 % of the server's CPU while a backlog was bound; ~2 % with this).
            .pragma("cache_size", "-65536")
            // The writer never checkpoints in a commit: the checkpointer does, beside it.
            .pragma("wal_autocheckpoint", "0");
        let mut conn = sqlx::ConnectOptions::connect(&options).await?;
        writer::init_schema(&mut conn).await?;
        let checkpoints = checkpoint::Checkpoints::start(
            sqlx::ConnectOptions::connect(&options.clone().pragma("cache_size", "-2000")).await?,
        );
        let (revision, compacted) = writer::load_counters(&mut conn).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            // Readers only serve history (a watch resuming from an old revision): SQLite's
            // default cache, so four of them never hold more than a few MiB.
            .connect_with(options.read_only(true).pragma("cache_size", "-2000"))
            .await?;
        let (events, _) = broadcast::channel(16_384);
        let mut snapshot = cache::Cache::default();
        snapshot.revision = revision;
        for obj in writer::load_objects(&mut conn).await? {
            snapshot.put(&obj);
        }
        let shared = Arc::new(Shared {
            cache: std::sync::RwLock::new(snapshot),
            reader,
            events,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
        });
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer::run(
            conn,
            rx,
            shared.clone(),
            config.clone(),
            checkpoints,
        ));
        let store = Store { shared, writes: tx };
        let maint = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.maintenance_every);
            loop {
                tick.tick().await;
                if maint.maintain(config.history_keep).await.is_err() {
                    break;
                }
            }
        });
        Ok(store)
    }

    /// The compaction floor: revisions below it are no longer in the history.
    pub fn compacted(&self) -> u64 {
        self.shared.compacted.load(Ordering::Acquire)
    }

    /// The latest committed revision.
    pub fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Apply one write; answered after commit.
    pub async fn write(&self, write: Write) -> Result<StoredObject, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(writer::Command::Write(write, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Compact history down to `keep` entries and checkpoint the WAL.
    pub async fn maintain(&self, keep: u64) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(writer::Command::Maintain { keep, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Read one object (from memory).
    pub async fn get(&self, key: &ObjectKey) -> Result<StoredObject, StoreError> {
        let cache = self.shared.cache.read().map_err(|_| StoreError::Closed)?;
        cache.get(key).ok_or(StoreError::NotFound)
    }

    /// List the objects of `resource` (in `namespace` when given) at one consistent revision
    /// (from memory; never blocks writers for longer than copying the references).
    pub async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<Listing, StoreError> {
        let cache = self.shared.cache.read().map_err(|_| StoreError::Closed)?;
        Ok(Listing {
            objects: cache.list(resource, namespace),
            revision: cache.revision,
        })
    }

    /// Every object at one consistent revision (from memory).
    pub async fn list_all(&self) -> Result<Listing, StoreError> {
        let cache = self.shared.cache.read().map_err(|_| StoreError::Closed)?;
        Ok(Listing {
            objects: cache.all(),
            revision: cache.revision,
        })
    }

    /// Watch `resource` for changes after revision `from`.
    pub async fn watch(&self, resource: &str, from: u64) -> Result<Watch, StoreError> {
        self.watch_from(Some(resource), from).await
    }

    /// Watch every resource for changes after revision `from` (the garbage collector's view).
    pub async fn watch_all(&self, from: u64) -> Result<Watch, StoreError> {
        self.watch_from(None, from).await
    }

    async fn watch_from(&self, resource: Option<&str>, from: u64) -> Result<Watch, StoreError> {
        // Subscribe first, then read the backlog, so nothing committed in between is missed.
        let live = self.shared.events.subscribe();
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if from < compacted {
            return Err(StoreError::Gone {
                requested: from,
                compacted,
            });
        }
        let rows = match resource {
            Some(resource) => {
                sqlx::query(
                    "SELECT revision, namespace, name, kind, data, resource FROM history WHERE resource = ? AND revision > ? ORDER BY revision",
                )
                .bind(resource)
                .bind(from as i64)
                .fetch_all(&self.shared.reader)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT revision, namespace, name, kind, data, resource FROM history WHERE revision > ? ORDER BY revision",
                )
                .bind(from as i64)
                .fetch_all(&self.shared.reader)
                .await?
            }
        };
        // Compaction may have raced the read: if it removed revisions we needed, say so.
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if from < compacted {
            return Err(StoreError::Gone {
                requested: from,
                compacted,
            });
        }
        let backlog = rows
            .into_iter()
            .map(|r| {
                Arc::new(Event {
                    kind: EventKind::from_code(r.get(3)),
                    object: StoredObject {
                        key: ObjectKey {
                            resource: r.get(5),
                            namespace: r.get(1),
                            name: r.get(2),
                        },
                        revision: r.get::<i64, _>(0) as u64,
                        data: Bytes::from(r.get::<Vec<u8>, _>(4)),
                    },
                    previous: None,
                    memo: Default::default(),
                })
            })
            .collect();
        Ok(Watch {
            resource: resource.map(str::to_string),
            backlog,
            live,
            last: from,
        })
    }
}

/// A stream of events for one resource (or all), in revision order, with nothing skipped.
pub struct Watch {
    resource: Option<String>,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    last: u64,
}

impl Watch {
    /// The next event; `Err(Gone)` when this watcher fell too far behind (the client must relist);
    /// `Err(Closed)` when the store shut down.
    pub async fn next(&mut self) -> Result<Arc<Event>, StoreError> {
        if let Some(ev) = self.backlog.pop_front() {
            self.last = ev.object.revision;
            return Ok(ev);
        }
        loop {
            match self.live.recv().await {
                Ok(ev) => {
                    let other = self
                        .resource
                        .as_ref()
                        .is_some_and(|r| *r != ev.object.key.resource);
                    if ev.object.revision <= self.last || other {
                        continue;
                    }
                    self.last = ev.object.revision;
                    return Ok(ev);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(StoreError::Gone {
                        requested: self.last,
                        compacted: self.last,
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }

    /// The revision of the last event returned (or the start revision).
    pub fn last_revision(&self) -> u64 {
        self.last
    }
}

/// The revision and compaction counters of a store file (for snapshots).
pub(crate) async fn counters(conn: &mut sqlx::SqliteConnection) -> Result<(u64, u64), StoreError> {
    writer::load_counters(conn).await
}
