//! The etcd backend of the [`Storage`] trait (`skiff server --datastore-endpoint`): objects are
//! etcd keys `<prefix>/<resource>/<namespace>/<name>` (a cluster-scoped object has an empty
//! namespace segment: `/registry/namespaces//default`, so a key parses back without knowing
//! which resources are namespaced), values are the object's bytes, a revision is etcd's mod
//! revision, writes are etcd transactions comparing mod revisions (a precondition) or create
//! revisions (existence), watches are etcd watches from `from + 1` with the previous value, and
//! a compacted revision is `Gone` (410). A background task compacts every 5 minutes to the
//! revision seen 5 minutes before, as kube-apiserver does.
//!
//! Invariants: every read and write goes to etcd (no cache: what one API server wrote, another
//! reads at once); a transaction is one etcd transaction (all or nothing, one revision);
//! `revision()` never goes backwards. Nothing above the trait knows which backend it talks to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use futures::future::BoxFuture;

use super::backend::{EventStream, Storage};
use super::{Event, EventKind, Listing, ObjectKey, StoreError, StoredObject, Write};

/// Largest answer taken from etcd: a page of large objects, or a watch answer carrying several
/// events with their previous values (gRPC's default of 4 MiB is below both).
const MAX_MESSAGE: usize = 64 << 20;

/// How long a write is tried again while etcd cannot answer (an election takes a second or two).
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Keys read per page of a list.
const PAGE: i64 = 500;

/// How often compaction runs.
const COMPACT_EVERY: Duration = Duration::from_secs(300);

/// Where and how to reach etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Endpoints (`https://host:2379`, `http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix (`/registry`), so several clusters can share an etcd.
    pub prefix: String,
    /// CA (PEM) to verify etcd's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for etcd's client authentication.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The store on etcd.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
}

fn etcd(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

impl EtcdStore {
    /// Connect, learn the current revision, and start compaction.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        if config.ca_pem.is_some() || config.identity.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &config.ca_pem {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &config.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(etcd)?;
        let prefix = config.prefix.trim_end_matches('/').to_string();
        let store = EtcdStore {
            client,
            prefix,
            revision: Arc::new(AtomicU64::new(0)),
            compacted: Arc::new(AtomicU64::new(0)),
        };
        // The current revision (a read of one key returns the store's revision).
        let mut kv = store.client.kv_client();
        let resp = kv
            .get(
                store.prefix.clone(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(etcd)?;
        store.seen(resp.header().map_or(0, |h| h.revision()));
        tokio::spawn(compact(
            store.client.clone(),
            store.revision.clone(),
            store.compacted.clone(),
        ));
        Ok(store)
    }

    fn seen(&self, revision: i64) {
        self.revision
            .fetch_max(revision.max(0) as u64, Ordering::AcqRel);
    }

    /// The etcd key of an object.
    fn key(&self, key: &ObjectKey) -> String {
        format!(
            "{}/{}/{}/{}",
            self.prefix, key.resource, key.namespace, key.name
        )
    }

    /// The key prefix of a resource (in a namespace).
    fn range_key(&self, resource: Option<&str>, namespace: Option<&str>) -> String {
        match (resource, namespace) {
            (None, _) => format!("{}/", self.prefix),
            (Some(r), None) => format!("{}/{r}/", self.prefix),
            (Some(r), Some(ns)) => format!("{}/{r}/{ns}/", self.prefix),
        }
    }

    fn object(&self, kv: &KeyValue) -> Option<StoredObject> {
        Some(StoredObject {
            key: parse_key(&self.prefix, kv.key())?,
            revision: kv.mod_revision().max(0) as u64,
            data: Bytes::copy_from_slice(kv.value()),
        })
    }

    async fn current(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv.get(self.key(key), None).await.map_err(etcd)?;
        self.seen(resp.header().map_or(0, |h| h.revision()));
        Ok(resp.kvs().first().and_then(|kv| self.object(kv)))
    }

    /// Every object under `prefix` at one revision, read in pages of `PAGE` keys (one answer
    /// must stay under gRPC's 4 MiB message limit), ordered by key: namespace, then name.
    async fn range(&self, prefix: String) -> Result<Listing, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut start = prefix.into_bytes();
        let mut revision = 0i64;
        let mut objects = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let resp = kv.get(start.clone(), Some(options)).await.map_err(etcd)?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
                self.seen(revision);
            }
            objects.extend(resp.kvs().iter().filter_map(|kv| self.object(kv)));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing {
            objects,
            revision: revision.max(0) as u64,
        })
    }

    /// The compare and operation of one write (not a `Txn`).
    fn plan(&self, w: &Write) -> Result<(Vec<Compare>, TxnOp), StoreError> {
        Ok(match w {
            Write::Create { key, data } => (
                vec![Compare::create_revision(self.key(key), CompareOp::Equal, 0)],
                TxnOp::put(self.key(key), data.to_vec(), Some(PutOptions::new())),
            ),
            Write::Update {
                key,
                data,
                precondition,
            } => (
                vec![match precondition {
                    Some(p) => Compare::mod_revision(self.key(key), CompareOp::Equal, *p as i64),
                    None => Compare::create_revision(self.key(key), CompareOp::Greater, 0),
                }],
                TxnOp::put(self.key(key), data.to_vec(), None),
            ),
            Write::Delete { key, precondition } => (
                vec![match precondition {
                    Some(p) => Compare::mod_revision(self.key(key), CompareOp::Equal, *p as i64),
                    None => Compare::create_revision(self.key(key), CompareOp::Greater, 0),
                }],
                TxnOp::delete(self.key(key), Some(DeleteOptions::new().with_prev_key())),
            ),
            Write::Release { key } => (
                Vec::new(),
                TxnOp::delete(self.key(key), Some(DeleteOptions::new().with_prev_key())),
            ),
            Write::Txn(_) => {
                return Err(StoreError::Transform(
                    "a transaction cannot be nested".into(),
                ))
            }
        })
    }

    /// Why a write whose compare failed was refused, from the key's current state.
    async fn refusal(&self, w: &Write) -> Result<StoreError, StoreError> {
        let (key, precondition) = match w {
            Write::Create { .. } => return Ok(StoreError::AlreadyExists),
            Write::Update {
                key, precondition, ..
            }
            | Write::Delete { key, precondition } => (key, *precondition),
            Write::Release { .. } | Write::Txn(_) => {
                return Ok(StoreError::Transform("refused".into()))
            }
        };
        Ok(match (self.current(key).await?, precondition) {
            (None, _) => StoreError::NotFound,
            (Some(cur), Some(p)) if cur.revision != p => StoreError::Conflict {
                current: cur.revision,
            },
            (Some(cur), _) => StoreError::Conflict {
                current: cur.revision,
            },
        })
    }

    /// Apply `write`; while etcd cannot answer (a member lost, a leader being elected), try
    /// again for up to `RETRY_FOR`, first checking whether the attempt that timed out landed
    /// after all (its bytes are there: every object's bytes hold its uid, so they are ours).
    async fn apply(&self, write: Write) -> Result<StoredObject, StoreError> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        let mut retried = false;
        loop {
            match self.apply_once(&write).await {
                Err(StoreError::Etcd(e))
                    if transient(&e) && std::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(error = %e, "etcd unavailable; trying the write again");
                    if let Ok(Some(done)) = self.landed(&write).await {
                        return Ok(done);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    retried = true;
                }
                // Refused on a second try: perhaps by the first one, which landed late.
                Err(refused) if retried => {
                    return match self.landed(&write).await {
                        Ok(Some(done)) => Ok(done),
                        _ => Err(refused),
                    }
                }
                other => return other,
            }
        }
    }

    /// The stored object when `write` (a create or update, or a transaction starting with one)
    /// is in etcd already.
    async fn landed(&self, write: &Write) -> Result<Option<StoredObject>, StoreError> {
        let first = match write {
            Write::Txn(ws) => ws.first(),
            w => Some(w),
        };
        let (Some(Write::Create { key, data }) | Some(Write::Update { key, data, .. })) = first
        else {
            return Ok(None);
        };
        Ok(self.current(key).await?.filter(|o| o.data == *data))
    }

    async fn apply_once(&self, write: &Write) -> Result<StoredObject, StoreError> {
        let writes: &[Write] = match write {
            Write::Txn(ws) => ws,
            w => std::slice::from_ref(w),
        };
        let first = writes
            .first()
            .ok_or_else(|| StoreError::Transform("an empty transaction".into()))?;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for w in writes {
            let (c, op) = self.plan(w)?;
            compares.extend(c);
            ops.push(op);
        }
        let mut kv = self.client.kv_client();
        let resp = kv
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(etcd)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.seen(revision);
        if !resp.succeeded() {
            // Which write was refused, and why: each one's compare against what is there now.
            for (i, w) in writes.iter().enumerate() {
                let (c, _) = self.plan(w)?;
                if c.is_empty() {
                    continue;
                }
                let check = kv.txn(Txn::new().when(c)).await.map_err(etcd)?;
                if !check.succeeded() {
                    let why = self.refusal(w).await?;
                    return Err(if writes.len() > 1 {
                        StoreError::Refused {
                            index: i,
                            source: Box::new(why),
                        }
                    } else {
                        why
                    });
                }
            }
            // Changed again between the two reads: the caller retries as on any conflict.
            return Err(StoreError::Conflict {
                current: revision.max(0) as u64,
            });
        }
        let revision = revision.max(0) as u64;
        match first {
            Write::Create { key, data } | Write::Update { key, data, .. } => Ok(StoredObject {
                key: key.clone(),
                revision,
                data: data.clone(),
            }),
            Write::Delete { key, .. } | Write::Release { key } => {
                let last = resp
                    .op_responses()
                    .into_iter()
                    .next()
                    .and_then(|r| match r {
                        TxnOpResponse::Delete(d) => {
                            d.prev_kvs().first().map(|kv| kv.value().to_vec())
                        }
                        _ => None,
                    });
                if last.is_none() && matches!(first, Write::Release { .. }) {
                    return Ok(StoredObject {
                        key: key.clone(),
                        revision,
                        data: Bytes::new(),
                    });
                }
                Ok(StoredObject {
                    key: key.clone(),
                    revision,
                    data: Bytes::from(last.unwrap_or_default()),
                })
            }
            Write::Txn(_) => Err(StoreError::Transform(
                "a transaction cannot be nested".into(),
            )),
        }
    }
}

/// Is this etcd error one that passes (no leader yet, a member or connection lost, a request
/// that timed out while the leader changed) rather than an answer?
fn transient(message: &str) -> bool {
    [
        "status: Unavailable",
        "transport error",
        "no leader",
        "leader changed",
        "request timed out",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: to the end of the key space.
    vec![0]
}

/// `<prefix>/<resource...>/<namespace>/<name>` back to a key (the resource may hold a `/`).
pub(crate) fn parse_key(prefix: &str, raw: &[u8]) -> Option<ObjectKey> {
    let s = std::str::from_utf8(raw).ok()?;
    let rest = s.strip_prefix(prefix)?.strip_prefix('/')?;
    let (before, name) = rest.rsplit_once('/')?;
    let (resource, namespace) = before.rsplit_once('/')?;
    (!resource.is_empty() && !name.is_empty()).then(|| ObjectKey::new(resource, namespace, name))
}

/// Every `COMPACT_EVERY`, compact to the revision seen one period before (kube-apiserver's
/// schedule: watchers get at least one period to catch up).
async fn compact(client: Client, revision: Arc<AtomicU64>, compacted: Arc<AtomicU64>) {
    let mut previous = revision.load(Ordering::Acquire);
    loop {
        tokio::time::sleep(COMPACT_EVERY).await;
        let now = revision.load(Ordering::Acquire);
        if previous > compacted.load(Ordering::Acquire) {
            let mut kv = client.kv_client();
            match kv.compact(previous as i64, None).await {
                Ok(_) => {
                    compacted.fetch_max(previous, Ordering::AcqRel);
                    tracing::debug!(revision = previous, "etcd compacted");
                }
                // Compacted already (by another API server): fine.
                Err(e) => tracing::debug!(error = %e, "etcd compaction"),
            }
        }
        previous = now;
    }
}

/// A watch of a key range from etcd.
struct EtcdWatch {
    prefix: String,
    stream: etcd_client::WatchStream,
    _watcher: etcd_client::Watcher,
    pending: std::collections::VecDeque<Arc<Event>>,
    last: u64,
    from: u64,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
}

impl EventStream for EtcdWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>> {
        Box::pin(async move {
            loop {
                if let Some(ev) = self.pending.pop_front() {
                    self.last = ev.object.revision;
                    return Ok(ev);
                }
                let Some(resp) = self.stream.message().await.map_err(etcd)? else {
                    return Err(StoreError::Closed);
                };
                if resp.compact_revision() > 0 {
                    let compacted = resp.compact_revision() as u64;
                    self.compacted.fetch_max(compacted, Ordering::AcqRel);
                    return Err(StoreError::Gone {
                        requested: self.from,
                        compacted,
                    });
                }
                if resp.canceled() {
                    return Err(StoreError::Etcd(format!(
                        "etcd canceled the watch: {}",
                        resp.cancel_reason()
                    )));
                }
                if let Some(h) = resp.header() {
                    self.revision
                        .fetch_max(h.revision().max(0) as u64, Ordering::AcqRel);
                }
                for e in resp.events() {
                    let Some(kv) = e.kv() else { continue };
                    let Some(key) = parse_key(&self.prefix, kv.key()) else {
                        continue;
                    };
                    let revision = kv.mod_revision().max(0) as u64;
                    let previous = e.prev_kv().map(|p| Bytes::copy_from_slice(p.value()));
                    let (kind, data) = match e.event_type() {
                        EventType::Put if kv.create_revision() == kv.mod_revision() => {
                            (EventKind::Added, Bytes::copy_from_slice(kv.value()))
                        }
                        EventType::Put => (EventKind::Modified, Bytes::copy_from_slice(kv.value())),
                        EventType::Delete => {
                            (EventKind::Deleted, previous.clone().unwrap_or_default())
                        }
                    };
                    self.pending.push_back(Arc::new(Event {
                        kind,
                        object: StoredObject {
                            key,
                            revision,
                            data,
                        },
                        previous,
                        memo: Default::default(),
                    }));
                }
            }
        })
    }

    fn last_revision(&self) -> u64 {
        self.last
    }
}

impl Storage for EtcdStore {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<StoredObject, StoreError>> {
        Box::pin(async move { self.current(key).await?.ok_or(StoreError::NotFound) })
    }

    fn list<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(self.range(self.range_key(Some(resource), namespace)))
    }

    fn list_all(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(self.range(self.range_key(None, None)))
    }

    fn write(&self, write: Write) -> BoxFuture<'_, Result<StoredObject, StoreError>> {
        Box::pin(self.apply(write))
    }

    fn watch<'a>(
        &'a self,
        resource: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, StoreError>> {
        Box::pin(async move {
            let compacted = self.compacted.load(Ordering::Acquire);
            if from < compacted {
                return Err(StoreError::Gone {
                    requested: from,
                    compacted,
                });
            }
            let mut client = self
                .client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE);
            let (watcher, stream) = client
                .watch(
                    self.range_key(resource, None),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_prev_key()
                            .with_start_revision(from as i64 + 1),
                    ),
                )
                .await
                .map_err(etcd)?;
            Ok(Box::new(EtcdWatch {
                prefix: self.prefix.clone(),
                stream,
                _watcher: watcher,
                pending: Default::default(),
                last: from,
                from,
                revision: self.revision.clone(),
                compacted: self.compacted.clone(),
            }) as Box<dyn EventStream>)
        })
    }

    fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_etcd_errors_are_told_from_answers() {
        let cases = [
            ("etcd: grpc request error: status: Unavailable, message: \"etcdserver: request timed out, possibly due to previous leader failure\"", true),
            ("etcd: transport error", true),
            ("etcdserver: no leader", true),
            ("etcd: grpc request error: status: InvalidArgument, message: \"etcdserver: too many operations in txn request\"", false),
            ("etcd: grpc request error: status: ResourceExhausted, message: \"etcdserver: mvcc: database space exceeded\"", false),
        ];
        for (message, want) in cases {
            assert_eq!(transient(message), want, "{message}");
        }
    }

    #[test]
    fn prefix_ends_are_the_next_key() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/registry/", b"/registry0"),
            (b"/a/pods/ns/", b"/a/pods/ns0"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "{prefix:?}");
        }
    }

    #[test]
    fn keys_parse_back() {
        type Case<'a> = (&'a str, Option<(&'a str, &'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "/registry/pods/default/web",
                Some(("pods", "default", "web")),
            ),
            (
                "/registry/namespaces//default",
                Some(("namespaces", "", "default")),
            ),
            (
                "/registry/apps/deployments/shop/api",
                Some(("apps/deployments", "shop", "api")),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles//view",
                Some(("rbac.authorization.k8s.io/clusterroles", "", "view")),
            ),
            ("/other/pods/default/web", None),
            ("/registry/pods", None),
            ("/registry//ns/name", None),
        ];
        for (raw, want) in cases {
            let got = parse_key("/registry", raw.as_bytes());
            assert_eq!(
                got,
                want.map(|(r, ns, n)| ObjectKey::new(r, ns, n)),
                "{raw}"
            );
        }
    }
}
