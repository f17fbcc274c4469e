//! When the control plane is down, workloads go on: a joined node keeps running its pods and
//! its gateway keeps answering for their Service with the routes it last knew, with no failed
//! request; when the server comes back, the node resyncs without restarting or duplicating a
//! pod. The outage lasts `SKIFF_OUTAGE_SECONDS` (10 by default; the issue's measurement is 60).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{eventually, example, http_get, Cluster};
use crate::T;

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: hello
        image: http-hello:latest
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  containers: [{name: ticker, image: ticker:latest}]
"#;

/// Pod names with their uids and restart counts, sorted.
fn pods(c: &Cluster) -> String {
    c.jsonpath(
        &["pods"],
        "{range .items[*]}{.metadata.name}/{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}",
    )
}

#[test]
fn workloads_keep_serving_while_the_control_plane_is_down() {
    let outage = std::env::var("SKIFF_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    let mut c = Cluster::start(&["--no-node"]);
    c.push_ok("http-hello:latest", &example("http_hello", true));
    c.push_ok("ticker:latest", &example("ticker", false));
    c.join_node("worker");
    c.wait_for(
        &["node", "worker"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    c.apply(WORKLOADS);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/ticker",
        "--timeout=60s",
    ]);
    let gw = c.gateway("worker");
    eventually("the Service answers", T, || {
        matches!(http_get(&gw, "web.default.svc", "/"), Ok((200, _))).then_some(())
    });
    let before = pods(&c);

    // About 100 requests a second through the node's gateway, for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let (stop, ok, failed, gw) = (stop.clone(), ok.clone(), failed.clone(), gw.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http_get(&gw, "web.default.svc", "/") {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failed.lock().unwrap().push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    eventually("the load runs", T, || {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    });

    // Every API server down (this cluster has one) for the outage.
    c.kill9();
    let during = ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(outage));
    let served = ok.load(Ordering::Relaxed) - during;
    c.start_again_at_same_address(&["--no-node"]);

    // The node comes back to the same pods: none restarted, none duplicated.
    c.wait_for(
        &["node", "worker"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    let after = eventually("the pods as before", T, || {
        let now = pods(&c);
        (now == before).then_some(now)
    });
    // And the control plane works on: a scale-up lands on the node.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let failed = failed.lock().unwrap().clone();
    eprintln!(
        "outage of {outage} s: {served} requests served during it, {} in all, {} failed",
        ok.load(Ordering::Relaxed),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        served > outage * 20,
        "the gateway kept serving through the outage: {served} requests in {outage} s"
    );
    assert_eq!(after, before);
    let logs = c.kubectl_ok(&["logs", "ticker", "--tail=1"]);
    assert!(!logs.is_empty(), "the ticker still logs");
}
