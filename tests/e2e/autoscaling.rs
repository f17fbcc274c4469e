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

/// A cluster that measures every second and syncs its HPAs every second.
fn fast_cluster() -> Cluster {
    Cluster::start(&[
        "--metric-resolution",
        "1s",
        "--horizontal-pod-autoscaler-sync-period",
        "1s",
    ])
}

/// A [`fast_cluster`] running the `http-hello` example at one replica.
fn http_hello_at_one() -> Cluster {
    let c = fast_cluster();
    c.push_ok("http-hello:latest", &example("http_hello", true));
    c.apply(&manifest("http-hello"));
    c.kubectl_ok(&["scale", "deployment/http-hello", "--replicas=1"]);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/http-hello",
        "--timeout=60s",
    ]);
    c
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
    // A selector that does not parse is a 400, not an empty answer.
    let bad = c.kubectl(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=a%3D%3D%3Db%21%21",
    ]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && text.contains("BadRequest"),
        "{text}"
    );
}

/// A HorizontalPodAutoscaler made with `kubectl autoscale` scales a CPU-bound Deployment up
/// (one pod at a time while `behavior` says so, then to `maxReplicas`), shows its metric in
/// `kubectl get hpa`, and scales down to `minReplicas` when the target is raised.
#[test]
fn an_hpa_scales_a_deployment_on_cpu_within_its_behavior() {
    let c = fast_cluster();
    c.push_ok("spinner:latest", &example("spinner", false));
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: spin}
spec:
  replicas: 1
  selector: {matchLabels: {app: spin}}
  template:
    metadata: {labels: {app: spin}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: spinner
          image: spinner:latest
          resources:
            requests: {cpu: 20m}
            limits: {cpu: 40m, memory: 16Mi}
"#,
    );
    c.kubectl_ok(&["rollout", "status", "deployment/spin", "--timeout=60s"]);
    c.kubectl_ok(&[
        "autoscale",
        "deployment",
        "spin",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // One pod per 10 minutes up: the first step is taken, the next is held.
    c.kubectl_ok(&[
        "patch",
        "hpa",
        "spin",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleUp":{"policies":[{"type":"Pods","value":1,"periodSeconds":600}]}}}}"#,
    ]);
    let limited = |reason: &str| {
        c.wait_for(
            &["hpa", "spin"],
            "{.status.conditions[?(@.type==\"ScalingLimited\")].reason}",
            reason,
            T,
        )
    };
    c.wait_for(&["deployment", "spin"], "{.spec.replicas}", "2", T);
    limited("ScaleUpLimit");
    let targets = c.kubectl_ok(&["get", "hpa", "spin", "--no-headers"]);
    assert!(
        targets.contains("cpu: ") && targets.contains("%/50%"),
        "{targets}"
    );
    assert_eq!(
        c.jsonpath(
            &["hpa", "spin"],
            "{.status.conditions[?(@.type==\"ScalingActive\")].reason}"
        ),
        "ValidMetricFound"
    );
    // The default behavior: up to the maximum.
    c.kubectl_ok(&[
        "patch",
        "hpa",
        "spin",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/behavior"}]"#,
    ]);
    c.wait_for(&["deployment", "spin"], "{.spec.replicas}", "3", T);
    limited("TooManyReplicas");
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=spin,reason=SuccessfulRescale",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    // A target far above the use, and no stabilization window: down to the minimum.
    c.kubectl_ok(&[
        "patch",
        "hpa",
        "spin",
        "--type=merge",
        "-p",
        r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":5000}}}],"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    c.wait_for(&["deployment", "spin"], "{.spec.replicas}", "1", T);
    eventually("the HPA says why", T, || {
        let r = c.jsonpath(
            &["hpa", "spin"],
            "{.status.conditions[?(@.type==\"ScalingLimited\")].reason}",
        );
        (r == "TooFewReplicas" || r == "DesiredWithinRange").then_some(())
    });
}

/// An HPA on `http_requests_per_second`, per pod (a `Pods` metric) and of the Service (an
/// `Object` metric): under a steady load through the gateway the Deployment scales up; both are
/// served by the custom metrics API.
#[test]
fn an_hpa_scales_an_http_deployment_on_its_request_rate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = http_hello_at_one();
    c.apply(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: http-hello}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: http-hello}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Pods
      pods:
        metric: {name: http_requests_per_second}
        target: {type: AverageValue, averageValue: "5"}
    - type: Object
      object:
        describedObject: {apiVersion: v1, kind: Service, name: http-hello}
        metric: {name: http_requests_per_second}
        target: {type: Value, value: "10"}
"#,
    );
    let gw = c.gateway("testnode");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // A bounded load generator: about 50 requests a second.
    let load = {
        let (stop, gw) = (stop.clone(), gw.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                if crate::harness::http_get(&gw, "http-hello", "/").map(|(code, _)| code) != Ok(200)
                {
                    failed += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            failed
        })
    };
    c.wait_for(&["deployment", "http-hello"], "{.spec.replicas}", "3", T);
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/http_requests_per_second?labelSelector=app%3Dhttp-hello",
    ]);
    stop.store(true, Ordering::Relaxed);
    let failed = load.join().expect("the load generator");
    assert_eq!(failed, 0, "requests failed while scaling up");
    let v: serde_json::Value = serde_json::from_str(&raw).expect("MetricValueList");
    assert_eq!(v["kind"], "MetricValueList");
    assert!(!v["items"].as_array().expect("items").is_empty(), "{raw}");
    let targets = c.kubectl_ok(&["get", "hpa", "http-hello", "--no-headers"]);
    assert!(
        targets.contains("/5") && targets.contains("/10"),
        "{targets}"
    );
    // Both metrics were measured; the Service's rate is its pods' sum.
    assert_eq!(
        c.jsonpath(&["hpa", "http-hello"], "{.status.currentMetrics[*].type}"),
        "Pods Object"
    );
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/services/http-hello/http_requests_per_second",
    ]);
    assert!(raw.contains("\"kind\":\"Service\""), "{raw}");
}

/// Scale to zero and back (beyond Kubernetes): an HTTP Deployment whose HPA has
/// `minReplicas: 0` goes to zero when idle; requests that arrive then are held by the gateway,
/// the Deployment is started again, and every one of them is answered.
#[test]
fn an_idle_http_service_scales_to_zero_and_its_next_requests_start_it() {
    let c = http_hello_at_one();
    let gw = c.gateway("testnode");
    // Nothing behind a Service that no HPA may start: 503 at once, as before.
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
"#,
    );
    let (code, body) = crate::harness::http_get(&gw, "nobody", "/").expect("gateway answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no ready endpoints"), "{body}");

    c.apply(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: http-hello}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: http-hello}
  minReplicas: 0
  maxReplicas: 2
  metrics:
    - type: Pods
      pods:
        metric: {name: http_requests_per_second}
        target: {type: AverageValue, averageValue: "5"}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 2}
"#,
    );
    // Idle (probes do not count): to zero.
    c.wait_for(&["deployment", "http-hello"], "{.spec.replicas}", "0", T);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "pods",
        "-l",
        "app=http-hello",
        "--timeout=60s",
    ]);
    c.wait_for(
        &["hpa", "http-hello"],
        "{.status.conditions[?(@.type==\"ScalingActive\")].reason}",
        "ScaledToZero",
        T,
    );
    // Requests now: held, the Deployment started, all answered.
    let answers: Vec<_> = (0..8)
        .map(|_| {
            let gw = gw.clone();
            std::thread::spawn(move || crate::harness::http_get(&gw, "http-hello", "/"))
        })
        .collect();
    for a in answers {
        let (code, body) = a.join().expect("a client").expect("an answer");
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(
        c.jsonpath(&["deployment", "http-hello"], "{.spec.replicas}"),
        "1"
    );
    // Waking is the nodes' right, not any client's: a ServiceAccount is refused.
    let body = c.dir.path().join("wake.json");
    std::fs::write(&body, "{}").expect("body");
    let refused = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/services/http-hello/wake",
        "-f",
        body.to_str().expect("utf-8"),
        "--as=system:serviceaccount:default:default",
    ]);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("Forbidden"),
        "{text}"
    );
    let events = c.kubectl_ok(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(!events.contains("FailedRescale"), "{events}");
}

/// An HPA scales anything with a `scale` subresource: here a custom resource, found through
/// discovery, held within `maxReplicas`.
#[test]
fn an_hpa_scales_a_custom_resource_through_its_scale_subresource() {
    let c = Cluster::start(&["--horizontal-pod-autoscaler-sync-period", "1s"]);
    c.apply(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {replicas: {type: integer}}}
            status: {type: object, properties: {replicas: {type: integer}, selector: {type: string}}}
"#,
    );
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=60s",
    ]);
    c.apply(
        r#"apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
spec: {replicas: 5}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: w}
spec:
  scaleTargetRef: {apiVersion: example.com/v1, kind: Widget, name: w}
  minReplicas: 1
  maxReplicas: 2
"#,
    );
    c.wait_for(&["widget", "w"], "{.spec.replicas}", "2", T);
    c.wait_for(
        &["hpa", "w"],
        "{.status.conditions[?(@.type==\"ScalingLimited\")].reason}",
        "TooManyReplicas",
        T,
    );
}
