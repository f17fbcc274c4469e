//! Watch streams: chunked, one `WatchEvent` JSON per line, in revision order with nothing
//! skipped; initial events for `resourceVersion` ""/"0" or `sendInitialEvents`; bookmarks when
//! allowed; objects that stop (or start) matching the selectors leave (or enter) as DELETED
//! (or ADDED); 410 `Expired` as an in-stream ERROR when the revision was compacted.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::handlers::{flag, list_matching, materialize, wants_table, Filter, Query};
use super::{table, AppState};
use crate::resources::ResourceType;
use crate::store::{EventKind, StoreError, StoredObject};

struct Encoder {
    rt: &'static ResourceType,
    table: bool,
    columns_sent: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table && kind != "ERROR" && kind != "BOOKMARK" {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let t = table::table(self.rt, std::slice::from_ref(obj), rv, !self.columns_sent);
            self.columns_sent = true;
            t
        } else {
            obj.clone()
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
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
        rv_param
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv_param:?}")))?
    };
    let mut enc = Encoder {
        rt,
        table: wants_table(headers),
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
                    let Ok(obj) = materialize(rt, &ev.object) else { continue };
                    let now = filter.matches(&obj);
                    let before = match &ev.previous {
                        Some(prev) => {
                            let p = StoredObject { key: ev.object.key.clone(), revision: ev.object.revision, data: prev.clone() };
                            materialize(rt, &p).map(|o| filter.matches(&o)).unwrap_or(now)
                        }
                        None => now,
                    };
                    let kind = match (ev.kind, before, now) {
                        (EventKind::Added, _, true) => "ADDED",
                        (EventKind::Modified, true, true) => "MODIFIED",
                        (EventKind::Modified, false, true) => "ADDED",
                        (EventKind::Modified, true, false) => "DELETED",
                        (EventKind::Deleted, _, true) => "DELETED",
                        _ => continue,
                    };
                    if tx.send(enc.line(kind, &obj)).await.is_err() {
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
