//! Process-wide counters and histograms in Prometheus text format (`/metrics`): API requests by
//! verb, resource and code with latencies; store commits (latency, batch size); open watches.
//! Recording is a short mutex hold or an atomic add; nothing here can block a request for long.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Latency bucket bounds in seconds.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Batch-size bucket bounds.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, le) in self.buckets.iter_mut().zip(bounds) {
            if v <= *le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, le) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {b}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(&'static str, Resource, u16), u64>,
    latency: BTreeMap<(&'static str, Resource), Histogram>,
    commit_latency: Histogram,
    commit_batch: Histogram,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

static WATCHES: AtomicI64 = AtomicI64::new(0);

/// A resource and subresource (`""` for none), as requests name them.
pub type Resource = (&'static str, &'static str);

fn resource_label((plural, sub): Resource) -> String {
    if sub.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}/{sub}")
    }
}

/// One finished API request (no allocation once its labels have been seen).
pub fn request(verb: &'static str, resource: Resource, code: u16, took: Duration) {
    if let Ok(mut r) = registry().lock() {
        *r.requests.entry((verb, resource, code)).or_default() += 1;
        r.latency
            .entry((verb, resource))
            .or_default()
            .observe(LATENCY, took.as_secs_f64());
    }
}

/// One store commit of `batch` writes.
pub fn commit(batch: usize, took: Duration) {
    if let Ok(mut r) = registry().lock() {
        r.commit_latency.observe(LATENCY, took.as_secs_f64());
        r.commit_batch.observe(SIZES, batch as f64);
    }
}

/// A watch stream opened; the guard counts it until dropped.
pub fn watch_opened() -> WatchGuard {
    WATCHES.fetch_add(1, Ordering::Relaxed);
    WatchGuard
}

/// Counts one open watch while alive.
pub struct WatchGuard;

impl Drop for WatchGuard {
    fn drop(&mut self) {
        WATCHES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open watch streams now.
pub fn open_watches() -> i64 {
    WATCHES.load(Ordering::Relaxed)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Everything, in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    let Ok(r) = registry().lock() else {
        return out;
    };
    let _ = writeln!(
        out,
        "# HELP skiff_audit_dropped_total Audit records dropped because the writer fell behind.\n# TYPE skiff_audit_dropped_total counter\nskiff_audit_dropped_total {}",
        crate::api::audit::DROPPED.load(std::sync::atomic::Ordering::Relaxed)
    );
    out.push_str("# HELP apiserver_request_total Requests by verb, resource and HTTP code.\n# TYPE apiserver_request_total counter\n");
    for ((verb, res, code), n) in &r.requests {
        let _ = writeln!(
            out,
            "apiserver_request_total{{verb=\"{}\",resource=\"{}\",code=\"{code}\"}} {n}",
            esc(verb),
            esc(&resource_label(*res))
        );
    }
    out.push_str("# HELP apiserver_request_duration_seconds Request latency by verb and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
    for ((verb, res), h) in &r.latency {
        let labels = format!(
            "verb=\"{}\",resource=\"{}\"",
            esc(verb),
            esc(&resource_label(*res))
        );
        h.render(
            &mut out,
            "apiserver_request_duration_seconds",
            &labels,
            LATENCY,
        );
    }
    out.push_str("# HELP skiff_store_commit_duration_seconds Time to commit one group of writes (one fsync).\n# TYPE skiff_store_commit_duration_seconds histogram\n");
    r.commit_latency
        .render(&mut out, "skiff_store_commit_duration_seconds", "", LATENCY);
    out.push_str("# HELP skiff_store_commit_batch_size Writes per commit.\n# TYPE skiff_store_commit_batch_size histogram\n");
    r.commit_batch
        .render(&mut out, "skiff_store_commit_batch_size", "", SIZES);
    let _ = writeln!(
        out,
        "# HELP apiserver_registered_watchers Open watch streams.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}",
        open_watches()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        request("LIST", ("pods", ""), 200, Duration::from_micros(700));
        request("LIST", ("pods", ""), 200, Duration::from_millis(30));
        request("GET", ("pods", "log"), 404, Duration::from_millis(1));
        // Other tests commit to stores of their own at the same time: count this one's commit
        // as a difference.
        let small_batches = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(r#"skiff_store_commit_batch_size_bucket{le="4"} "#))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = small_batches(&render());
        commit(3, Duration::from_millis(2));
        let g = watch_opened();
        let text = render();
        assert!(
            text.contains(r#"apiserver_request_total{verb="LIST",resource="pods",code="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"apiserver_request_duration_seconds_bucket{verb="LIST",resource="pods",le="0.001"} 1"#), "{text}");
        assert!(text.contains(r#"apiserver_request_duration_seconds_bucket{verb="LIST",resource="pods",le="+Inf"} 2"#), "{text}");
        assert!(small_batches(&text) > before, "{text}");
        assert!(text.contains("apiserver_registered_watchers 1"), "{text}");
        assert!(
            text.contains(
                r#"apiserver_request_total{verb="GET",resource="pods/log",code="404"} 1"#
            ),
            "{text}"
        );
        drop(g);
    }
}
