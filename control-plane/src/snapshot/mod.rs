//! Snapshots of a cluster (`skiff snapshot save|restore`, `skiff server --snapshot-interval`).
//!
//! A snapshot is one SQLite file: the store as `VACUUM INTO` writes it (a consistent copy taken
//! inside one read transaction, so a running server goes on writing meanwhile and every write it
//! acknowledged before is in it), plus a table of the data dir's files a cluster cannot come back
//! without: the CA and serving keys and the service-account signing key (`tls/`), the admin and
//! join tokens, and the module store's blobs. A restore writes them into a new data dir, so the
//! restored cluster keeps its identity: nodes and kubeconfigs go on working. With encryption at
//! rest the objects stay encrypted; the server needs the same `--encryption-provider-config`.
//!
//! Invariants: a snapshot never overwrites a file; a restore goes only into a directory that does
//! not exist or is empty, and never under a running server (`server.lock`); every path in a
//! snapshot is checked (plain names under the known top-level entries, no `..`, no links
//! followed) before it becomes a file, since a snapshot file is input like any other.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

mod etcd;

pub use etcd::{restore_into_etcd, save_from_etcd};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// The format of the table of files a snapshot holds.
const FORMAT: &str = "skiff-snapshot-v1";
const FILES_TABLE: &str = "skiff_snapshot_files";
const META_TABLE: &str = "skiff_snapshot_meta";
/// What of the data dir a snapshot carries besides the store.
const CARRIED: &[&str] = &["tls", "admin-token", "node-token", "modules", "server-id"];
/// The lock a running server holds on its data dir.
pub const LOCK_FILE: &str = "server.lock";

/// Errors of saving or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The data dir holds no cluster.
    #[error("{0} holds no cluster (no state.db)")]
    NoCluster(PathBuf),
    /// The snapshot file exists already.
    #[error("{0} exists already; a snapshot never overwrites a file")]
    Exists(PathBuf),
    /// A server runs on the data dir.
    #[error("a skiff server is running on {0}: stop it before restoring (a restore never replaces a live cluster's state)")]
    Running(PathBuf),
    /// The target directory is not empty.
    #[error("{0} is not empty: restore into a new or empty directory")]
    NotEmpty(PathBuf),
    /// The etcd prefix to restore into holds a cluster already.
    #[error("the etcd prefix {prefix:?} holds {objects} objects already: restore into a prefix that holds nothing (--datastore-prefix)")]
    EtcdNotEmpty {
        /// The prefix.
        prefix: String,
        /// What it holds.
        objects: usize,
    },
    /// The file is not a skiff snapshot, or a damaged one.
    #[error("{0} is not a skiff snapshot: {1}")]
    NotSnapshot(PathBuf, String),
    /// SQLite failed.
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
    /// The store's counters could not be read.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::Io(path.to_path_buf(), e)
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The store's revision when it was taken.
    pub revision: i64,
    /// Objects in the store.
    pub objects: i64,
    /// Files of the data dir carried with it.
    pub files: usize,
}

/// Is `rel` a path a snapshot may carry: plain names (letters, digits, `._-`, not starting with
/// a dot) under one of `CARRIED`? Pure.
pub fn carried_path(rel: &str) -> bool {
    let p = Path::new(rel);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => match n.to_str() {
                Some(s) => parts.push(s),
                None => return false,
            },
            _ => return false,
        }
    }
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
    };
    !parts.is_empty()
        && parts.len() <= 8
        && CARRIED.contains(&parts[0])
        && parts.iter().all(|s| plain(s))
        && rel.len() <= 1024
}

/// The regular files under `dir` (relative paths), links not followed.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), SnapshotError> {
    let here = root.join(rel);
    let meta = match std::fs::symlink_metadata(&here) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SnapshotError::Io(here, e)),
    };
    if meta.file_type().is_file() {
        out.push(rel.to_path_buf());
    } else if meta.file_type().is_dir() {
        for entry in std::fs::read_dir(&here).map_err(io(&here))? {
            let entry = entry.map_err(io(&here))?;
            walk(root, &rel.join(entry.file_name()), out)?;
        }
    }
    Ok(())
}

async fn connect(path: &Path, create: bool) -> Result<sqlx::SqliteConnection, SnapshotError> {
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// Take a snapshot of the cluster in `data_dir` (running or not) into `out`.
pub async fn save(data_dir: &Path, out: &Path) -> Result<Summary, SnapshotError> {
    let db = data_dir.join("state.db");
    if !db.is_file() {
        return Err(SnapshotError::NoCluster(data_dir.to_path_buf()));
    }
    if out.exists() {
        return Err(SnapshotError::Exists(out.to_path_buf()));
    }
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    vacuum_into(&db, &partial).await?;
    finish(data_dir, &partial, out).await
}

/// A consistent copy of the store file `db` (`VACUUM INTO`, one read transaction) at `to`.
async fn vacuum_into(db: &Path, to: &Path) -> Result<(), SnapshotError> {
    let mut conn = connect(db, false).await?;
    sqlx::query("VACUUM INTO ?")
        .bind(to.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Add the carried files of `data_dir` to the store copy at `partial` and make it `out` (or
/// remove it on failure).
async fn finish(data_dir: &Path, partial: &Path, out: &Path) -> Result<Summary, SnapshotError> {
    match fill(data_dir, partial).await {
        Ok(summary) => {
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(partial))?;
            }
            std::fs::File::open(partial)
                .and_then(|f| f.sync_all())
                .map_err(io(partial))?;
            std::fs::rename(partial, out).map_err(io(out))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(partial);
            Err(e)
        }
    }
}

/// Add the carried files and the format marker to a fresh copy of the store.
async fn fill(data_dir: &Path, copy: &Path) -> Result<Summary, SnapshotError> {
    let mut conn = connect(copy, false).await?;
    sqlx::query(&format!(
        "CREATE TABLE {FILES_TABLE} (path TEXT PRIMARY KEY, mode INTEGER NOT NULL, data BLOB NOT NULL)"
    ))
    .execute(&mut conn)
    .await?;
    sqlx::query(&format!(
        "CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    ))
    .execute(&mut conn)
    .await?;
    let mut files = Vec::new();
    for top in CARRIED {
        walk(data_dir, Path::new(top), &mut files)?;
    }
    let mut carried = 0;
    for rel in files {
        let Some(text) = rel.to_str().filter(|t| carried_path(t)) else {
            continue;
        };
        let path = data_dir.join(&rel);
        let data = std::fs::read(&path).map_err(io(&path))?;
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)
                .map_err(io(&path))?
                .permissions()
                .mode()
                & 0o777
        };
        sqlx::query(&format!(
            "INSERT INTO {FILES_TABLE} (path, mode, data) VALUES (?, ?, ?)"
        ))
        .bind(text)
        .bind(i64::from(mode))
        .bind(data)
        .execute(&mut conn)
        .await?;
        carried += 1;
    }
    let summary = summarize(&mut conn, carried).await?;
    for (k, v) in [
        ("format", FORMAT.to_string()),
        ("created", jiff::Timestamp::now().to_string()),
        ("revision", summary.revision.to_string()),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)"
        ))
        .bind(k)
        .bind(v)
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    Ok(summary)
}

async fn summarize(
    conn: &mut sqlx::SqliteConnection,
    files: usize,
) -> Result<Summary, SnapshotError> {
    let (revision, _) = crate::store::counters(conn).await?;
    let objects: i64 = sqlx::query("SELECT COUNT(*) FROM current")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(Summary {
        revision: revision as i64,
        objects,
        files,
    })
}

/// Is a server running on `data_dir` (its lock held)?
pub fn server_running(data_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(data_dir.join(LOCK_FILE)) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Take the data dir's lock for a server's lifetime (`None`: another server holds it).
pub fn lock(data_dir: &Path) -> Result<Option<std::fs::File>, SnapshotError> {
    let path = data_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(SnapshotError::Io(path, e)),
    }
}

/// Bring the cluster of `snapshot` back into `data_dir`, which must not exist or be empty.
pub async fn restore(snapshot: &Path, data_dir: &Path) -> Result<Summary, SnapshotError> {
    if server_running(data_dir) {
        return Err(SnapshotError::Running(data_dir.to_path_buf()));
    }
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir).map_err(io(data_dir))?;
        if entries.next().is_some() {
            return Err(SnapshotError::NotEmpty(data_dir.to_path_buf()));
        }
    }
    let not_snapshot = |why: &str| SnapshotError::NotSnapshot(snapshot.to_path_buf(), why.into());
    if !snapshot.is_file() {
        return Err(not_snapshot("no such file"));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(data_dir))?;
    }
    let partial = data_dir.join("state.db.partial");
    std::fs::copy(snapshot, &partial).map_err(io(&partial))?;
    let result = unpack(data_dir, &partial).await;
    match result {
        Ok(summary) => {
            let db = data_dir.join("state.db");
            std::fs::rename(&partial, &db).map_err(io(&db))?;
            Ok(summary)
        }
        Err(e) => {
            // Nothing half-restored is left behind.
            if let Ok(entries) = std::fs::read_dir(data_dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            Err(e)
        }
    }
}

/// Write the carried files of the copy at `db` into `data_dir` and drop them from it.
async fn unpack(data_dir: &Path, db: &Path) -> Result<Summary, SnapshotError> {
    let bad = |why: String| SnapshotError::NotSnapshot(db.to_path_buf(), why);
    let mut conn = connect(db, false).await.map_err(|e| bad(e.to_string()))?;
    let format: Option<String> = sqlx::query(&format!(
        "SELECT value FROM {META_TABLE} WHERE key = 'format'"
    ))
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| bad(e.to_string()))?
    .map(|r| r.try_get(0))
    .transpose()?;
    if format.as_deref() != Some(FORMAT) {
        return Err(bad(format!("its format is {format:?}, not {FORMAT:?}")));
    }
    let rows = sqlx::query(&format!("SELECT path, mode, data FROM {FILES_TABLE}"))
        .fetch_all(&mut conn)
        .await?;
    let mut written = 0;
    for row in rows {
        let rel: String = row.try_get(0)?;
        let mode: i64 = row.try_get(1)?;
        let data: Vec<u8> = row.try_get(2)?;
        if !carried_path(&rel) {
            return Err(bad(format!(
                "it carries a file at {rel:?}, which is not a data dir file"
            )));
        }
        let path = data_dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // A fresh file (`O_CREAT|O_EXCL`: never through a link, never over a file), in the
        // directory the restore made or found empty.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode((mode as u32) & 0o700)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(&data).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        written += 1;
    }
    let summary = summarize(&mut conn, written).await?;
    sqlx::query(&format!("DROP TABLE {FILES_TABLE}"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("DROP TABLE {META_TABLE}"))
        .execute(&mut conn)
        .await?;
    sqlx::query("VACUUM").execute(&mut conn).await?;
    conn.close().await?;
    Ok(summary)
}

/// Take a snapshot into `dir` every `every` (from etcd when the cluster is there), keeping the
/// newest `keep`, until `stop`.
pub async fn schedule(
    data_dir: PathBuf,
    datastore: Option<crate::store::etcd::EtcdConfig>,
    dir: PathBuf,
    every: Duration,
    keep: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "snapshot directory");
            continue;
        }
        let name = format!(
            "skiff-snapshot-{}.db",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ")
        );
        let taken = match &datastore {
            Some(etcd) => save_from_etcd(&data_dir, &dir.join(&name), etcd).await,
            None => save(&data_dir, &dir.join(&name)).await,
        };
        match taken {
            Ok(s) => {
                tracing::info!(snapshot = %name, revision = s.revision, objects = s.objects, "scheduled snapshot taken")
            }
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot failed"),
        }
        prune(&dir, keep);
    }
}

/// Remove all but the newest `keep` scheduled snapshots in `dir` (names sort by time).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("skiff-snapshot-") && n.ends_with(".db"))
        })
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep.max(1));
    for old in names.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(snapshot = %old.display(), error = %e, "removing an old snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_paths_table() {
        let cases = [
            ("tls/ca.key", true),
            ("admin-token", true),
            ("node-token", true),
            ("modules/blobs/sha256/0a1b", true),
            ("state.db", false),
            ("node/credentials/node.key", false),
            ("../etc/passwd", false),
            ("tls/../../x", false),
            ("/etc/passwd", false),
            ("tls/.hidden", false),
            ("tls/a b", false),
            ("", false),
            ("tls", true),
        ];
        for (p, want) in cases {
            assert_eq!(carried_path(p), want, "{p}");
        }
    }

    /// A snapshot is input like any other: one that carries a path outside the data dir, or
    /// is no snapshot at all, is refused and leaves nothing behind.
    #[tokio::test]
    async fn hostile_snapshots_are_refused_whole() {
        let root = std::env::temp_dir().join(format!("skiff-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        std::fs::create_dir_all(data.join("tls")).unwrap();
        std::fs::write(data.join("tls/ca.crt"), "ca").unwrap();
        std::fs::write(data.join("admin-token"), "t0k3n").unwrap();
        drop(
            crate::store::Store::open(&data.join("state.db"), Default::default())
                .await
                .unwrap(),
        );
        let snap = root.join("s.db");
        let s = save(&data, &snap).await.unwrap();
        assert_eq!(s.files, 2);
        // A clean restore.
        let good = root.join("good");
        restore(&snap, &good).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(good.join("admin-token")).unwrap(),
            "t0k3n"
        );
        // Tampered: a file that would land outside the data dir.
        let bad = root.join("bad.db");
        std::fs::copy(&snap, &bad).unwrap();
        let mut conn = connect(&bad, false).await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO {FILES_TABLE} (path, mode, data) VALUES ('../escape', 420, x'00')"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let target = root.join("target");
        let err = restore(&bad, &target).await.unwrap_err();
        assert!(matches!(err, SnapshotError::NotSnapshot(..)), "{err}");
        assert!(!root.join("escape").exists());
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing left behind"
        );
        // Not a snapshot at all.
        let junk = root.join("junk.db");
        std::fs::write(&junk, "not a database").unwrap();
        let err = restore(&junk, &root.join("t2")).await.unwrap_err();
        assert!(matches!(err, SnapshotError::NotSnapshot(..)), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
