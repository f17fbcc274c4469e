//! `GET /metrics/resource` on the agent endpoint (`nodes/metrics`): the kubelet's resource
//! metrics, in its names and format (Prometheus text with a millisecond timestamp per sample),
//! which the API server scrapes for `metrics.k8s.io` (`kubectl top`) as metrics-server scrapes
//! kubelets: per container its CPU time (`container_cpu_usage_seconds_total`) and linear memory
//! (`container_memory_working_set_bytes`), per pod the same summed, for the node the agent
//! process's CPU time and resident memory; and, beyond the kubelet, the requests each HTTP
//! container answered (`skiff_container_http_requests_total`), for the HPA's
//! `http_requests_per_second`. [`render`] is pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One container's counters at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// CPU time, seconds.
    pub cpu_seconds: f64,
    /// Linear memory of the running instance, bytes.
    pub memory_bytes: u64,
    /// HTTP requests answered (0 for a command).
    pub http_requests: u64,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text for `containers` and the node's (`cpu_seconds`, `memory_bytes`) at
/// `now_ms` (milliseconds since the epoch). Pure.
pub fn render(containers: &[Sample], node: (f64, u64), now_ms: i64) -> String {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    for c in containers {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {:.9} {now_ms}",
            esc(&c.container),
            esc(&c.namespace),
            esc(&c.pod),
            c.cpu_seconds
        );
    }
    head(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    for c in containers {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {now_ms}",
            esc(&c.container),
            esc(&c.namespace),
            esc(&c.pod),
            c.memory_bytes
        );
    }
    let mut pods: BTreeMap<(&str, &str), (f64, u64)> = BTreeMap::new();
    for c in containers {
        let p = pods.entry((&c.namespace, &c.pod)).or_default();
        p.0 += c.cpu_seconds;
        p.1 += c.memory_bytes;
    }
    head(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    for ((ns, pod), (cpu, _)) in &pods {
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {cpu:.9} {now_ms}",
            esc(ns),
            esc(pod)
        );
    }
    head(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    for ((ns, pod), (_, mem)) in &pods {
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {mem} {now_ms}",
            esc(ns),
            esc(pod)
        );
    }
    head(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
    );
    let _ = writeln!(out, "node_cpu_usage_seconds_total {:.9} {now_ms}", node.0);
    head(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
    );
    let _ = writeln!(out, "node_memory_working_set_bytes {} {now_ms}", node.1);
    let _ = writeln!(
        out,
        "# HELP skiff_container_http_requests_total HTTP requests the container answered.\n# TYPE skiff_container_http_requests_total counter"
    );
    for c in containers.iter().filter(|c| c.http_requests > 0) {
        let _ = writeln!(
            out,
            "skiff_container_http_requests_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {now_ms}",
            esc(&c.container),
            esc(&c.namespace),
            esc(&c.pod),
            c.http_requests
        );
    }
    out
}

/// The agent process's CPU time (user + system, seconds) and resident memory (bytes), from
/// `/proc/self/stat` (in the kernel's fixed 100 ticks per second) and `/proc/self/status`.
pub fn process_usage() -> (f64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in its parentheses.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_kubelets_resource_metrics() {
        let c = |ns: &str, pod: &str, container: &str, cpu, mem, http| Sample {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            cpu_seconds: cpu,
            memory_bytes: mem,
            http_requests: http,
        };
        let text = render(
            &[
                c("a", "web", "main", 1.5, 65536, 10),
                c("a", "web", "side", 0.25, 1024, 0),
                c("b", "job\"x", "main", 0.0, 0, 0),
            ],
            (3.0, 1 << 20),
            1700000000000,
        );
        for want in [
            "container_cpu_usage_seconds_total{container=\"main\",namespace=\"a\",pod=\"web\"} 1.500000000 1700000000000",
            "container_memory_working_set_bytes{container=\"side\",namespace=\"a\",pod=\"web\"} 1024 1700000000000",
            "pod_cpu_usage_seconds_total{namespace=\"a\",pod=\"web\"} 1.750000000 1700000000000",
            "pod_memory_working_set_bytes{namespace=\"a\",pod=\"web\"} 66560 1700000000000",
            "pod_cpu_usage_seconds_total{namespace=\"b\",pod=\"job\\\"x\"} 0.000000000",
            "node_cpu_usage_seconds_total 3.000000000 1700000000000",
            "node_memory_working_set_bytes 1048576 1700000000000",
            "skiff_container_http_requests_total{container=\"main\",namespace=\"a\",pod=\"web\"} 10 1700000000000",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert!(!text.contains("skiff_container_http_requests_total{container=\"side\""));
    }

    #[test]
    fn the_process_uses_some_memory() {
        let (_, rss) = process_usage();
        assert!(rss > 0);
    }
}
