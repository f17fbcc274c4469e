//! NetworkPolicy on the data path: default-deny, allow by namespace and pod selectors, ipBlock
//! for clients outside the cluster, egress isolation; denials answered at once with a message
//! and recorded as events.

use crate::harness::{eventually, example, http_get, Cluster};

use crate::T;

/// team-b serves `web` (http-hello); team-a runs `caller` (http-caller) aimed at it.
const WORKLOADS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-b}
spec:
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
metadata: {name: web, namespace: team-b}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: caller, namespace: team-a}
spec:
  selector: {matchLabels: {app: caller}}
  template:
    metadata: {labels: {app: caller}}
    spec:
      containers:
      - name: caller
        image: http-caller:latest
        ports: [{name: http, containerPort: 8080}]
        env: [{name: TARGET, value: "http://web.team-b/"}]
---
apiVersion: v1
kind: Service
metadata: {name: caller, namespace: team-a}
spec:
  selector: {app: caller}
  ports: [{port: 80, targetPort: http}]
"#;

/// What the caller relays when it calls `web`, once the answer starts with `want`.
fn caller_says(gw: &str, want: &str) -> String {
    let mut last = None;
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        match http_get(gw, "caller.team-a.svc", "/") {
            Ok((200, body)) if body.starts_with(want) => return body,
            other => last = Some(other),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the caller never relayed {want:?}; last answer {last:?}");
}

/// What an outside client gets from `web`, once its status is `want`.
fn outside_gets(gw: &str, want: u16) -> String {
    eventually(
        &format!("an outside client gets {want}"),
        T,
        || match http_get(gw, "web.team-b.svc", "/") {
            Ok((code, body)) if code == want => Some(body),
            _ => None,
        },
    )
}

#[test]
fn network_policies_isolate_tenants_on_the_data_path() {
    let c = Cluster::start(&[]);
    c.push_ok("http-hello:latest", &example("http_hello", true));
    c.push_ok("http-caller:latest", &example("http_caller", true));
    c.apply(WORKLOADS);
    for (ns, d) in [("team-b", "web"), ("team-a", "caller")] {
        c.kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            ns,
            &format!("deployment/{d}"),
            "--timeout=60s",
        ]);
    }
    // Every namespace carries its name as a label, for namespace selectors.
    assert_eq!(
        c.jsonpath(
            &["namespace", "team-a"],
            "{.metadata.labels.kubernetes\\.io/metadata\\.name}"
        ),
        "team-a"
    );
    let gw = c.gateway("testnode");

    // No policy: the tenants reach each other, and outside clients reach both.
    caller_says(&gw, "http://web.team-b/ answered 200: hello from ");
    outside_gets(&gw, 200);

    // Default deny for team-b's ingress: the call from team-a is refused at once, with a
    // message naming the policy, and an event on the calling pod; so is an outside client,
    // with an event on the Service it called.
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: team-b}
spec:
  podSelector: {}
"#,
    );
    let body = caller_says(&gw, "http://web.team-b/ answered 403: ");
    assert!(
        body.contains("network policy denies pod team-a/caller-")
            && body.contains("the ingress of pod team-b/web-")
            && body.contains("NetworkPolicy team-b/default-deny"),
        "{body}"
    );
    let caller_pod = c.jsonpath(
        &["pods", "-n", "team-a", "-l", "app=caller"],
        "{.items[0].metadata.name}",
    );
    let events = eventually("a NetworkPolicyDenied event on the caller", T, || {
        let out = c.kubectl_ok(&[
            "get",
            "events",
            "-n",
            "team-a",
            "--field-selector",
            &format!("reason=NetworkPolicyDenied,involvedObject.name={caller_pod}"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert!(
        events.contains("NetworkPolicy team-b/default-deny"),
        "{events}"
    );
    let body = outside_gets(&gw, 403);
    assert!(
        body.contains("(outside the cluster) calling pod team-b/web-"),
        "{body}"
    );
    c.wait_for(
        &[
            "events",
            "-n",
            "team-b",
            "--field-selector",
            "reason=NetworkPolicyDenied,involvedObject.kind=Service",
        ],
        "{.items[0].involvedObject.name}",
        "web",
        T,
    );

    // Allow team-a's callers by namespace and pod selectors, on the named port: the call
    // goes through again; outside clients stay out.
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-team-a, namespace: team-b}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team-a}}
      podSelector: {matchLabels: {app: caller}}
    ports: [{port: http}]
"#,
    );
    caller_says(&gw, "http://web.team-b/ answered 200: hello from ");
    outside_gets(&gw, 403);

    // An ipBlock lets outside clients in by address.
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-loopback, namespace: team-b}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 127.0.0.0/8}}]
"#,
    );
    let body = outside_gets(&gw, 200);
    assert!(body.starts_with("hello from "), "{body}");

    // Egress isolation of team-a: the caller may reach nothing until a rule allows team-b.
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: team-a}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#,
    );
    let body = caller_says(&gw, "http://web.team-b/ answered 403: ");
    assert!(
        body.contains("the egress of pod team-a/caller-")
            && body.contains("NetworkPolicy team-a/no-egress"),
        "{body}"
    );
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-team-b, namespace: team-a}
spec:
  podSelector: {matchLabels: {app: caller}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team-b}}}]
"#,
    );
    caller_says(&gw, "http://web.team-b/ answered 200: hello from ");

    // Deleting the policies opens the way again.
    c.kubectl_ok(&["delete", "networkpolicy", "--all", "-n", "team-b"]);
    c.kubectl_ok(&["delete", "networkpolicy", "--all", "-n", "team-a"]);
    caller_says(&gw, "http://web.team-b/ answered 200: hello from ");
}
