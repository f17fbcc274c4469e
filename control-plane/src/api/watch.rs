//! Watch streams: chunked, one `WatchEvent` JSON per line, in revision order with nothing
//! skipped; initial events for `resourceVersion` ""/"0" or `sendInitialEvents`; bookmarks when
//! allowed; objects that stop (or start) matching the selectors leave (or enter) as DELETED
//! (or ADDED); 410 `Expired` as an in-stream ERROR when the revision was compacted.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::rawjson;
use super::registry::{flag, list_matching, materialize, Filter, Query};
use super::table::{self, table_wanted, IncludeObject};
use super::AppState;
use crate::resources::ResourceType;
use crate::store::{Event, EventKind, StoreError, StoredObject};

/// An event's object as the watchers of one resource type send it: encoded once, by the first
/// of them, for all of them (see [`Event::memo`]). The JSON is spliced from the stored bytes
/// without parsing them; the parsed object is made only when a watcher needs it (selectors,
/// Tables), and then once.
struct Encoded {
    rt: &'static ResourceType,
    json: Bytes,
    value: OnceLock<Option<Value>>,
}

impl Encoded {
    /// The served object; None when the JSON does not parse (not for bytes this server wrote).
    fn value(&self) -> Option<&Value> {
        self.value
            .get_or_init(|| serde_json::from_slice(&self.json).ok())
            .as_ref()
    }
}

/// The shared encoding of `ev` for `rt`; made here (and kept for the other watchers) when it is
/// the first. `None` for an object that cannot be materialized (logged by the caller's skip).
fn encoded(rt: &'static ResourceType, ev: &Event) -> Option<Arc<Encoded>> {
    let fresh = || -> Option<Arc<Encoded>> {
        let stored = &ev.object;
        let mut json = Vec::with_capacity(stored.data.len() + 96);
        let value = OnceLock::new();
        let spliced = rt.storage.is_none()
            && rawjson::object(
                &stored.data,
                rt.kind,
                &rt.api_version(),
                stored.revision,
                &mut json,
            );
        if !spliced {
            let v = materialize(rt, stored).ok()?;
            json = serde_json::to_vec(&v).ok()?;
            let _ = value.set(Some(v));
        }
        Some(Arc::new(Encoded {
            rt,
            json: Bytes::from(json),
            value,
        }))
    };
    match ev.memo.get() {
        Some(memo) => match memo.clone().downcast::<Encoded>() {
            Ok(e) if std::ptr::eq(e.rt, rt) => Some(e),
            // Kept for another resource type (events.k8s.io and core Events share storage).
            _ => fresh(),
        },
        None => {
            let e = fresh()?;
            // Another watcher may have been first meanwhile; either encoding is the same.
            let _ = ev.memo.set(e.clone());
            Some(e)
        }
    }
}

struct Encoder {
    rt: &'static ResourceType,
    /// A Table watch, and what its rows carry as `object`.
    table: Option<IncludeObject>,
    /// Objects as `PartialObjectMetadata`.
    metadata_only: bool,
    columns_sent: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let table = self.table.filter(|_| kind != "ERROR" && kind != "BOOKMARK");
        let object = if let Some(include) = table {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let t = table::table(
                self.rt,
                std::slice::from_ref(obj),
                rv,
                !self.columns_sent,
                include,
            );
            self.columns_sent = true;
            t
        } else if self.metadata_only && kind != "ERROR" && kind != "BOOKMARK" {
            table::partial_metadata(obj)
        } else {
            obj.clone()
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// [`Encoder::line`] for an event's shared encoding: its JSON bytes are reused as they are.
    /// None when a Table is wanted and the object does not parse.
    fn line_encoded(&mut self, kind: &str, e: &Encoded) -> Option<Bytes> {
        if self.table.is_some() || self.metadata_only {
            return Some(self.line(kind, e.value()?));
        }
        let mut bytes = Vec::with_capacity(e.json.len() + 32);
        bytes.extend_from_slice(b"{\"type\":\"");
        bytes.extend_from_slice(kind.as_bytes());
        bytes.extend_from_slice(b"\",\"object\":");
        bytes.extend_from_slice(&e.json);
        bytes.extend_from_slice(b"}\n");
        Some(Bytes::from(bytes))
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}),
        )
    }
}

fn expired(message: String) -> Value {
    let mut status = ApiError::Gone(message).status();
    status["reason"] = json!("Expired");
    status
}

/// Serve a watch request.
pub(super) async fn serve(
    state: Arc<AppState>,
    rt: &'static ResourceType,
    ns: Option<String>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let filter = Filter::from_query(rt, q)?;
    let bookmarks = flag(q, "allowWatchBookmarks");
    let send_initial = flag(q, "sendInitialEvents");
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut initial = Vec::new();
    let from = if rv_param.is_empty() || rv_param == "0" || send_initial {
        let (objects, revision) = list_matching(&state, rt, ns.as_deref(), &filter).await?;
        initial = objects;
        revision
    } else {
        let rv = rv_param
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv_param:?}")))?;
        // A revision the store has not reached: wait briefly, then 504 (never a silent hang).
        super::wait_for_revision(&state, rv).await?;
        rv
    };
    let mut enc = Encoder {
        rt,
        table: table_wanted(headers, q)?,
        metadata_only: table::wants_metadata(headers),
        columns_sent: false,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let watch = state.store.watch(Some(&rt.storage_key()), from).await;
    tokio::spawn(async move {
        let _open = crate::metrics::watch_opened();
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(enc.line("ERROR", &expired(e.to_string()))).await;
                return;
            }
        };
        for obj in &initial {
            if tx.send(enc.line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(enc.bookmark(from, true)).await.is_err() {
            return;
        }
        let by_key = filter.by_key();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                    if bookmarks && tx.send(enc.bookmark(watch.last_revision(), false)).await.is_err() {
                        return;
                    }
                }
                ev = watch.next() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(StoreError::Gone { .. }) => {
                            let _ = tx.send(enc.line("ERROR", &expired(format!("the watch fell behind at revision {}; relist", watch.last_revision())))).await;
                            return;
                        }
                        Err(_) => return,
                    };
                    if let Some(ns) = &ns {
                        if &ev.object.key.namespace != ns {
                            continue;
                        }
                    }
                    // Selectors on the key alone are decided before anything is encoded, and
                    // a key is the same before and after a change.
                    if by_key && !filter.fields.matches_key(&ev.object.key.namespace, &ev.object.key.name) {
                        continue;
                    }
                    let Some(obj) = encoded(rt, &ev) else { continue };
                    let now = if by_key {
                        true
                    } else {
                        let Some(v) = obj.value() else { continue };
                        filter.matches(v)
                    };
                    let before = match &ev.previous {
                        // Without selectors every object matches: nothing to look at.
                        Some(prev) if !by_key => {
                            let p = StoredObject { key: ev.object.key.clone(), revision: ev.object.revision, data: prev.clone() };
                            materialize(rt, &p).map(|o| filter.matches(&o)).unwrap_or(now)
                        }
                        _ => now,
                    };
                    let kind = match (ev.kind, before, now) {
                        (EventKind::Added, _, true) => "ADDED",
                        (EventKind::Modified, true, true) => "MODIFIED",
                        (EventKind::Modified, false, true) => "ADDED",
                        (EventKind::Modified, true, false) => "DELETED",
                        (EventKind::Deleted, _, true) => "DELETED",
                        _ => continue,
                    };
                    let Some(line) = enc.line_encoded(kind, &obj) else { continue };
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKey;

    fn event(rev: u64) -> Event {
        Event {
            kind: EventKind::Modified,
            object: StoredObject {
                key: ObjectKey {
                    resource: "pods".into(),
                    namespace: "default".into(),
                    name: "p".into(),
                },
                revision: rev,
                data: Bytes::from_static(
                    br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
                ),
            },
            previous: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn one_encoding_serves_every_watcher_and_reads_as_the_plain_line() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let ev = event(42);
        let first = encoded(pods, &ev).unwrap();
        let second = encoded(pods, &ev).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second watcher reuses the first encoding"
        );
        assert_eq!(first.value().unwrap()["metadata"]["resourceVersion"], "42");
        // The spliced JSON reads as the materialized object.
        let spliced: Value = serde_json::from_slice(&first.json).unwrap();
        assert_eq!(spliced, materialize(pods, &ev.object).unwrap());
        let mut enc = Encoder {
            rt: pods,
            table: None,
            metadata_only: false,
            columns_sent: false,
        };
        for kind in ["ADDED", "MODIFIED", "DELETED"] {
            let shared: Value =
                serde_json::from_slice(&enc.line_encoded(kind, &first).unwrap()).unwrap();
            let plain: Value =
                serde_json::from_slice(&enc.line(kind, first.value().unwrap())).unwrap();
            assert_eq!(shared, plain);
            assert!(enc.line_encoded(kind, &first).unwrap().ends_with(b"\n"));
        }
        // Another resource type over the same storage gets its own encoding.
        let events_core = crate::resources::find("", "v1", "events").unwrap();
        let other = encoded(events_core, &ev).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.value().unwrap()["kind"], "Event");
        // A table watch renders rows from the shared value.
        let mut table = Encoder {
            rt: pods,
            table: Some(IncludeObject::Metadata),
            metadata_only: false,
            columns_sent: false,
        };
        let row: Value =
            serde_json::from_slice(&table.line_encoded("ADDED", &first).unwrap()).unwrap();
        assert_eq!(row["object"]["kind"], "Table");
    }
}
