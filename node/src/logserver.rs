//! The agent's own HTTPS endpoint: `GET /containerLogs/{ns}/{pod}/{container}`, called by the
//! API server (with its client certificate) to serve `kubectl logs`, including `follow`, and
//! `GET /metrics` (Prometheus text): CPU time per container, pods, resident memory, and
//! `GET /metrics/resource` (the kubelet's resource metrics, `crate::resourcemetrics`). Who may
//! call is the cluster's RBAC (`nodes/proxy`, `nodes/metrics`), asked by `crate::serving`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::logs::{self, ReadOptions};
use crate::serving::Caller;
use crate::NodeContext;

struct LogState {
    ctx: Arc<NodeContext>,
    guard: crate::serving::Guard,
}

/// The router of the agent endpoint.
pub fn router(ctx: Arc<NodeContext>, guard: crate::serving::Guard) -> Router {
    Router::new()
        .route(
            &format!(
                "{}/{{ns}}/{{pod}}/{{container}}",
                skiff_common::NODE_LOGS_PATH
            ),
            get(container_logs),
        )
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
        .with_state(Arc::new(LogState { ctx, guard }))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    uid: Option<String>,
    follow: Option<String>,
    previous: Option<String>,
    timestamps: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    limit_bytes: Option<usize>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1"))
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (code, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}))).into_response()
}

fn find_pod_dir(root: &Path, ns: &str, pod: &str, uid: Option<&str>) -> Option<PathBuf> {
    // These strings come from a request: only names Kubernetes allows become part of a path.
    if let Some(uid) = uid {
        let d = logs::pod_dir(root, ns, pod, uid)?;
        return d.exists().then_some(d);
    }
    if !skiff_common::names::is_dns1123_label(ns) || !skiff_common::names::is_dns1123_subdomain(pod)
    {
        return None;
    }
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn runs(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// One metric family: name, type, help, and the value of one container.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::runtime::Usage) -> String,
);

/// A metrics request let through by the guard (`nodes/metrics`): what each container uses now;
/// otherwise the refusal.
async fn metrics_allowed(
    state: &LogState,
    method: &Method,
    headers: &HeaderMap,
    cert: Option<Extension<Caller>>,
) -> Result<Vec<UsageEntry>, Response> {
    let cert = cert.map(|Extension(c)| c);
    state
        .guard
        .check(method, headers, cert.as_ref(), "metrics")
        .await?;
    Ok(match state.ctx.usage.lock() {
        Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(_) => Vec::new(),
    })
}

/// `GET /metrics` (`nodes/metrics`): Prometheus text with CPU time per container and the pods
/// and memory of this node.
async fn metrics(
    State(state): State<Arc<LogState>>,
    method: Method,
    headers: HeaderMap,
    cert: Option<Extension<Caller>>,
) -> Response {
    let usage = match metrics_allowed(&state, &method, &headers, cert).await {
        Ok(usage) => usage,
        Err(denied) => return denied,
    };
    let pods: std::collections::HashSet<&str> =
        usage.iter().map(|((uid, _, _), _)| uid.as_str()).collect();
    let (_, rss_bytes) = crate::resourcemetrics::process_usage();
    use std::sync::atomic::Ordering::Relaxed;
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    let families: [Family; 4] = [
        (
            "skiff_container_cpu_seconds_total",
            "counter",
            "CPU time the container's wasm instances ran.",
            |u| format!("{:.6}", u.cpu_nanos.load(Relaxed) as f64 / 1e9),
        ),
        (
            "skiff_container_memory_bytes",
            "gauge",
            "Linear memory of the container's running instance.",
            |u| u.memory_bytes.load(Relaxed).to_string(),
        ),
        (
            "skiff_container_instances",
            "gauge",
            "Instances of the container running now.",
            |u| u.instances.load(Relaxed).to_string(),
        ),
        (
            "skiff_container_restarts_total",
            "counter",
            "Times the container was restarted.",
            |u| u.restarts.load(Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for ((_, nsname, container), u) in &usage {
            let (ns, pod) = nsname.split_once('/').unwrap_or(("", nsname));
            out.push_str(&format!(
                "{name}{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {}\n",
                esc(ns),
                esc(pod),
                esc(container),
                value(u)
            ));
        }
    }
    http_metrics(&mut out, &usage, &esc);
    out.push_str(&format!(
        "# HELP skiff_node_pods Pods with containers started on this node.\n\
         # TYPE skiff_node_pods gauge\nskiff_node_pods {}\n\
         # HELP skiff_node_resident_memory_bytes Resident memory of the process running the agent.\n\
         # TYPE skiff_node_resident_memory_bytes gauge\nskiff_node_resident_memory_bytes {rss_bytes}\n",
        pods.len()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `GET /metrics/resource` (`nodes/metrics`): the kubelet's resource metrics
/// (`crate::resourcemetrics`).
async fn resource_metrics(
    State(state): State<Arc<LogState>>,
    method: Method,
    headers: HeaderMap,
    cert: Option<Extension<Caller>>,
) -> Response {
    let usage = match metrics_allowed(&state, &method, &headers, cert).await {
        Ok(usage) => usage,
        Err(denied) => return denied,
    };
    use std::sync::atomic::Ordering::Relaxed;
    let samples: Vec<crate::resourcemetrics::Sample> = usage
        .iter()
        .map(|((_, nsname, container), u)| {
            let (ns, pod) = nsname.split_once('/').unwrap_or(("", nsname));
            crate::resourcemetrics::Sample {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                container: container.clone(),
                cpu_seconds: u.cpu_nanos.load(Relaxed) as f64 / 1e9,
                memory_bytes: u.memory_bytes.load(Relaxed),
                http_requests: u.http.count.load(Relaxed),
            }
        })
        .collect();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let text =
        crate::resourcemetrics::render(&samples, crate::resourcemetrics::process_usage(), now_ms);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// One container's counters: (pod uid, namespace/name, container) and usage.
type UsageEntry = ((String, String, String), Arc<crate::runtime::Usage>);

/// Requests, errors and latency of HTTP containers.
fn http_metrics(out: &mut String, usage: &[UsageEntry], esc: &dyn Fn(&str) -> String) {
    use std::sync::atomic::Ordering::Relaxed;
    let served: Vec<_> = usage
        .iter()
        .filter(|(_, u)| u.http.count.load(Relaxed) > 0)
        .collect();
    let labels = |nsname: &str, container: &str| {
        let (ns, pod) = nsname.split_once('/').unwrap_or(("", nsname));
        format!(
            "namespace=\"{}\",pod=\"{}\",container=\"{}\"",
            esc(ns),
            esc(pod),
            esc(container)
        )
    };
    out.push_str("# HELP skiff_http_requests_total Requests an HTTP container answered, by status class.\n# TYPE skiff_http_requests_total counter\n");
    for ((_, nsname, c), u) in &served {
        for (i, n) in u.http.by_class.iter().enumerate() {
            out.push_str(&format!(
                "skiff_http_requests_total{{{},code=\"{}xx\"}} {}\n",
                labels(nsname, c),
                i + 1,
                n.load(Relaxed)
            ));
        }
    }
    out.push_str("# HELP skiff_http_request_errors_total Requests the container failed (trap, timeout, no response, overload).\n# TYPE skiff_http_request_errors_total counter\n");
    for ((_, nsname, c), u) in &served {
        out.push_str(&format!(
            "skiff_http_request_errors_total{{{}}} {}\n",
            labels(nsname, c),
            u.http.errors.load(Relaxed)
        ));
    }
    out.push_str("# HELP skiff_http_request_duration_seconds Time from a request to its response headers.\n# TYPE skiff_http_request_duration_seconds histogram\n");
    for ((_, nsname, c), u) in &served {
        let l = labels(nsname, c);
        for (b, n) in crate::gateway::LATENCY_BUCKETS
            .iter()
            .zip(u.http.buckets.iter())
        {
            out.push_str(&format!(
                "skiff_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}\n",
                n.load(Relaxed)
            ));
        }
        let count = u.http.count.load(Relaxed);
        out.push_str(&format!(
            "skiff_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}\n\
             skiff_http_request_duration_seconds_sum{{{l}}} {:.6}\n\
             skiff_http_request_duration_seconds_count{{{l}}} {count}\n",
            u.http.sum_micros.load(Relaxed) as f64 / 1e6
        ));
    }
}

async fn container_logs(
    State(state): State<Arc<LogState>>,
    method: Method,
    headers: HeaderMap,
    cert: Option<Extension<Caller>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let cert = cert.map(|Extension(c)| c);
    // The kubelet authorizes every path but its named ones as `nodes/proxy`.
    if let Err(denied) = state
        .guard
        .check(&method, &headers, cert.as_ref(), "proxy")
        .await
    {
        return denied;
    }
    let Some(dir) = find_pod_dir(&state.ctx.log_root, &ns, &pod, q.uid.as_deref()) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        );
    };
    if !skiff_common::names::is_dns1123_label(&container) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container:?} is not a valid container name"),
        );
    }
    let cdir = dir.join(&container);
    let all = runs(&cdir);
    let path = if truthy(&q.previous) {
        match all.len() {
            n if n >= 2 => logs::log_path(&dir, &container, all[n - 2]),
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                )
            }
        }
    } else {
        match all.last() {
            Some(n) => logs::log_path(&dir, &container, *n),
            None => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")),
        }
    };
    let since = match (&q.since_time, q.since_seconds) {
        (Some(t), _) => t.parse::<jiff::Timestamp>().ok(),
        (None, Some(s)) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
        _ => None,
    };
    let opts = ReadOptions {
        tail: q.tail_lines.filter(|n| *n >= 0).map(|n| n as usize),
        timestamps: truthy(&q.timestamps),
        since,
        offset: 0,
    };
    // The open handle is what follow goes on reading: a rotation renames the file away, the
    // handle keeps the rest of it.
    let read = std::fs::File::open(&path).and_then(|mut f| {
        use std::io::Read;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        Ok((f, data))
    });
    let (file, data) = match read {
        Ok(d) => d,
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("reading logs: {e}"),
            )
        }
    };
    // Only whole lines; the rest is picked up by follow.
    let whole = data
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let mut first = logs::render(&data[..whole], &opts);
    if let Some(limit) = q.limit_bytes {
        first.truncate(limit);
    }
    if !truthy(&q.follow) {
        return ([(header::CONTENT_TYPE, "text/plain")], first).into_response();
    }
    let active = state.ctx.active_logs.clone();
    let follow_opts = ReadOptions {
        tail: None,
        since: None,
        ..opts
    };
    let follow = Follow {
        ino: file_id(&file),
        file: tokio::fs::File::from_std(file),
        carry: data[whole..].to_vec(),
        path,
        active,
        opts: follow_opts,
    };
    let stream = futures::stream::unfold((Some(first), follow), |(pending, mut f)| async move {
        if let Some(chunk) = pending {
            return Some((Ok::<_, Infallible>(bytes::Bytes::from(chunk)), (None, f)));
        }
        f.next_chunk()
            .await
            .map(|chunk| (Ok(bytes::Bytes::from(chunk)), (None, f)))
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The identity of an open file (device, inode), to tell a rotated log from the current one.
fn file_id(file: &std::fs::File) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// A followed log: the open file, the bytes of a line not yet complete, and where new runs of
/// the file appear after a rotation.
struct Follow {
    file: tokio::fs::File,
    ino: (u64, u64),
    carry: Vec<u8>,
    path: std::path::PathBuf,
    active: crate::logs::ActiveLogs,
    opts: ReadOptions,
}

impl Follow {
    /// The next whole lines, rendered; None once the run is over and everything was sent.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            let still_writing = self.active.is_active(&self.path);
            self.file.read_to_end(&mut self.carry).await.ok()?;
            if let Some(p) = self.carry.iter().rposition(|&b| b == b'\n') {
                let lines: Vec<u8> = self.carry.drain(..=p).collect();
                return Some(logs::render(&lines, &self.opts));
            }
            // Rotated: the path names a new file. What was written to the old one before the
            // rename was read above (once more now, for a last write); go on with the new one.
            let current = tokio::fs::metadata(&self.path).await.ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            if current.is_some_and(|id| id != self.ino) {
                self.file.read_to_end(&mut self.carry).await.ok()?;
                if let Ok(f) = tokio::fs::File::open(&self.path).await {
                    self.ino = current.unwrap_or_default();
                    self.file = f;
                }
                continue;
            }
            if !still_writing {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
