//! The watch cache in front of a shared store (etcd), as kube-apiserver's cacher: every object
//! in memory, kept current from one watch of the whole key space, so gets and lists never leave
//! the process and every API watch is served from one fan-out instead of its own etcd watch.
//!
//! Invariants:
//! - The cache moves only forward, one committed change at a time, in revision order; a list is
//!   one snapshot at the revision the cache reflects.
//! - A write is answered only once the cache holds it (its revision, or on a conflict the
//!   revision that beat it), so a client reads its own writes from any later request to this
//!   server. Writes through other servers arrive by the watch, milliseconds later; their
//!   preconditions catch every stale read.
//! - Watches from a revision the recent-event ring covers are served from memory; older ones
//!   are handed to the store below (etcd keeps history down to its compaction). When the
//!   cache must reload (its watch fell below etcd's compaction), every watch it serves ends
//!   with `Gone`, as kube-apiserver's do, and clients list again.
//! - When the store below is unreachable, reads go on from the cache and writes fail.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{broadcast, watch};

use super::backend::{EventStream, Storage};
use super::cache::Cache;
use super::{Event, Listing, ObjectKey, StoreError, StoredObject, Write};

/// Recent events kept for watches to resume from.
const RECENT: usize = 16_384;
/// Longest a write waits for the cache to hold it.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Pause before the cache's watch is opened again after an error.
const RETRY: Duration = Duration::from_secs(1);

/// What the fan-out carries.
#[derive(Clone)]
enum Message {
    Event(Arc<Event>),
    /// The cache reloaded: its watches must end (`Gone`) and their clients list again.
    Reset,
}

struct View {
    cache: Cache,
    recent: VecDeque<Arc<Event>>,
    /// Every event after this revision is in `recent`.
    floor: u64,
    fanout: broadcast::Sender<Message>,
}

struct Shared {
    view: RwLock<View>,
    /// The revision the cache reflects, for writers waiting on it.
    applied: watch::Sender<u64>,
}

/// A [`Storage`] that reads from memory and writes through to `inner`.
pub struct Cached {
    inner: Arc<dyn Storage>,
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Cached {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Cached {
    /// Load every object from `inner` and keep following it.
    pub async fn new(inner: Arc<dyn Storage>) -> Result<Cached, StoreError> {
        let listing = inner.list_all().await?;
        let stream = inner.watch(None, listing.revision).await?;
        let mut cache = Cache::default();
        cache.revision = listing.revision;
        for o in &listing.objects {
            cache.put(o);
        }
        let (fanout, _) = broadcast::channel(RECENT);
        let shared = Arc::new(Shared {
            view: RwLock::new(View {
                cache,
                recent: VecDeque::new(),
                floor: listing.revision,
                fanout,
            }),
            applied: watch::Sender::new(listing.revision),
        });
        let follower = tokio::spawn(follow(inner.clone(), shared.clone(), stream));
        Ok(Cached {
            inner,
            shared,
            follower,
        })
    }

    fn view(&self) -> Result<std::sync::RwLockReadGuard<'_, View>, StoreError> {
        self.shared.view.read().map_err(|_| StoreError::Closed)
    }

    /// Wait (bounded) until the cache reflects `revision`.
    async fn caught_up(&self, revision: u64) {
        let mut rx = self.shared.applied.subscribe();
        if tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= revision))
            .await
            .is_err()
        {
            tracing::warn!(revision, "the watch cache is behind the store");
        }
    }
}

/// Apply `inner`'s changes to the cache for as long as the cache lives; reopen the watch where
/// it stopped after an error, or reload everything when that revision is gone.
async fn follow(inner: Arc<dyn Storage>, shared: Arc<Shared>, mut stream: Box<dyn EventStream>) {
    loop {
        match stream.next().await {
            Ok(ev) => apply(&shared, ev),
            Err(e) => {
                tracing::warn!(error = %e, "the watch cache lost its watch");
                stream = reopen(&*inner, &shared).await;
            }
        }
    }
}

fn apply(shared: &Shared, ev: Arc<Event>) {
    let revision = ev.object.revision;
    let Ok(mut view) = shared.view.write() else {
        return;
    };
    view.cache.apply(ev.kind, &ev.object);
    view.cache.revision = view.cache.revision.max(revision);
    if view.recent.len() == RECENT {
        if let Some(old) = view.recent.pop_front() {
            view.floor = old.object.revision;
        }
    }
    view.recent.push_back(ev.clone());
    // Sent under the lock, so a watch that subscribes under it sees each event exactly once:
    // from the ring or from the fan-out.
    let _ = view.fanout.send(Message::Event(ev));
    let now = view.cache.revision;
    drop(view);
    shared.applied.send_if_modified(|r| {
        let moved = now > *r;
        *r = (*r).max(now);
        moved
    });
}

/// A watch from where the cache stands, or after a reload when that is no longer possible.
async fn reopen(inner: &dyn Storage, shared: &Shared) -> Box<dyn EventStream> {
    loop {
        tokio::time::sleep(RETRY).await;
        let from = match shared.view.read() {
            Ok(v) => v.cache.revision,
            Err(_) => return Box::new(Closed),
        };
        match inner.watch(None, from).await {
            Ok(s) => return s,
            Err(StoreError::Gone { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "the watch cache's store is unreachable");
                continue;
            }
        }
        // Below the compaction: list everything again and start over.
        let Ok(listing) = inner.list_all().await else {
            continue;
        };
        let Ok(stream) = inner.watch(None, listing.revision).await else {
            continue;
        };
        let Ok(mut view) = shared.view.write() else {
            return Box::new(Closed);
        };
        view.cache.clear();
        for o in &listing.objects {
            view.cache.put(o);
        }
        view.cache.revision = listing.revision;
        view.recent.clear();
        view.floor = listing.revision;
        let _ = view.fanout.send(Message::Reset);
        drop(view);
        shared
            .applied
            .send_modify(|r| *r = (*r).max(listing.revision));
        tracing::info!(
            revision = listing.revision,
            "the watch cache reloaded from the store"
        );
        return stream;
    }
}

/// The stream of a cache that is gone.
struct Closed;

impl EventStream for Closed {
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>> {
        Box::pin(std::future::pending())
    }
    fn last_revision(&self) -> u64 {
        0
    }
}

/// A watch served from the cache: the ring's events after `from`, then the fan-out's.
struct CachedWatch {
    resource: Option<String>,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Message>,
    from: u64,
    last: u64,
}

impl CachedWatch {
    fn wanted(&self, ev: &Event) -> bool {
        ev.object.revision > self.from
            && self
                .resource
                .as_ref()
                .is_none_or(|r| *r == ev.object.key.resource)
    }
}

impl EventStream for CachedWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>> {
        Box::pin(async move {
            if let Some(ev) = self.backlog.pop_front() {
                self.last = ev.object.revision;
                return Ok(ev);
            }
            loop {
                match self.live.recv().await {
                    Ok(Message::Event(ev)) if self.wanted(&ev) => {
                        self.last = ev.object.revision;
                        return Ok(ev);
                    }
                    Ok(Message::Event(_)) => {}
                    Ok(Message::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Err(StoreError::Gone {
                            requested: self.last,
                            compacted: self.last,
                        })
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
                }
            }
        })
    }
    fn last_revision(&self) -> u64 {
        self.last
    }
}

/// The revision a write's answer says the cache must reach before it is answered.
fn visible_at(answer: &Result<StoredObject, StoreError>, write: &WriteKind) -> Option<u64> {
    match answer {
        // Releasing what was not there changed nothing: no event will come.
        Ok(o) if *write == WriteKind::Release && o.data.is_empty() => None,
        Ok(o) => Some(o.revision),
        Err(StoreError::Conflict { current }) => Some(*current),
        Err(StoreError::Refused { source, .. }) => match **source {
            StoreError::Conflict { current } => Some(current),
            _ => None,
        },
        Err(_) => None,
    }
}

#[derive(PartialEq)]
enum WriteKind {
    Release,
    Other,
}

impl Storage for Cached {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<StoredObject, StoreError>> {
        Box::pin(async move { self.view()?.cache.get(key).ok_or(StoreError::NotFound) })
    }

    fn list<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            let view = self.view()?;
            Ok(Listing {
                objects: view.cache.list(resource, namespace),
                revision: view.cache.revision,
            })
        })
    }

    fn list_all(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(async move {
            let view = self.view()?;
            Ok(Listing {
                objects: view.cache.all(),
                revision: view.cache.revision,
            })
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<StoredObject, StoreError>> {
        Box::pin(async move {
            let kind = match write {
                Write::Release { .. } => WriteKind::Release,
                _ => WriteKind::Other,
            };
            let answer = self.inner.write(write).await;
            if let Some(revision) = visible_at(&answer, &kind) {
                self.caught_up(revision).await;
            }
            answer
        })
    }

    fn watch<'a>(
        &'a self,
        resource: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, StoreError>> {
        Box::pin(async move {
            {
                let view = self.view()?;
                if from >= view.floor {
                    let backlog = view
                        .recent
                        .iter()
                        .filter(|ev| {
                            ev.object.revision > from
                                && resource.is_none_or(|r| r == ev.object.key.resource)
                        })
                        .cloned()
                        .collect();
                    return Ok(Box::new(CachedWatch {
                        resource: resource.map(str::to_string),
                        backlog,
                        live: view.fanout.subscribe(),
                        from,
                        last: from,
                    }) as Box<dyn EventStream>);
                }
            }
            // Older than the ring: from the store's own history.
            self.inner.watch(resource, from).await
        })
    }

    fn revision(&self) -> u64 {
        self.view().map_or(0, |v| v.cache.revision)
    }

    fn compacted(&self) -> u64 {
        self.inner.compacted()
    }
}
