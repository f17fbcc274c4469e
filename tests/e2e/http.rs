//! HTTP services: wasi:http pods served by node gateways, Services, Ingresses, NodePorts,
//! probes, outbound HTTP policy, and rollouts and drains that drop no request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{eventually, example, http_get, http_get_with, Cluster};
use crate::{manifest, T};

fn push_http_examples(c: &Cluster) {
    c.push_ok("http-hello:latest", &example("http_hello", true));
    c.push_ok("http-api:latest", &example("http_api", true));
    c.push_ok("http-caller:latest", &example("http_caller", true));
}

/// The example manifest without its fixed nodePort (tests run side by side).
fn hello_manifest() -> String {
    manifest("http-hello").replace("    nodePort: 30080\n", "")
}

fn ok_body(addr: &str, host: &str, path: &str) -> String {
    eventually(
        &format!("200 from {host}{path} at {addr}"),
        T,
        || match http_get(addr, host, path) {
            Ok((200, body)) => Some(body),
            _ => None,
        },
    )
}

#[test]
fn http_pods_are_served_by_pod_service_ingress_and_node_port() {
    // The admin lets pods reach 127.0.0.1 when they name it exactly (the gateway serves as an
    // outside server below); a wildcard never reaches the node.
    let c = Cluster::start(&["--allow-local-outbound", "127.0.0.1"]);
    push_http_examples(&c);
    c.apply(&hello_manifest());
    c.apply(&manifest("http-api"));
    c.apply(&manifest("http-caller"));
    for d in ["http-hello", "http-api", "http-caller"] {
        c.kubectl_ok(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=60s",
        ]);
    }
    let gw = c.gateway("testnode");

    // A pod, by its pod host name at its node's gateway (its podIP is the node's address).
    let pod = c.jsonpath(
        &["pods", "-l", "app=http-hello"],
        "{.items[0].metadata.name}",
    );
    let ip = c.jsonpath(&["pod", &pod], "{.status.podIP}");
    assert!(
        gw.starts_with(&format!("{ip}:")),
        "podIP {ip} is the gateway's address {gw}"
    );
    // Only the cluster may name a pod: a client outside gets a 404 that says so; another
    // node's gateway, with the peer proof derived from the join token, is served.
    let pod_host = format!("{pod}.default.pod");
    let (code, body) = http_get(&gw, &pod_host, "/").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("reachable only inside the cluster"), "{body}");
    let token = std::fs::read_to_string(c.kubeconfig.parent().unwrap().join("node-token")).unwrap();
    let proof = skiff_common::token::gateway_peer_secret(&token);
    let wrong = skiff_common::token::gateway_peer_secret("K10x::node:guess");
    let peer = skiff_common::token::GATEWAY_PEER_HEADER;
    assert_eq!(
        http_get_with(&gw, &pod_host, "/", &[(peer, &wrong)])
            .unwrap()
            .0,
        404
    );
    let body = eventually(
        "the pod by its host name, as a peer",
        T,
        || match http_get_with(&gw, &pod_host, "/", &[(peer, &proof)]) {
            Ok((200, body)) => Some(body),
            _ => None,
        },
    );
    assert_eq!(body, format!("hello from {pod} (v1)\n"));

    // The Service by every cluster name; both replicas answer.
    let mut seen = std::collections::BTreeSet::new();
    for host in [
        "http-hello",
        "http-hello.default",
        "http-hello.default.svc",
        "http-hello.default.svc.cluster.local:80",
    ] {
        for _ in 0..4 {
            let body = ok_body(&gw, host, "/");
            assert!(body.starts_with("hello from http-hello-"), "{host}: {body}");
            seen.insert(body);
        }
    }
    assert_eq!(seen.len(), 2, "both endpoints take requests: {seen:?}");

    // Ingress rules: host and path.
    let body = ok_body(&gw, "hello.local", "/anything");
    assert!(body.starts_with("hello from http-hello-"), "{body}");
    assert_eq!(
        ok_body(&gw, "api.local", "/items/2"),
        r#"{"id":2,"name":"oar"}"#
    );
    // The Ingress publishes the gateways that serve it.
    c.wait_for(
        &["ingress", "http-hello"],
        "{.status.loadBalancer.ingress[0].ip}:{.status.loadBalancer.ingress[0].ports[0].port}",
        &gw,
        T,
    );
    let (status, body) = http_get(&gw, "api.local", "/other").expect("gateway answers");
    assert_eq!(status, 404, "no rule for api.local/other: {body}");
    let (status, body) = http_get(&gw, "nowhere.example", "/").expect("gateway answers");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no Service, pod or Ingress rule"), "{body}");

    // The NodePort listens on the node.
    let node_port = c.jsonpath(&["service", "http-hello"], "{.spec.ports[0].nodePort}");
    let ip = gw.split(':').next().unwrap_or_default();
    let body = ok_body(&format!("{ip}:{node_port}"), "whatever", "/");
    assert!(body.starts_with("hello from http-hello-"), "{body}");

    // Endpoints list the ready pods.
    let eps = c.jsonpath(
        &["endpoints", "http-hello"],
        "{.subsets[0].addresses[*].targetRef.name}",
    );
    assert_eq!(eps.split_whitespace().count(), 2, "{eps}");

    // Outbound HTTP: an in-cluster Service is allowed, anything else denied with an event.
    let body = ok_body(&gw, "caller.local", "/");
    assert!(
        body.starts_with("http://http-hello/ answered 200: hello from http-hello-"),
        "{body}"
    );
    let (status, body) =
        http_get(&gw, "caller.local", "/?url=http://example.com/").expect("gateway answers");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    c.wait_for(
        &["events", "--field-selector", "reason=OutboundDenied"],
        "{.items[0].message}",
        "outbound HTTP to example.com:80 denied: not a Service of the cluster and not in the pod's skiff.dev/allowed-outbound-hosts annotation",
        T,
    );
    // A wildcard allow-list does not reach the node's own addresses.
    c.kubectl_ok(&[
        "patch",
        "deployment",
        "http-caller",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/allowed-outbound-hosts":"*"}}}}}"#,
    ]);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-caller",
        "--timeout=60s",
    ]);
    let denied = eventually("a wildcard does not reach the node", T, || {
        match http_get(&gw, "caller.local", &format!("/?url=http://{gw}/")) {
            Ok((502, b)) => Some(b),
            _ => None,
        }
    });
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    let want = format!(
        "outbound HTTP to 127.0.0.1:{} denied: it resolves to 127.0.0.1, an address of the node or the control plane",
        gw.rsplit(':').next().unwrap()
    );
    c.wait_for(
        &["events"],
        &format!("{{.items[?(@.message==\"{want}\")].message}}"),
        &want,
        T,
    );
    // A host the pod names exactly, and the admin allows, goes out (here: the gateway itself,
    // as an outside server).
    c.kubectl_ok(&[
        "patch",
        "deployment",
        "http-caller",
        "-p",
        &format!(
            r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"skiff.dev/allowed-outbound-hosts":"{gw}"}}}}}}}}}}"#
        ),
    ]);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-caller",
        "--timeout=60s",
    ]);
    let body = eventually("the allowed host answers", T, || {
        match http_get(&gw, "caller.local", &format!("/?url=http://{gw}/")) {
            Ok((200, b)) => Some(b),
            _ => None,
        }
    });
    assert!(
        body.contains("answered 404: no Service, pod or Ingress rule"),
        "the call reached the allowed host: {body}"
    );

    // The node's /metrics counts the requests.
    let metrics = node_metrics(&c);
    assert!(
        metrics.contains("skiff_http_requests_total{namespace=\"default\",pod=\"")
            && metrics.contains("code=\"2xx\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skiff_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

/// The embedded node's /metrics, as the admin (HTTPS, verified against the cluster CA). Nobody
/// else gets it: no credential is 401, the join token (a shared secret, not an identity that
/// RBAC lets read `nodes/metrics`) 403.
fn node_metrics(c: &Cluster) -> String {
    let (code, body) = c.node_get("testnode", "/metrics", None);
    assert_eq!(code, 401, "{body}");
    let join = std::fs::read_to_string(c.data().join("node-token")).expect("node token");
    let (code, body) = c.node_get("testnode", "/metrics", Some(join.trim()));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(
            "user=system:bootstrap:node-join-token, verb=get, resource=nodes, subresource=metrics"
        ),
        "{body}"
    );
    let (code, body) = c.node_get("testnode", "/metrics", Some(&c.admin_token()));
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn probes_gate_readiness_and_restart_unhealthy_http_pods() {
    let c = Cluster::start(&[]);
    push_http_examples(&c);
    let probe_pod = |name: &str, probe: &str, path: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\nspec:\n  containers:\n  - name: main\n    image: http-hello:latest\n    ports:\n    - name: http\n      containerPort: 8080\n    {probe}:\n      httpGet:\n        path: {path}\n        port: http\n      periodSeconds: 1\n      failureThreshold: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n    targetPort: http\n"
        )
    };
    c.apply(&probe_pod("ready-ok", "readinessProbe", "/healthz"));
    c.apply(&probe_pod("never-ready", "readinessProbe", "/unhealthy"));
    c.apply(&probe_pod("not-live", "livenessProbe", "/unhealthy"));
    c.apply(&probe_pod("tcp-ok", "readinessProbe", "/healthz").replace(
        "      httpGet:\n        path: /healthz\n        port: http\n",
        "      tcpSocket:\n        port: 8080\n",
    ));
    let gw = c.gateway("testnode");

    c.wait_for(
        &["pod", "ready-ok"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    c.wait_for(
        &["pod", "tcp-ok"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    ok_body(&gw, "ready-ok", "/");

    // A failing readiness probe: Running, never Ready, no endpoint, Unhealthy events.
    c.wait_for(&["pod", "never-ready"], "{.status.phase}", "Running", T);
    c.wait_for(
        &[
            "events",
            "--field-selector",
            "involvedObject.name=never-ready,reason=Unhealthy",
        ],
        "{.items[0].message}",
        "Readiness probe failed: HTTP probe failed with statuscode: 500",
        T,
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "never-ready"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    let (status, body) = http_get(&gw, "never-ready", "/").expect("gateway answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no ready endpoints"), "{body}");
    let eps = c.jsonpath(
        &["endpoints", "never-ready"],
        "{.subsets[0].notReadyAddresses[0].targetRef.name}",
    );
    assert_eq!(eps, "never-ready");

    // A failing liveness probe restarts the container.
    c.wait_for(
        &["pod", "not-live"],
        "{.status.containerStatuses[0].restartCount}",
        "1",
        T,
    );
    c.wait_for(
        &["pod", "not-live"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
        "137",
        T,
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=not-live",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Container main failed liveness probe, will be restarted"),
        "{events}"
    );
}

/// Several clients keep requesting a Service through one gateway while the Deployment rolls
/// from v1 to v2 and while the other node, which hosts endpoints, is drained.
#[test]
fn rollouts_and_drains_drop_no_request() {
    let mut c = Cluster::start(&[]);
    c.join_node("n2");
    eventually("node n2 Ready", T, || {
        let out = c.kubectl(&[
            "get",
            "node",
            "n2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
    push_http_examples(&c);
    let v1 = hello_manifest().replace("replicas: 2", "replicas: 4");
    c.apply(&v1);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-hello",
        "--timeout=60s",
    ]);
    let gw = c.gateway("testnode");
    c.gateway("n2");
    let pods_on_n2 = |c: &Cluster| {
        c.jsonpath(
            &[
                "pods",
                "-l",
                "app=http-hello",
                "--field-selector",
                "spec.nodeName=n2",
            ],
            "{.items[*].metadata.name}",
        )
    };
    assert!(!pods_on_n2(&c).is_empty(), "some endpoints run on n2");
    ok_body(&gw, "http-hello", "/");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let bodies = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, bodies, gw) =
                (stop.clone(), failures.clone(), bodies.clone(), gw.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&gw, "http-hello", "/") {
                        Ok((200, b)) => {
                            if let Ok(mut v) = bodies.lock() {
                                v.push(b);
                            }
                        }
                        Ok((s, b)) => failures.lock().unwrap().push(format!("{s}: {b}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                n
            })
        })
        .collect();

    // Roll to v2.
    c.apply(&v1.replace("value: v1", "value: v2"));
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-hello",
        "--timeout=90s",
    ]);
    eventually("responses switch to v2", T, || {
        let v = bodies.lock().ok()?;
        let last: Vec<&String> = v.iter().rev().take(20).collect();
        (last.len() == 20 && last.iter().all(|b| b.ends_with("(v2)\n"))).then_some(())
    });

    // A budget that allows no disruption: an eviction is refused with 429, as kubectl drain
    // expects (it retries).
    c.apply(
        "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: http-hello}
spec:
  minAvailable: 100%
  selector: {matchLabels: {app: http-hello}}
",
    );
    c.wait_for(
        &["pdb", "http-hello"],
        "{.status.expectedPods} {.status.disruptionsAllowed}",
        "4 0",
        T,
    );
    let victim = pods_on_n2(&c)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let eviction = c.dir.path().join("eviction.json");
    std::fs::write(
        &eviction,
        format!(r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{victim}", "namespace": "default"}}}}"#),
    )
    .expect("eviction body");
    let refused = c.kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{victim}/eviction"),
        "-f",
        eviction.to_str().expect("utf-8 path"),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("disruption budget"),
        "{err}"
    );
    // Three of four must stay up: the drain evicts one pod at a time, waiting for each
    // replacement to be Ready.
    c.kubectl_ok(&[
        "patch",
        "pdb",
        "http-hello",
        "--type=merge",
        "-p",
        r#"{"spec": {"minAvailable": 3}}"#,
    ]);
    c.wait_for(
        &["pdb", "http-hello"],
        "{.status.disruptionsAllowed}",
        "1",
        T,
    );

    // Drain n2 (it hosts endpoints again after the rollout: the scheduler spreads them).
    assert!(!pods_on_n2(&c).is_empty(), "v2 endpoints run on n2 too");
    c.kubectl_ok(&["drain", "n2", "--ignore-daemonsets", "--timeout=90s"]);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-hello",
        "--timeout=90s",
    ]);
    assert_eq!(pods_on_n2(&c), "", "n2 was drained");
    // Let the clients run on the new endpoints for a moment.
    let before = bodies.lock().map(|v| v.len()).unwrap_or(0);
    eventually("requests after the drain", T, || {
        (bodies.lock().ok()?.len() >= before + 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = clients.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let failures = failures.lock().unwrap().clone();
    let bodies = bodies.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(bodies.iter().any(|b| b.ends_with("(v1)\n")), "v1 answered");
    assert!(
        bodies.iter().rev().take(50).all(|b| b.ends_with("(v2)\n")),
        "v2 answers at the end"
    );
    assert!(sent > 200, "the load kept going: {sent} requests");
    eprintln!("zero-downtime: {sent} requests, none failed");
}

#[test]
fn the_http_benchmark_runs() {
    let c = Cluster::start(&[]);
    let out = std::process::Command::new(crate::harness::SKIFF)
        .args([
            "bench",
            "http",
            "--duration",
            "1s",
            "--connections",
            "2",
            "--pods",
            "3",
        ])
        .arg("--module")
        .arg(example("http_hello", true))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .output()
        .expect("skiff bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench http failed: {stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    for name in ["http-gateway-pod", "http-gateway-service"] {
        let l = lines
            .iter()
            .find(|l| l["bench"] == name)
            .unwrap_or_else(|| panic!("{name} in {lines:?}"));
        assert!(l["requests"].as_u64().unwrap_or(0) > 0, "{l}");
        assert_eq!(l["errors"], 0, "{l}");
    }
    let first = lines
        .iter()
        .find(|l| l["bench"] == "http-first-request")
        .expect("first-request line");
    assert_eq!(first["n"], 3, "{first}");
    // It cleans up after itself.
    c.wait_for(
        &["pods", "-l", "skiff-bench"],
        "{.items[*].metadata.name}",
        "",
        T,
    );
}
