//! Autoscaling end to end: resource metrics from the nodes (`kubectl top pods|nodes`, served as
//! `metrics.k8s.io` by the API server) and the custom metric `http_requests_per_second`.

use crate::harness::{eventually, example, Cluster};
use crate::{manifest, T};

/// Millicores of a `kubectl top` CPU column (`250m`, `1`).
fn millicores(v: &str) -> Option<u64> {
    match v.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => v.parse::<u64>().ok().map(|c| c * 1000),
    }
}

#[test]
fn kubectl_top_shows_what_pods_and_nodes_use() {
    let c = Cluster::start(&["--metric-resolution", "1s"]);
    c.push_ok("spinner:latest", &example("spinner", false));
    c.push_ok("ticker:latest", &example("ticker", false));
    c.apply(&manifest("spinner"));
    c.apply(&manifest("ticker"));
    for p in ["spinner", "ticker"] {
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    // The spinner (held to 100m) uses more CPU than the ticker, which mostly sleeps. (Not
    // compared with its limit: over a 1 s window the figure is coarse.)
    let (spinner, ticker) = eventually("kubectl top pods shows both", T, || {
        let out = c.kubectl(&["top", "pods", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cpu = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(millicores)
        };
        let (s, t) = (cpu("spinner")?, cpu("ticker")?);
        (s >= 50).then_some((s, t))
    });
    assert!(spinner > ticker, "spinner {spinner}m, ticker {ticker}m");
    // Per container, one pod, a label selector, nodes.
    let one = c.kubectl_ok(&["top", "pod", "spinner", "--containers", "--no-headers"]);
    assert!(
        one.starts_with("spinner") && one.contains("spinner "),
        "{one}"
    );
    let none = c.kubectl(&["top", "pods", "-l", "app=nothing"]);
    let text = String::from_utf8_lossy(&none.stderr);
    assert!(text.contains("No resources found"), "{text}");
    let nodes = c.kubectl_ok(&["top", "nodes", "--no-headers"]);
    assert_eq!(nodes.lines().count(), 1, "{nodes}");
    // The API objects, as metrics-server serves them.
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spinner",
    ]);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("PodMetrics");
    assert_eq!(v["kind"], "PodMetrics");
    assert_eq!(v["containers"][0]["name"], "spinner");
    assert!(v["containers"][0]["usage"]["cpu"]
        .as_str()
        .is_some_and(|c| c.ends_with('n')));
    let missing = c.kubectl(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/ghost",
    ]);
    let text = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && text.contains("NotFound"),
        "{text}"
    );
}
