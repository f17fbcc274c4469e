//! Container probes (`startupProbe`, `livenessProbe`, `readinessProbe`) of type `httpGet` and
//! `tcpSocket`, with Kubernetes' periods, thresholds and timeouts. An `httpGet` probe is a
//! request to the container's own `wasi:http` handler (in process, no socket), successful on a
//! status in 200..400; a `tcpSocket` probe succeeds while the container serves the port. A
//! container that serves no HTTP fails both, as a process with no listener would.
//!
//! Invariants: the threshold logic ([`Counter`]) is pure; a probe never outlives its container.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::gateway::Served;

/// What a probe checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `httpGet`: path, port, extra headers.
    Http {
        path: String,
        port: IntOrString,
        headers: Vec<(String, String)>,
    },
    /// `tcpSocket`: port.
    Tcp { port: IntOrString },
}

/// A probe with Kubernetes' defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// What it checks.
    pub action: Action,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Read a Kubernetes probe; `None` for a probe skiff does not run (`exec`, refused at
    /// admission, or `grpc`).
    pub fn from_k8s(p: &Probe) -> Option<ProbeSpec> {
        let secs =
            |v: Option<i32>, d: i32| Duration::from_secs(v.filter(|v| *v > 0).unwrap_or(d) as u64);
        let action = if let Some(h) = &p.http_get {
            Action::Http {
                path: h
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into()),
                port: h.port.clone(),
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp {
                port: t.port.clone(),
            }
        } else {
            return None;
        };
        Some(ProbeSpec {
            action,
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            success_threshold: p.success_threshold.filter(|v| *v > 0).unwrap_or(1) as u32,
            failure_threshold: p.failure_threshold.filter(|v| *v > 0).unwrap_or(3) as u32,
        })
    }
}

/// Consecutive results against the thresholds: the probe's verdict changes only after
/// `success_threshold` successes or `failure_threshold` failures in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    successes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl Counter {
    /// No verdict yet.
    pub fn new() -> Self {
        Counter {
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Record one result; returns the verdict when it changes.
    pub fn record(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= spec.success_threshold {
            Some(true)
        } else if self.failures >= spec.failure_threshold {
            Some(false)
        } else {
            self.verdict
        };
        if verdict != self.verdict {
            self.verdict = verdict;
            return verdict;
        }
        None
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

fn port_of(served: &Served, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => served
            .port_named(name)
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

/// Run one check of `spec` against `served` (`None`: the container serves no HTTP).
pub async fn check(spec: &ProbeSpec, served: Option<&Arc<Served>>) -> Result<(), String> {
    let Some(served) = served else {
        let port = match &spec.action {
            Action::Http { port, .. } | Action::Tcp { port } => match port {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            },
        };
        return Err(format!(
            "dial tcp :{port}: connect: connection refused (the container is not a wasi:http component)"
        ));
    };
    match &spec.action {
        Action::Tcp { port } => {
            let port = port_of(served, port)?;
            if served.ports.is_empty() || served.ports.iter().any(|(_, p)| *p == port) {
                Ok(())
            } else {
                Err(format!("dial tcp :{port}: connect: connection refused"))
            }
        }
        Action::Http {
            path,
            port,
            headers,
        } => {
            let port = port_of(served, port)?;
            let mut req = Request::get(path.as_str())
                .body(
                    http_body_util::Empty::new()
                        .map_err(|e: std::convert::Infallible| match e {})
                        .boxed_unsync(),
                )
                .map_err(|e| format!("probe request: {e}"))?;
            let h = req.headers_mut();
            h.insert(
                http::header::HOST,
                HeaderValue::from_str(&format!("localhost:{port}")).map_err(|e| e.to_string())?,
            );
            h.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static("kube-probe/1.32"),
            );
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v))
                {
                    h.insert(k, v);
                }
            }
            match tokio::time::timeout(spec.timeout, served.probe(req)).await {
                Err(_) => Err(format!(
                    "Get \"http://localhost:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    if (200..400).contains(&code) {
                        Ok(())
                    } else {
                        Err(format!("HTTP probe failed with statuscode: {code}"))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: Action::Tcp {
                port: IntOrString::Int(80),
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn thresholds_decide_when_the_verdict_changes() {
        // (success threshold, failure threshold, results, verdict changes after each result)
        type Case = (u32, u32, Vec<bool>, Vec<Option<bool>>);
        let cases: Vec<Case> = vec![
            (1, 3, vec![true, true], vec![Some(true), None]),
            (
                1,
                3,
                vec![true, false, false, false, true],
                vec![Some(true), None, None, Some(false), Some(true)],
            ),
            // Failures must be consecutive.
            (
                1,
                2,
                vec![false, true, false, false],
                vec![None, Some(true), None, Some(false)],
            ),
            // Readiness with successThreshold 2.
            (
                2,
                1,
                vec![true, false, true, true],
                vec![None, Some(false), None, Some(true)],
            ),
        ];
        for (i, (s, f, results, want)) in cases.into_iter().enumerate() {
            let sp = spec(s, f);
            let mut c = Counter::new();
            let got: Vec<Option<bool>> = results.into_iter().map(|r| c.record(r, &sp)).collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn kubernetes_defaults_fill_in() {
        let p: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"port": "http"}
        }))
        .unwrap();
        let s = ProbeSpec::from_k8s(&p).unwrap();
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(
            s.action,
            Action::Http {
                path: "/".into(),
                port: IntOrString::String("http".into()),
                headers: vec![]
            }
        );
        let grpc: Probe = serde_json::from_value(serde_json::json!({"grpc": {"port": 1}})).unwrap();
        assert_eq!(ProbeSpec::from_k8s(&grpc), None);
    }
}
