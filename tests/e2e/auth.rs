//! Identities and access reviews: `kubectl auth whoami` and `auth can-i` (protobuf from kubectl
//! 1.32), SubjectAccessReviews decided by the RBAC objects in the cluster, Kubernetes' validation
//! of review bodies, and impersonation acting as the user asked for.

use serde_json::{json, Value};

use crate::harness::Cluster;

const POLICY: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: team-a}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads-pods, namespace: team-a}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: builder}
roleRef: {kind: Role, name: pod-reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-viewer}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list]
- nonResourceURLs: ["/healthz", "/metrics*"]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: devs-view-nodes}
subjects:
- {kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: node-viewer, apiGroup: rbac.authorization.k8s.io}
"#;

/// POST a review body with `kubectl create --raw`; the decoded answer, or kubectl's failure.
fn post(c: &Cluster, path: &str, body: &Value) -> Result<Value, String> {
    let file = c
        .data()
        .join(format!("review-{}.json", crate::harness::rand_suffix()));
    std::fs::write(&file, body.to_string()).expect("write the review");
    let out = c.kubectl(&[
        "create",
        "--raw",
        path,
        "-f",
        file.to_str().expect("utf-8 path"),
    ]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn sar(user: &str, groups: &[&str], attrs: Value) -> Value {
    let mut spec = json!({"user": user, "groups": groups});
    let key = if attrs.get("path").is_some() {
        "nonResourceAttributes"
    } else {
        "resourceAttributes"
    };
    spec[key] = attrs;
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
}

#[test]
fn reviews_answer_from_identities_and_rbac() {
    let mut c = Cluster::start(&["--no-node"]);
    // Who am I: the admin credential is system:admin in system:masters.
    let whoami = c.kubectl_ok(&["auth", "whoami"]);
    assert!(whoami.contains("system:admin"), "{whoami}");
    assert!(whoami.contains("system:masters"), "{whoami}");
    let whoami = c.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let me: Value = serde_json::from_str(&whoami).expect("json");
    assert_eq!(me["status"]["userInfo"]["username"], "system:admin");

    // May I: kubectl 1.32 sends SelfSubjectAccessReviews as protobuf; masters may do anything.
    assert_eq!(
        c.kubectl_ok(&["auth", "can-i", "create", "pods"]).trim(),
        "yes"
    );
    assert_eq!(
        c.kubectl_ok(&["auth", "can-i", "delete", "secrets", "-n", "kube-system"])
            .trim(),
        "yes"
    );
    assert_eq!(
        c.kubectl_ok(&["auth", "can-i", "get", "/metrics"]).trim(),
        "yes"
    );

    // What may I: masters get the rules that allow everything.
    let list = c.kubectl_ok(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("*.*") && l.ends_with("[*]")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("[*]") || l.contains(" [*] ")),
        "{list}"
    );
    let err = post(
        &c,
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {}}),
    )
    .expect_err("no namespace");
    assert!(err.contains("no namespace on request"), "{err}");

    // May they: decided by the Roles and bindings in the cluster.
    c.apply(POLICY);
    let sars = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let pods = |verb: &str, ns: &str, sub: &str| json!({"verb": verb, "resource": "pods", "subresource": sub, "namespace": ns});
    let cases = [
        ("alice", vec![], pods("list", "team-a", ""), true),
        ("alice", vec![], pods("get", "team-a", "log"), true),
        ("alice", vec![], pods("delete", "team-a", ""), false),
        ("alice", vec![], pods("list", "team-b", ""), false),
        ("bob", vec![], pods("list", "team-a", ""), false),
        // A ServiceAccount subject without a namespace is in its binding's namespace.
        (
            "system:serviceaccount:team-a:builder",
            vec![],
            pods("watch", "team-a", ""),
            true,
        ),
        (
            "system:serviceaccount:team-b:builder",
            vec![],
            pods("watch", "team-a", ""),
            false,
        ),
        (
            "carol",
            vec!["devs"],
            json!({"verb": "list", "resource": "nodes"}),
            true,
        ),
        (
            "carol",
            vec![],
            json!({"verb": "list", "resource": "nodes"}),
            false,
        ),
        (
            "carol",
            vec!["devs"],
            json!({"verb": "get", "path": "/metrics/x"}),
            true,
        ),
        (
            "carol",
            vec!["devs"],
            json!({"verb": "get", "path": "/version"}),
            false,
        ),
        (
            "eve",
            vec!["system:masters"],
            pods("delete", "team-b", ""),
            true,
        ),
    ];
    for (user, groups, attrs, want) in cases {
        let got = post(&c, sars, &sar(user, &groups, attrs.clone())).expect("a review");
        assert_eq!(got["kind"], "SubjectAccessReview");
        assert_eq!(
            got["status"]["allowed"], want,
            "{user} {groups:?} {attrs}: {got}"
        );
    }
    let why = post(&c, sars, &sar("alice", &[], pods("list", "team-a", ""))).expect("a review");
    assert_eq!(
        why["status"]["reason"],
        "RBAC: allowed by RoleBinding \"alice-reads-pods/team-a\" of Role \"pod-reader\" to User \"alice\""
    );

    // The review kinds are in discovery (create only), so the manifests of the Kubernetes docs
    // work with `kubectl create -f`.
    let listed = c.kubectl_ok(&["api-resources", "--api-group=authorization.k8s.io"]);
    for plural in [
        "localsubjectaccessreviews",
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "subjectaccessreviews",
    ] {
        assert!(listed.contains(plural), "{listed}");
    }
    let file = c.data().join("sar.json");
    std::fs::write(
        &file,
        sar("alice", &[], pods("get", "team-a", "log")).to_string(),
    )
    .expect("write the review");
    let file = file.to_str().expect("utf-8 path");
    assert_eq!(
        c.kubectl_ok(&["create", "-f", file, "-o", "jsonpath={.status.allowed}"]),
        "true"
    );
    assert_eq!(
        c.kubectl_ok(&["create", "-f", file]).trim(),
        "subjectaccessreview.authorization.k8s.io/<unknown> created"
    );

    // The default roles mean what they mean in Kubernetes: `view` and `edit` are aggregated
    // (and a ClusterRole labelled aggregate-to-view joins them), `cluster-admin` is bound to
    // system:masters.
    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [example.com]
  resources: [widgets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dana-views, namespace: team-a}
subjects:
- {kind: User, name: dana, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: view, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: erin-edits, namespace: team-a}
subjects:
- {kind: User, name: erin, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: edit, apiGroup: rbac.authorization.k8s.io}
"#,
    );
    let widgets = json!({"verb": "list", "group": "example.com", "resource": "widgets", "namespace": "team-a"});
    crate::harness::eventually("view and edit aggregate the widgets role", crate::T, || {
        let dana = post(&c, sars, &sar("dana", &[], widgets.clone())).ok()?;
        let erin = post(&c, sars, &sar("erin", &[], widgets.clone())).ok()?;
        (dana["status"]["allowed"] == true && erin["status"]["allowed"] == true).then_some(())
    });
    let cases = [
        ("dana", pods("list", "team-a", ""), true),
        ("dana", pods("get", "team-a", "log"), true),
        ("dana", pods("delete", "team-a", ""), false),
        ("dana", pods("list", "team-b", ""), false),
        ("erin", pods("delete", "team-a", ""), true),
        (
            "erin",
            json!({"verb": "create", "resource": "roles", "group": "rbac.authorization.k8s.io", "namespace": "team-a"}),
            false,
        ),
    ];
    for (user, attrs, want) in cases {
        let got = post(&c, sars, &sar(user, &[], attrs.clone())).expect("a review");
        assert_eq!(got["status"]["allowed"], want, "{user} {attrs}: {got}");
    }
    let bound = c.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "cluster-admin",
        "-o",
        "jsonpath={.subjects[0].name}",
    ]);
    assert_eq!(bound, "system:masters");

    // Local reviews are confined to their namespace.
    let local = |ns: &str, body_ns: &str| {
        let mut body = sar("alice", &[], pods("list", body_ns, ""));
        body["kind"] = json!("LocalSubjectAccessReview");
        post(
            &c,
            &format!("/apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews"),
            &body,
        )
    };
    let ok = local("team-a", "team-a").expect("a local review");
    assert_eq!(
        (
            ok["status"]["allowed"].clone(),
            ok["metadata"]["namespace"].clone()
        ),
        (json!(true), json!("team-a"))
    );
    let err = local("team-a", "team-b").expect_err("another namespace is refused");
    assert!(err.contains("must match metadata.namespace"), "{err}");

    // Kubernetes' validation of review bodies: 422, never a guess.
    let err = post(
        &c,
        sars,
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice"}}),
    )
    .expect_err("no attributes");
    assert!(
        err.contains(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        ),
        "{err}"
    );
    let err = post(
        &c,
        sars,
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}),
    )
    .expect_err("nobody asked about");
    assert!(
        err.contains("at least one of user or group must be specified"),
        "{err}"
    );
    let err = post(&c, sars, &json!({"apiVersion": "v1", "kind": "ConfigMap"}))
        .expect_err("not a review");
    assert!(
        err.contains(
            "the kind in the body (ConfigMap) does not match the kind of the resource (SubjectAccessReview)"
        ),
        "{err}"
    );

    // A review body is small: a huge one is refused before it is read whole.
    let huge = sar(&"x".repeat(100_000), &[], pods("list", "team-a", ""));
    let err = post(&c, sars, &huge).expect_err("too large");
    assert!(err.to_lowercase().contains("too large"), "{err}");

    // Default roles are reconciled at start: a rule taken away comes back; a role marked
    // autoupdate=false is left as its owner made it.
    let basic = [
        "get",
        "clusterrole",
        "system:basic-user",
        "-o",
        "jsonpath={.rules[*].apiGroups[0]}",
    ];
    c.kubectl_ok(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/rules/0"}]"#,
    ]);
    c.kubectl_ok(&[
        "patch",
        "clusterrole",
        "system:discovery",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/rules","value":[]}]"#,
    ]);
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "clusterrole",
        "system:discovery",
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    assert_eq!(c.kubectl_ok(&basic), "authorization.k8s.io");
    c.kill9_and_restart(&["--no-node"]);
    assert_eq!(
        c.kubectl_ok(&basic),
        "authorization.k8s.io authentication.k8s.io"
    );
    assert_eq!(
        c.kubectl_ok(&[
            "get",
            "clusterrole",
            "system:discovery",
            "-o",
            "jsonpath={.rules}"
        ]),
        "[]"
    );

    // Deep nesting within the size limit is refused (400), not followed down.
    let deep = c.data().join("deep.json");
    std::fs::write(
        &deep,
        format!("{{\"spec\":{}{}}}", "[".repeat(30_000), "]".repeat(30_000)),
    )
    .expect("write the body");
    let out = c.kubectl(&[
        "create",
        "--raw",
        sars,
        "-f",
        deep.to_str().expect("utf-8 path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("BadRequest"), "{err}");

    // Impersonation acts as the user asked for (the admin may impersonate anyone).
    let out = c.kubectl(&["get", "pods", "-n", "team-b", "--as", "alice"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"User "alice" cannot list resource "pods" in API group "" in the namespace "team-b""#
        ),
        "{err}"
    );
}
