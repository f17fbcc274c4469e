//! Snapshots of paged lists: the first page of a list with `limit` keeps the listing it cut
//! (the stored objects at its revision, which share their bytes with the store's cache), so
//! every `continue` page reads that same snapshot, as kube-apiserver reads etcd at the first
//! page's revision. Bounded: at most [`MAX_SNAPSHOTS`] lists and [`MAX_OBJECTS`] objects, each
//! kept [`KEPT_FOR`]; a continuation whose snapshot is gone is answered 410, and the client
//! lists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::StoredObject;

/// Lists kept at once.
pub const MAX_SNAPSHOTS: usize = 32;
/// Objects kept over all lists.
pub const MAX_OBJECTS: usize = 200_000;
/// How long a snapshot lives (kube-apiserver's etcd compaction interval).
pub const KEPT_FOR: Duration = Duration::from_secs(300);

struct Snapshot {
    scope: String,
    revision: u64,
    at: Instant,
    objects: Arc<Vec<StoredObject>>,
}

/// The kept snapshots, newest last.
#[derive(Default)]
pub struct Snapshots(Mutex<VecDeque<Snapshot>>);

impl Snapshots {
    /// Keep the listing of `scope` (resource and namespace) at `revision`.
    pub fn keep(&self, scope: &str, revision: u64, objects: Arc<Vec<StoredObject>>) {
        let Ok(mut all) = self.0.lock() else {
            return;
        };
        if all
            .iter()
            .any(|s| s.scope == scope && s.revision == revision)
        {
            return;
        }
        all.push_back(Snapshot {
            scope: scope.to_string(),
            revision,
            at: Instant::now(),
            objects,
        });
        let mut total: usize = all.iter().map(|s| s.objects.len()).sum();
        while all.len() > MAX_SNAPSHOTS || (total > MAX_OBJECTS && all.len() > 1) {
            if let Some(old) = all.pop_front() {
                total -= old.objects.len();
            }
        }
    }

    /// The listing of `scope` at `revision`, if it is still kept.
    pub fn get(&self, scope: &str, revision: u64) -> Option<Arc<Vec<StoredObject>>> {
        let mut all = self.0.lock().ok()?;
        all.retain(|s| s.at.elapsed() < KEPT_FOR);
        all.iter()
            .find(|s| s.scope == scope && s.revision == revision)
            .map(|s| s.objects.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;

    fn objects(n: usize) -> Arc<Vec<StoredObject>> {
        Arc::new(
            (0..n)
                .map(|i| StoredObject {
                    key: ObjectKey::new("configmaps", "default", &format!("c{i}")),
                    revision: i as u64,
                    data: bytes::Bytes::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn kept_by_scope_and_revision_and_bounded() {
        let s = Snapshots::default();
        s.keep("configmaps/default", 7, objects(3));
        assert_eq!(s.get("configmaps/default", 7).map(|o| o.len()), Some(3));
        assert!(s.get("configmaps/default", 8).is_none());
        assert!(s.get("pods/default", 7).is_none());
        for r in 0..MAX_SNAPSHOTS as u64 {
            s.keep("pods/", 100 + r, objects(1));
        }
        // The oldest went to make room.
        assert!(s.get("configmaps/default", 7).is_none());
        assert!(s.get("pods/", 100 + MAX_SNAPSHOTS as u64 - 1).is_some());
    }
}
