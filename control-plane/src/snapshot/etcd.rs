//! Snapshots of a cluster on etcd, and so migrations between SQLite and etcd: a snapshot is the
//! same file whichever store it came from, so
//! - `skiff snapshot save FILE --data-dir DIR --datastore-endpoint URLS` reads every object
//!   under the cluster's prefix at one etcd revision (a consistent copy of a running cluster)
//!   into the snapshot's store, with DIR's keys, tokens and modules as any snapshot;
//! - `skiff snapshot restore FILE --data-dir NEW --datastore-endpoint URLS` writes the carried
//!   files into NEW and the objects into an etcd prefix that holds nothing yet.
//!
//! Saving from one store and restoring into the other is the migration: names, uids, labels,
//! every byte of every object are kept; resourceVersions are the new store's revisions (as
//! after any restore into etcd), so clients list again.
//!
//! Invariants: a restore never writes into a prefix that holds objects; when writing into etcd
//! fails part way, what was written is removed again and the data dir emptied, so a retry
//! starts clean.

use std::path::Path;

use super::{finish, io, vacuum_into, SnapshotError, Summary};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{Storage, Store, StoreError, StoredObject, Write};

/// Objects written per transaction (etcd's default `--max-txn-ops` is 128).
const BATCH: usize = 100;

/// Write `objects` into `to` as creates, `BATCH` per transaction; the keys written so far on
/// error.
async fn copy(objects: &[StoredObject], to: &dyn Storage) -> Result<(), (usize, StoreError)> {
    let mut written = 0;
    for chunk in objects.chunks(BATCH) {
        let writes = chunk
            .iter()
            .map(|o| Write::Create {
                key: o.key.clone(),
                data: o.data.clone(),
            })
            .collect();
        to.write(Write::Txn(writes))
            .await
            .map_err(|e| (written, e))?;
        written += chunk.len();
    }
    Ok(())
}

/// Take a snapshot of the cluster in etcd (`etcd`), with the carried files of `data_dir` (a
/// server's data dir of that cluster), into `out`.
pub async fn save_from_etcd(
    data_dir: &Path,
    out: &Path,
    etcd: &EtcdConfig,
) -> Result<Summary, SnapshotError> {
    if out.exists() {
        return Err(SnapshotError::Exists(out.to_path_buf()));
    }
    let source = EtcdStore::connect(etcd).await?;
    let listing = source.list_all().await?;
    // The objects go into a store of their own, then into the snapshot file as any store does.
    let work = out.with_extension("partial.d");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let result = async {
        let db = work.join("state.db");
        let store = Store::open(&db, Default::default()).await?;
        copy(&listing.objects, &store).await.map_err(|(_, e)| e)?;
        drop(store);
        vacuum_into(&db, &partial).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result?;
    finish(data_dir, &partial, out).await
}

/// Bring the cluster of `snapshot` back into etcd (`etcd`, whose prefix must hold nothing) with
/// its carried files in `data_dir` (new or empty), for `skiff server --data-dir DATA_DIR
/// --datastore-endpoint ...`.
pub async fn restore_into_etcd(
    snapshot: &Path,
    data_dir: &Path,
    etcd: &EtcdConfig,
) -> Result<Summary, SnapshotError> {
    let target = EtcdStore::connect(etcd).await?;
    let present = target.list_all().await?.objects.len();
    if present > 0 {
        return Err(SnapshotError::EtcdNotEmpty {
            prefix: etcd.prefix.clone(),
            objects: present,
        });
    }
    let summary = super::restore(snapshot, data_dir).await?;
    let db = data_dir.join("state.db");
    let result = async {
        let store = Store::open(&db, Default::default()).await?;
        let objects = store.list_all().await?.objects;
        drop(store);
        if let Err((written, e)) = copy(&objects, &target).await {
            for o in &objects[..written] {
                let _ = target.write(Write::Release { key: o.key.clone() }).await;
            }
            return Err(SnapshotError::Store(e));
        }
        Ok::<_, SnapshotError>(())
    }
    .await;
    // The cluster lives in etcd now: no store file is left in the data dir (nor, on failure,
    // anything else).
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
    if let Err(e) = result {
        empty(data_dir);
        return Err(e);
    }
    Ok(summary)
}

/// Remove everything in `dir` (a restore that failed).
fn empty(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

// The migration's path through both stores is covered end to end (`tests/e2e/snapshot.rs`,
// SQLite to etcd and back); what is pure here is `copy`'s batching, checked against a store.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;
    use bytes::Bytes;

    #[tokio::test]
    async fn copies_every_object_in_batches_and_reports_what_was_written() {
        let dir = std::env::temp_dir().join(format!("skiff-copy-{}", rand::random::<u32>()));
        let store = Store::open(&dir.join("state.db"), Default::default())
            .await
            .expect("open");
        let objects: Vec<StoredObject> = (0..250)
            .map(|i| StoredObject {
                key: ObjectKey::new("configmaps", "default", &format!("c{i:03}")),
                revision: 7,
                data: Bytes::from(format!("{i}")),
            })
            .collect();
        copy(&objects, &store)
            .await
            .map_err(|(_, e)| e)
            .expect("copy");
        let listed = store.list_all().await.expect("list").objects;
        assert_eq!(listed.len(), 250);
        assert_eq!(listed[249].data, Bytes::from("249"));
        // A second copy collides on the first batch: nothing written, and said so.
        match copy(&objects, &store).await {
            Err((0, StoreError::Refused { index: 0, .. })) => {}
            other => panic!("a colliding copy: {:?}", other.err().map(|(n, _)| n)),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
