//! Projected ServiceAccount tokens in pods: mounted only when asked for, bound to the pod, and
//! usable by a wasm guest against `http://kubernetes.default.svc` with exactly its
//! ServiceAccount's permissions.

use crate::harness::{example, http_get, Cluster};
use crate::T;

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team-a}
automountServiceAccountToken: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: team-a}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-pods, namespace: team-a}
subjects:
- kind: ServiceAccount
  name: reader
  namespace: team-a
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: caller, namespace: team-a}
spec:
  selector: {matchLabels: {app: caller}}
  template:
    metadata: {labels: {app: caller}}
    spec:
      serviceAccountName: reader
      containers:
      - name: caller
        image: http-caller:latest
        ports: [{name: http, containerPort: 8080}]
        env:
        - {name: TARGET, value: "http://kubernetes.default.svc/api/v1/namespaces/team-a/pods"}
        - {name: TOKEN_FILE, value: /var/run/secrets/kubernetes.io/serviceaccount/token}
---
apiVersion: v1
kind: Service
metadata: {name: caller, namespace: team-a}
spec:
  selector: {app: caller}
  ports: [{port: 80, targetPort: http}]
"#;

fn caller(gw: &str, path: &str, want: &str) -> String {
    let mut last = None;
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        match http_get(gw, "caller.team-a.svc", path) {
            Ok((200, body)) if body.contains(want) => return body,
            other => last = Some(other),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the caller never said {want:?}; last answer {last:?}");
}

#[test]
fn pods_get_bound_service_account_tokens_when_they_ask() {
    let c = Cluster::start(&[]);
    c.push_ok("http-caller:latest", &example("http_caller", true));
    c.push_ok("hello:latest", &example("hello", false));
    c.apply(SETUP);
    c.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "team-a",
        "deployment/caller",
        "--timeout=60s",
    ]);
    let pod = c.jsonpath(
        &["pods", "-n", "team-a", "-l", "app=caller"],
        "{.items[0].metadata.name}",
    );
    // The embedded node's role is set by the server (a node may not give itself one).
    c.wait_for(
        &["node", "testnode"],
        "{.metadata.labels.node-role\\.kubernetes\\.io/control-plane}",
        "true",
        T,
    );
    // Admission mounted the token, CA and namespace, as Kubernetes lays them out.
    let volume = c.jsonpath(
        &["pod", "-n", "team-a", &pod],
        "{.spec.volumes[0].name} {.spec.volumes[0].projected.sources[*].serviceAccountToken.path} {.spec.containers[0].volumeMounts[0].mountPath}",
    );
    assert!(
        volume.starts_with("kube-api-access-")
            && volume.ends_with(" token /var/run/secrets/kubernetes.io/serviceaccount"),
        "{volume}"
    );

    // The guest lists its namespace's pods through the `kubernetes` Service with its token...
    let gw = c.gateway("testnode");
    let body = caller(&gw, "/", r#""kind":"PodList""#);
    assert!(
        body.contains("answered 200") && body.contains(&pod),
        "{body}"
    );
    // ...and is refused, as its ServiceAccount, anything its role does not grant.
    let body = caller(
        &gw,
        "/?url=http://kubernetes.default.svc/api/v1/namespaces/default/pods",
        "answered 403",
    );
    assert!(
        body.contains(
            r#"User \"system:serviceaccount:team-a:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""#
        ),
        "{body}"
    );
    let body = caller(
        &gw,
        "/?url=http://kubernetes.default.svc/api/v1/namespaces/team-a/secrets",
        "answered 403",
    );
    assert!(body.contains("cannot list resource"), "{body}");

    // A pod that does not ask gets no token; one naming a missing account is refused.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: team-a}
spec:
  containers: [{name: main, image: hello:latest}]
"#,
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "-n", "team-a", "plain"],
            "{.spec.serviceAccountName}|{.spec.volumes}"
        ),
        "default|"
    );
    let out = c.kubectl(&[
        "run",
        "ghost",
        "-n",
        "team-a",
        "--image=hello:latest",
        "--overrides",
        r#"{"spec":{"serviceAccountName":"nobody"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(r#"pods "ghost" is forbidden: error looking up service account team-a/nobody: serviceaccount "nobody" not found"#),
        "{err}"
    );
}
