//! The storage boundary: what the API server, the module store and the garbage collector need
//! from storage. [`super::Store`] (SQLite) and [`super::etcd::EtcdStore`] implement it; nothing
//! above it knows which one it talks to. `store::conformance` checks both against the contract.
//!
//! Contract of an implementation: writes are serialized and get increasing revisions
//! (consecutive on SQLite; on etcd, etcd's, which other users of the same etcd also advance;
//! the writes of one transaction share one revision there); an
//! answered write is durable; `list` is one consistent snapshot at the revision it returns;
//! a watch from revision `r` yields every later change of its resource (or of all) exactly
//! once, in revision order, or `Gone` when `r` was compacted or the watcher fell behind.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Event, Listing, ObjectKey, StoreError, StoredObject, Write};

/// A stream of committed changes.
pub trait EventStream: Send {
    /// The next change.
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>>;
    /// The revision of the last change returned (or the start revision).
    fn last_revision(&self) -> u64;
}

/// A cluster store.
pub trait Storage: Send + Sync + 'static {
    /// Read one object.
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<StoredObject, StoreError>>;
    /// The objects of `resource` (in `namespace` when given), ordered by namespace and name.
    fn list<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, StoreError>>;
    /// Every object, at one revision, ordered by resource, namespace and name (a cache's first
    /// load; a migration's copy).
    fn list_all(&self) -> BoxFuture<'_, Result<Listing, StoreError>>;
    /// Apply one write.
    fn write(&self, write: Write) -> BoxFuture<'_, Result<StoredObject, StoreError>>;
    /// Changes of `resource` (all resources when None) after revision `from`.
    fn watch<'a>(
        &'a self,
        resource: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, StoreError>>;
    /// The latest committed revision.
    fn revision(&self) -> u64;
    /// Revisions below this are no longer available to watches.
    fn compacted(&self) -> u64;
}

impl EventStream for super::Watch {
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>> {
        Box::pin(super::Watch::next(self))
    }
    fn last_revision(&self) -> u64 {
        super::Watch::last_revision(self)
    }
}

impl Storage for super::Store {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<StoredObject, StoreError>> {
        Box::pin(super::Store::get(self, key))
    }
    fn list<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(super::Store::list(self, resource, namespace))
    }
    fn list_all(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(super::Store::list_all(self))
    }
    fn write(&self, write: Write) -> BoxFuture<'_, Result<StoredObject, StoreError>> {
        Box::pin(super::Store::write(self, write))
    }
    fn watch<'a>(
        &'a self,
        resource: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, StoreError>> {
        Box::pin(async move {
            let w = match resource {
                Some(r) => super::Store::watch(self, r, from).await?,
                None => super::Store::watch_all(self, from).await?,
            };
            Ok(Box::new(w) as Box<dyn EventStream>)
        })
    }
    fn revision(&self) -> u64 {
        super::Store::revision(self)
    }
    fn compacted(&self) -> u64 {
        super::Store::compacted(self)
    }
}
