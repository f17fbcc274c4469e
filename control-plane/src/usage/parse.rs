//! The node's `/metrics/resource` text (the kubelet's format, `skiff_node::resourcemetrics`)
//! into samples. Unknown families are skipped; a malformed line is skipped, never trusted.
//! Pure.

use std::collections::BTreeMap;

/// One container's cumulative counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ContainerSample {
    /// CPU time, seconds.
    pub cpu_seconds: f64,
    /// Working set, bytes.
    pub memory_bytes: u64,
    /// HTTP requests answered.
    pub http_requests: u64,
}

/// (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// One scrape of one node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// When the node took it (milliseconds since the epoch; the samples' timestamp).
    pub at_ms: i64,
    /// Per container.
    pub containers: BTreeMap<ContainerKey, ContainerSample>,
    /// The node's CPU time (seconds) and working set (bytes).
    pub node: Option<(f64, u64)>,
}

/// One sample line: name, labels, value, timestamp.
type Line<'a> = (&'a str, BTreeMap<String, String>, f64, Option<i64>);

/// `name{k="v",...} value [timestamp]` into its parts.
fn line(l: &str) -> Option<Line<'_>> {
    let l = l.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let name_end = l.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &l[..name_end];
    let mut rest = &l[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim();
            let quoted = body[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut escaped = false;
            let mut close = None;
            for (i, c) in quoted.char_indices() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        close = Some(i);
                        break;
                    }
                    (false, c) => value.push(c),
                }
            }
            labels.insert(key.to_string(), value);
            body = &quoted[close? + 1..];
        }
    }
    let mut fields = rest.split_whitespace();
    let value: f64 = fields.next()?.parse().ok()?;
    let ts = fields.next().and_then(|t| t.parse().ok());
    value.is_finite().then_some((name, labels, value, ts))
}

/// Parse a scrape. Pure.
pub fn parse(text: &str) -> Scrape {
    let mut out = Scrape::default();
    let mut node = (None, None);
    for l in text.lines() {
        let Some((name, labels, value, ts)) = line(l) else {
            continue;
        };
        if let Some(ts) = ts {
            out.at_ms = out.at_ms.max(ts);
        }
        let key = || -> Option<ContainerKey> {
            Some((
                labels.get("namespace")?.clone(),
                labels.get("pod")?.clone(),
                labels.get("container")?.clone(),
            ))
        };
        let v = value.max(0.0);
        match name {
            "container_cpu_usage_seconds_total" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().cpu_seconds = v;
                }
            }
            "container_memory_working_set_bytes" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().memory_bytes = v as u64;
                }
            }
            "skiff_container_http_requests_total" => {
                if let Some(k) = key() {
                    out.containers.entry(k).or_default().http_requests = v as u64;
                }
            }
            "node_cpu_usage_seconds_total" => node.0 = Some(v),
            "node_memory_working_set_bytes" => node.1 = Some(v as u64),
            _ => {}
        }
    }
    if let (Some(cpu), Some(mem)) = node {
        out.node = Some((cpu, mem));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_resource_metrics_and_skips_what_it_cannot_read() {
        let text = r#"# HELP container_cpu_usage_seconds_total [STABLE] x
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="main",namespace="a",pod="web"} 1.500000000 1700000000000
container_memory_working_set_bytes{container="main",namespace="a",pod="web"} 65536 1700000000000
skiff_container_http_requests_total{container="main",namespace="a",pod="web"} 10 1700000000000
container_cpu_usage_seconds_total{container="c",namespace="b",pod="odd \"one\", with\\slash",} 2 1700000000500
container_cpu_usage_seconds_total{container="x",namespace="a"} 9 1700000000000
container_cpu_usage_seconds_total{container="y",namespace="a",pod="p"} NaN 1700000000000
container_cpu_usage_seconds_total{container="z",namespace="a",pod="p" 3
container_memory_working_set_bytes{container="w",namespace="a",pod="p"} -5
garbage
node_cpu_usage_seconds_total 3.000000000 1700000000000
node_memory_working_set_bytes 1048576 1700000000000
"#;
        let s = parse(text);
        assert_eq!(s.at_ms, 1700000000500);
        assert_eq!(s.node, Some((3.0, 1048576)));
        let k = |ns: &str, pod: &str, c: &str| (ns.to_string(), pod.to_string(), c.to_string());
        assert_eq!(
            s.containers.get(&k("a", "web", "main")),
            Some(&ContainerSample {
                cpu_seconds: 1.5,
                memory_bytes: 65536,
                http_requests: 10
            })
        );
        assert_eq!(
            s.containers
                .get(&k("b", "odd \"one\", with\\slash", "c"))
                .map(|c| c.cpu_seconds),
            Some(2.0)
        );
        assert_eq!(
            s.containers.get(&k("a", "p", "w")).map(|c| c.memory_bytes),
            Some(0)
        );
        assert_eq!(s.containers.len(), 3, "{:?}", s.containers.keys());
    }
}
