//! Tenants: two namespaces, one ServiceAccount each with `kubectl create token`, and RBAC
//! enforced on every request. Each tenant does everything in its namespace and nothing in the
//! other; `auth can-i` answers what the API then does; RBAC writes cannot escalate; impersonation
//! needs the `impersonate` verb; a deleted ServiceAccount's token stops working.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::Cluster;

const TENANTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: alice, namespace: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bob, namespace: team-b}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-admin, namespace: team-a}
subjects:
- {kind: ServiceAccount, name: alice, namespace: team-a}
roleRef: {kind: ClusterRole, name: admin, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-admin, namespace: team-b}
subjects:
- {kind: ServiceAccount, name: bob, namespace: team-b}
roleRef: {kind: ClusterRole, name: admin, apiGroup: rbac.authorization.k8s.io}
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kubectl as a tenant: its output on success, its error text on failure.
fn run(c: &Cluster, kc: &Path, args: &[&str]) -> Result<String, String> {
    let out = c.kubectl_with(kc, args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(stderr(&out))
    }
}

fn cert_kubeconfig(c: &Cluster, name: &str, cert: &Path, key: &Path) -> PathBuf {
    c.kubeconfig_for(
        name,
        &format!(
            "client-certificate: {}\nclient-key: {}",
            cert.display(),
            key.display()
        ),
    )
}

fn token_kubeconfig(c: &Cluster, name: &str, token: &str) -> PathBuf {
    c.kubeconfig_for(name, &format!("token: {}", token.trim()))
}

#[test]
fn tenants_are_confined_to_their_namespaces() {
    let c = Cluster::start(&["--no-node"]);
    c.apply(TENANTS);

    // `kubectl create token`: a short duration is refused with Kubernetes' message.
    let out = c.kubectl(&[
        "create",
        "token",
        "alice",
        "-n",
        "team-a",
        "--duration",
        "1m",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not specify a duration less than 10 minutes"),
        "{}",
        stderr(&out)
    );
    let alice_token = c.kubectl_ok(&["create", "token", "alice", "-n", "team-a"]);
    let bob_token = c.kubectl_ok(&["create", "token", "bob", "-n", "team-b", "--duration", "2h"]);
    let alice = token_kubeconfig(&c, "alice", &alice_token);
    let bob = token_kubeconfig(&c, "bob", &bob_token);

    // Who am I.
    let me: Value =
        serde_json::from_str(&run(&c, &alice, &["auth", "whoami", "-o", "json"]).expect("whoami"))
            .expect("json");
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:team-a:alice");
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ]
    );
    assert!(info["uid"].as_str().is_some_and(|u| !u.is_empty()), "{me}");

    // Everything in their own namespace.
    for (kc, ns) in [(&alice, "team-a"), (&bob, "team-b")] {
        run(
            &c,
            kc,
            &["create", "configmap", "cfg", "-n", ns, "--from-literal=k=v"],
        )
        .expect("create");
        run(&c, kc, &["get", "configmap", "cfg", "-n", ns]).expect("get");
        run(&c, kc, &["get", "pods", "-n", ns]).expect("list");
        run(
            &c,
            kc,
            &[
                "create",
                "secret",
                "generic",
                "s",
                "-n",
                ns,
                "--from-literal=p=x",
            ],
        )
        .expect("secret");
        run(
            &c,
            kc,
            &[
                "create",
                "deployment",
                "web",
                "-n",
                ns,
                "--image=hello:latest",
            ],
        )
        .expect("deployment");
        run(
            &c,
            kc,
            &["scale", "deployment", "web", "-n", ns, "--replicas=2"],
        )
        .expect("scale");
        run(&c, kc, &["delete", "configmap", "cfg", "-n", ns]).expect("delete");
        assert_eq!(
            run(&c, kc, &["auth", "can-i", "delete", "secrets", "-n", ns])
                .expect("can-i")
                .trim(),
            "yes"
        );
    }

    // Nothing in the other's, with kube-apiserver's exact words; can-i agrees.
    let who = "system:serviceaccount:team-a:alice";
    let denied = [
        (
            vec!["get", "pods", "-n", "team-b"],
            format!(
                r#"pods is forbidden: User "{who}" cannot list resource "pods" in API group "" in the namespace "team-b""#
            ),
        ),
        (
            vec!["get", "secret", "s", "-n", "team-b"],
            format!(
                r#"secrets "s" is forbidden: User "{who}" cannot get resource "secrets" in API group "" in the namespace "team-b""#
            ),
        ),
        (
            vec!["delete", "deployment", "web", "-n", "team-b"],
            format!(
                r#"deployments.apps "web" is forbidden: User "{who}" cannot delete resource "deployments" in API group "apps" in the namespace "team-b""#
            ),
        ),
        (
            vec!["create", "configmap", "x", "-n", "team-b"],
            format!(
                r#"configmaps is forbidden: User "{who}" cannot create resource "configmaps" in API group "" in the namespace "team-b""#
            ),
        ),
        (
            vec!["scale", "deployment", "web", "-n", "team-b", "--replicas=0"],
            // kubectl reads the object before it scales it.
            format!(
                r#"deployments.apps "web" is forbidden: User "{who}" cannot get resource "deployments" in API group "apps" in the namespace "team-b""#
            ),
        ),
        (
            vec!["get", "--raw", "/api/v1/namespaces/team-b/pods?watch=true"],
            "Forbidden".to_string(),
        ),
        (
            vec!["get", "nodes"],
            format!(
                r#"nodes is forbidden: User "{who}" cannot list resource "nodes" in API group "" at the cluster scope"#
            ),
        ),
        (vec!["get", "--raw", "/metrics"], "forbidden".to_string()),
    ];
    for (args, want) in &denied {
        let err = run(&c, &alice, args).expect_err("denied");
        assert!(err.contains(want.as_str()), "{args:?}: {err}");
    }
    for (verb, what) in [
        ("list", "pods"),
        ("get", "secrets"),
        ("delete", "deployments"),
        ("create", "configmaps"),
    ] {
        // `can-i` prints its answer and exits 1 for "no".
        let out = c.kubectl_with(&alice, &["auth", "can-i", verb, what, "-n", "team-b"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{verb} {what}"
        );
    }
    // The denied writes wrote nothing.
    assert_eq!(
        c.jsonpath(&["deployment", "web", "-n", "team-b"], "{.spec.replicas}"),
        "2"
    );

    // RBAC writes cannot grant more than the writer holds.
    run(
        &c,
        &alice,
        &[
            "create",
            "role",
            "cm-reader",
            "-n",
            "team-a",
            "--verb=get",
            "--resource=configmaps",
        ],
    )
    .expect("a role within alice's rights");
    let err = run(
        &c,
        &alice,
        &[
            "create",
            "role",
            "node-lister",
            "-n",
            "team-a",
            "--verb=list",
            "--resource=nodes",
        ],
    )
    .expect_err("a role beyond alice's rights");
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let err = run(
        &c,
        &alice,
        &[
            "create",
            "rolebinding",
            "grab",
            "-n",
            "team-a",
            "--clusterrole=cluster-admin",
            "--serviceaccount=team-a:alice",
        ],
    )
    .expect_err("binding cluster-admin");
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    run(
        &c,
        &alice,
        &[
            "create",
            "rolebinding",
            "view",
            "-n",
            "team-a",
            "--clusterrole=view",
            "--serviceaccount=team-a:alice",
        ],
    )
    .expect("binding a role alice holds");
    let err = run(
        &c,
        &alice,
        &[
            "create",
            "rolebinding",
            "x",
            "-n",
            "team-b",
            "--clusterrole=view",
            "--user=alice",
        ],
    )
    .expect_err("another namespace");
    assert!(err.contains("forbidden"), "{err}");

    // `kubectl auth reconcile` (as operators' install scripts run it) within alice's rights.
    let manifest = c.dir.path().join("reconcile.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: leader, namespace: team-a}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  resourceNames: [leader]\n  verbs: [get, create, update]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: leader, namespace: team-a}\nsubjects: [{kind: ServiceAccount, name: alice, namespace: team-a}]\nroleRef: {kind: Role, name: leader, apiGroup: rbac.authorization.k8s.io}\n",
    )
    .expect("write");
    let path = manifest.to_str().expect("utf-8");
    let out = run(&c, &alice, &["auth", "reconcile", "-f", path]).expect("reconcile");
    assert!(
        out.contains("role.rbac.authorization.k8s.io/leader reconciled"),
        "{out}"
    );
    run(&c, &alice, &["auth", "reconcile", "-f", path]).expect("again, nothing to do");
    assert_eq!(
        c.jsonpath(
            &["role", "leader", "-n", "team-a"],
            "{.rules[0].resourceNames[0]}"
        ),
        "leader"
    );

    // Impersonation: the admin may; alice may not.
    let err = c.kubectl(&["get", "pods", "-n", "team-b", "--as", who]);
    assert!(
        stderr(&err).contains(&format!(r#"User "{who}" cannot list resource "pods""#)),
        "{}",
        stderr(&err)
    );
    assert_eq!(
        c.kubectl_ok(&[
            "auth",
            "whoami",
            "--as",
            "carol",
            "--as-group",
            "devs",
            "-o",
            "jsonpath={.status.userInfo.groups}"
        ]),
        r#"["devs","system:authenticated"]"#
    );
    let err = run(
        &c,
        &alice,
        &[
            "get",
            "pods",
            "-n",
            "team-b",
            "--as",
            "system:serviceaccount:team-b:bob",
        ],
    )
    .expect_err("alice cannot impersonate bob");
    assert!(
        err.contains(&format!(r#"serviceaccounts "bob" is forbidden: User "{who}" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team-b""#)),
        "{err}"
    );

    // Anyone may check tokens offline: the issuer's documents, the keys.
    let discovery: Value = serde_json::from_str(
        &run(
            &c,
            &bob,
            &["get", "--raw", "/.well-known/openid-configuration"],
        )
        .expect("discovery"),
    )
    .expect("json");
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let keys: Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "--raw", "/openid/v1/jwks"])).expect("json");
    assert_eq!(keys["keys"][0]["alg"], "ES256");

    // TokenReview (for the admin, or whoever may create tokenreviews).
    let review = c.data().join("review.json");
    std::fs::write(
        &review,
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": bob_token.trim()}})
        .to_string(),
    )
    .expect("write");
    let answer: Value = serde_json::from_str(&c.kubectl_ok(&[
        "create",
        "-f",
        review.to_str().expect("utf-8"),
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:serviceaccount:team-b:bob"
    );
    let err = run(
        &c,
        &alice,
        &["create", "-f", review.to_str().expect("utf-8")],
    )
    .expect_err("not alice's");
    assert!(err.contains("forbidden"), "{err}");

    // A token bound to a pod names it, and dies with it.
    c.apply(
        &crate::harness::pod(
            "worker",
            "hello:latest",
            "",
            "  serviceAccountName: alice\n",
        )
        .replace("metadata:\n", "metadata:\n  namespace: team-a\n"),
    );
    let err = c.kubectl(&[
        "create",
        "token",
        "bob",
        "-n",
        "team-a",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "worker",
    ]);
    assert!(!err.status.success(), "bob's token for alice's pod");
    let bound = c.kubectl_ok(&[
        "create",
        "token",
        "alice",
        "-n",
        "team-a",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "worker",
    ]);
    let worker = token_kubeconfig(&c, "worker", &bound);
    let me = run(&c, &worker, &["auth", "whoami", "-o", "json"]).expect("whoami");
    assert!(me.contains("authentication.kubernetes.io/pod-name"), "{me}");
    c.kubectl_ok(&[
        "delete",
        "pod",
        "worker",
        "-n",
        "team-a",
        "--grace-period=0",
        "--force",
    ]);
    let err = run(&c, &worker, &["get", "pods", "-n", "team-a"]).expect_err("pod gone");
    assert!(err.contains("Unauthorized"), "{err}");

    // A deleted ServiceAccount's tokens stop working at once; a made-up token never worked.
    c.kubectl_ok(&["delete", "serviceaccount", "bob", "-n", "team-b"]);
    let err = run(&c, &bob, &["get", "pods", "-n", "team-b"]).expect_err("deleted");
    assert!(err.contains("Unauthorized"), "{err}");
    let forged = token_kubeconfig(&c, "forged", &format!("{}x", alice_token.trim()));
    let err = run(&c, &forged, &["get", "pods", "-n", "team-a"]).expect_err("forged");
    assert!(err.contains("Unauthorized"), "{err}");
    // A ServiceAccount of the same name made again is a new uid: the old token stays dead.
    c.kubectl_ok(&["create", "serviceaccount", "bob", "-n", "team-b"]);
    let err = run(&c, &bob, &["get", "pods", "-n", "team-b"]).expect_err("recreated");
    assert!(err.contains("Unauthorized"), "{err}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (scripts/setup.sh checks it is there)");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

fn csr_manifest(name: &str, request: &Path, usages: &str) -> String {
    use base64::Engine as _;
    let pem = std::fs::read(request).expect("the request");
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [{usages}]\n"
    )
}

/// The Kubernetes docs' "normal user" walkthrough, verbatim: an openssl key and request, a
/// CertificateSigningRequest, `kubectl certificate approve`, the issued certificate in a
/// kubeconfig; RBAC decides what the user may do. And `skiff kubeconfig`, which does it all.
#[test]
fn certificate_users_from_a_signing_request() {
    let c = Cluster::start(&["--no-node"]);
    let dir = c.dir.path().to_path_buf();
    c.kubectl_ok(&["create", "namespace", "team-a"]);
    openssl(&dir, &["genrsa", "-out", "myuser.key", "2048"]);
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "myuser.key",
            "-out",
            "myuser.csr",
            "-subj",
            "/CN=myuser/O=devs",
        ],
    );
    c.apply(&csr_manifest(
        "myuser",
        &dir.join("myuser.csr"),
        "client auth",
    ));
    let row = c.kubectl_ok(&["get", "csr", "myuser"]);
    assert!(
        row.contains("Pending") && row.contains("system:admin"),
        "{row}"
    );
    c.kubectl_ok(&["certificate", "approve", "myuser"]);
    let cert = crate::harness::eventually("the certificate is issued", crate::T, || {
        let c = c.jsonpath(&["csr", "myuser"], "{.status.certificate}");
        (!c.is_empty()).then_some(c)
    });
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(cert)
        .expect("base64");
    std::fs::write(dir.join("myuser.crt"), pem).expect("write");
    assert!(c
        .kubectl_ok(&["get", "csr", "myuser"])
        .contains("Approved,Issued"));

    let me = cert_kubeconfig(
        &c,
        "myuser",
        &dir.join("myuser.crt"),
        &dir.join("myuser.key"),
    );
    assert_eq!(
        run(
            &c,
            &me,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"
            ]
        )
        .expect("whoami"),
        r#"myuser ["devs","system:authenticated"]"#
    );
    let err = run(&c, &me, &["get", "pods", "-n", "team-a"]).expect_err("no role yet");
    assert!(
        err.contains(r#"pods is forbidden: User "myuser" cannot list resource "pods" in API group "" in the namespace "team-a""#),
        "{err}"
    );
    c.kubectl_ok(&[
        "create",
        "role",
        "developer",
        "-n",
        "team-a",
        "--verb=create",
        "--verb=get",
        "--verb=list",
        "--verb=update",
        "--verb=delete",
        "--resource=pods",
    ]);
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "developer-binding-myuser",
        "-n",
        "team-a",
        "--role=developer",
        "--user=myuser",
    ]);
    run(&c, &me, &["get", "pods", "-n", "team-a"]).expect("allowed now");
    run(&c, &me, &["get", "pods", "-n", "default"]).expect_err("only team-a");

    // Approving needs `approve` on the signer, not only write access to the approval.
    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: csr-approval-writer}
rules:
- apiGroups: [certificates.k8s.io]
  resources: [certificatesigningrequests, certificatesigningrequests/approval]
  verbs: [get, list, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: myuser-writes-approvals}
subjects: [{kind: User, name: myuser, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: csr-approval-writer, apiGroup: rbac.authorization.k8s.io}
"#,
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "myuser.key",
            "-out",
            "root.csr",
            "-subj",
            "/CN=root/O=system:masters",
        ],
    );
    c.apply(&csr_manifest(
        "escalate",
        &dir.join("root.csr"),
        "client auth",
    ));
    // (A binding counts from the moment it is written.)
    let err = run(&c, &me, &["certificate", "approve", "escalate"]).expect_err("no approve verb");
    assert!(
        err.contains(r#"user not permitted to approve requests with signerName "kubernetes.io/kube-apiserver-client""#),
        "{err}"
    );
    assert_eq!(c.jsonpath(&["csr", "escalate"], "{.status.conditions}"), "");

    // A denied request is never signed; a request for server usages fails with the reason.
    c.kubectl_ok(&["certificate", "deny", "escalate"]);
    c.apply(&csr_manifest(
        "server",
        &dir.join("myuser.csr"),
        "client auth, server auth",
    ));
    c.kubectl_ok(&["certificate", "approve", "server"]);
    c.wait_for(
        &["csr", "server"],
        r#"{.status.conditions[?(@.type=="Failed")].message}"#,
        "invalid usage for client certificate: server auth",
        crate::T,
    );
    assert_eq!(
        c.jsonpath(&["csr", "escalate"], "{.status.certificate}"),
        ""
    );

    // A certificate from another CA is not a credential.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "fake.key",
            "-out",
            "fake.crt",
            "-days",
            "1",
            "-subj",
            "/CN=admin/O=system:masters",
        ],
    );
    let fake = cert_kubeconfig(&c, "fake", &dir.join("fake.crt"), &dir.join("fake.key"));
    run(&c, &fake, &["get", "pods", "-A"]).expect_err("a self-signed certificate");

    // `skiff kubeconfig` does the whole walkthrough.
    let out = std::process::Command::new(crate::harness::SKIFF)
        .args([
            "kubeconfig",
            "--user",
            "carol",
            "--group",
            "devs",
            "--namespace",
            "team-a",
            "--duration",
            "24h",
            "--kubeconfig",
        ])
        .arg(&c.kubeconfig)
        .output()
        .expect("skiff kubeconfig runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let carol = dir.join("carol.yaml");
    std::fs::write(&carol, &out.stdout).expect("write");
    assert_eq!(
        run(
            &c,
            &carol,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"
            ]
        )
        .expect("whoami"),
        r#"carol ["devs","system:authenticated"]"#
    );
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "devs-view",
        "-n",
        "team-a",
        "--clusterrole=view",
        "--group=devs",
    ]);
    run(&c, &carol, &["get", "pods"]).expect("the context's namespace, viewed");
    let err = run(&c, &carol, &["create", "configmap", "x"]).expect_err("view only");
    assert!(
        err.contains(r#"User "carol" cannot create resource "configmaps" in API group "" in the namespace "team-a""#),
        "{err}"
    );
}

/// A joined node gets its own certificate through a signing request that the join token may
/// only make, and with it may touch only what is its own (NodeRestriction), and read only the
/// Secrets its pods refer to (the node authorizer).
#[test]
fn a_node_credential_is_confined() {
    let mut c = Cluster::start(&["--no-node"]);
    c.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Secret
metadata: {name: mine, namespace: team-a}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: theirs, namespace: team-a}
stringData: {k: v}
---
apiVersion: v1
kind: Node
metadata: {name: other}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: team-a}
---
apiVersion: v1
kind: Pod
metadata: {name: here, namespace: team-a}
spec:
  nodeName: worker
  containers:
  - name: main
    image: hello:latest
    env:
    - name: K
      valueFrom: {secretKeyRef: {name: mine, key: k}}
---
apiVersion: v1
kind: Pod
metadata: {name: there, namespace: team-a}
spec:
  nodeName: other
  serviceAccountName: robot
  containers:
  - name: main
    image: hello:latest
    env:
    - name: K
      valueFrom: {secretKeyRef: {name: theirs, key: k}}
"#,
    );
    // The join token alone: it may ask for a node certificate and nothing else.
    let token = std::fs::read_to_string(c.data().join("node-token")).expect("join token");
    let joiner = token_kubeconfig(&c, "joiner", &token);
    assert_eq!(
        run(
            &c,
            &joiner,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}"
            ]
        )
        .expect("whoami"),
        "system:bootstrap:node-join-token"
    );
    for args in [
        vec!["get", "secret", "mine", "-n", "team-a"],
        vec!["get", "pods", "-A"],
        vec!["get", "nodes"],
    ] {
        let err = run(&c, &joiner, &args).expect_err("the join token is no credential");
        assert!(err.contains("forbidden"), "{args:?}: {err}");
    }

    // The join token cannot get the certificate of a node that exists (here `other`).
    let dir = c.dir.path().to_path_buf();
    openssl(
        &dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "steal.key",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "steal.key",
            "-out",
            "steal.csr",
            "-subj",
            "/CN=system:node:other/O=system:nodes",
        ],
    );
    let steal = csr_manifest(
        "steal",
        &dir.join("steal.csr"),
        "digital signature, client auth",
    )
    .replace(
        "kubernetes.io/kube-apiserver-client\n",
        "kubernetes.io/kube-apiserver-client-kubelet\n",
    );
    let steal_file = dir.join("steal.yaml");
    std::fs::write(&steal_file, steal).expect("write");
    run(
        &c,
        &joiner,
        &["create", "-f", steal_file.to_str().expect("utf-8")],
    )
    .expect("the join token may ask");

    c.join_node("worker");
    let creds = c.dir.path().join("worker").join("credentials");
    crate::harness::eventually("the node's certificate is issued", crate::T, || {
        creds.join("node.crt").exists().then_some(())
    });
    let csr = c.kubectl_ok(&["get", "csr"]);
    assert!(
        csr.lines().any(
            |l| l.contains("kubernetes.io/kube-apiserver-client-kubelet")
                && l.contains("system:bootstrap:node-join-token")
                && l.contains("Approved,Issued")
        ),
        "{csr}"
    );
    c.wait_for(&["node", "worker"], "{.metadata.name}", "worker", crate::T);
    assert_eq!(
        c.jsonpath(&["csr", "steal"], "{.status}"),
        "{}",
        "not approved"
    );
    let node = cert_kubeconfig(
        &c,
        "worker",
        &creds.join("node.crt"),
        &creds.join("node.key"),
    );
    assert_eq!(
        run(
            &c,
            &node,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"
            ]
        )
        .expect("whoami"),
        r#"system:node:worker ["system:nodes","system:authenticated"]"#
    );
    // What is its own, or what its pods need.
    run(&c, &node, &["get", "secret", "mine", "-n", "team-a"]).expect("its pod's secret");
    run(&c, &node, &["get", "pods", "-A"]).expect("pods");
    run(&c, &node, &["label", "node", "worker", "rack=r1"]).expect("its own node");
    // Nothing else.
    let denied = [
        (
            vec!["get", "secret", "theirs", "-n", "team-a"],
            r#"secrets "theirs" is forbidden: User "system:node:worker" cannot get resource "secrets""#,
        ),
        (
            vec!["get", "secrets", "-n", "team-a"],
            r#"cannot list resource "secrets""#,
        ),
        (
            vec!["delete", "pod", "there", "-n", "team-a"],
            r#"node "worker" can only delete pod team-a/there if it is bound to it"#,
        ),
        (
            vec!["label", "node", "other", "rack=r2"],
            r#"node "worker" is not allowed to modify node "other""#,
        ),
        // Its own Node, but a label that would give it a role (or a dedicated workload).
        (
            vec![
                "label",
                "node",
                "worker",
                "node-role.kubernetes.io/control-plane=true",
            ],
            r#"node "worker" is not allowed to modify labels: node-role.kubernetes.io/control-plane"#,
        ),
        (
            vec![
                "label",
                "node",
                "worker",
                "node-restriction.kubernetes.io/tenant=bank",
            ],
            r#"node "worker" is not allowed to modify labels: node-restriction.kubernetes.io/tenant"#,
        ),
        // Its own taints: shedding one would draw workloads that are kept away.
        (
            vec!["taint", "node", "worker", "dedicated=bank:NoSchedule"],
            r#"node "worker" is not allowed to modify taints"#,
        ),
        (
            vec!["run", "x", "-n", "team-a", "--image=hello:latest"],
            r#"User "system:node:worker" cannot create resource "pods""#,
        ),
        (vec!["get", "configmaps", "-A"], "forbidden"),
    ];
    for (args, want) in denied {
        let err = run(&c, &node, &args).expect_err("confined");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // ServiceAccount tokens: only of an account its pods run as, only bound to its own pod by
    // uid (the kubelet's projected tokens), as NodeRestriction has it.
    let here_uid = c.jsonpath(&["pod", "here", "-n", "team-a"], "{.metadata.uid}");
    let there_uid = c.jsonpath(&["pod", "there", "-n", "team-a"], "{.metadata.uid}");
    let token = |account: &str, pod: Option<(&str, &str)>| {
        let mut args = vec!["create", "token", account, "-n", "team-a"];
        if let Some((name, uid)) = pod {
            args.extend(["--bound-object-kind", "Pod", "--bound-object-name", name]);
            if !uid.is_empty() {
                args.extend(["--bound-object-uid", uid]);
            }
        }
        run(&c, &node, &args)
    };
    let jwt = token("default", Some(("here", &here_uid))).expect("its own pod's token");
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let refused = [
        (
            token("default", None),
            "node requested token not bound to a pod",
        ),
        (
            token("default", Some(("here", ""))),
            "node requested token with a pod binding without a uid",
        ),
        (
            token("robot", Some(("there", &there_uid))),
            r#"User "system:node:worker" cannot create resource "serviceaccounts/token""#,
        ),
    ];
    for (got, want) in refused {
        let err = got.expect_err("refused");
        assert!(err.contains(want), "{err}");
    }
    // The secret becomes readable when a pod bound to the node refers to it, and stops being
    // readable when that pod is gone.
    c.kubectl_ok(&[
        "delete",
        "pod",
        "here",
        "-n",
        "team-a",
        "--grace-period=0",
        "--force",
    ]);
    let err = run(&c, &node, &["get", "secret", "mine", "-n", "team-a"]).expect_err("no pod");
    assert!(err.contains("forbidden"), "{err}");
}

/// ResourceQuota and LimitRange admission: defaults applied, bounds and quotas refused with
/// Kubernetes' messages, usage kept in `status.used` and given back on deletion, and the last
/// unit of a quota taken by exactly one of many concurrent creates.
#[test]
fn quotas_and_limit_ranges_bound_a_namespace() {
    let c = Cluster::start(&["--no-node"]);
    c.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: lab}
---
apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: lab}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 64Mi}
    defaultRequest: {cpu: 100m}
    max: {memory: 256Mi}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute, namespace: lab}
spec:
  hard: {pods: "2", requests.cpu: "1", limits.memory: 1Gi}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: counts, namespace: lab}
spec:
  hard: {count/deployments.apps: "1", services.nodeports: "1"}
"#,
    );
    // Updates are charged for what they add: one Service may become a NodePort, not two.
    for svc in ["one", "two"] {
        c.kubectl_ok(&[
            "create",
            "service",
            "clusterip",
            svc,
            "-n",
            "lab",
            "--tcp=80:8080",
        ]);
    }
    let to_node_port = |svc: &str| {
        c.kubectl(&[
            "patch",
            "service",
            svc,
            "-n",
            "lab",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ])
    };
    assert!(to_node_port("one").status.success());
    let out = to_node_port("two");
    assert!(
        stderr(&out).contains(r#"services "two" is forbidden: exceeded quota: counts, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        c.jsonpath(&["service", "two", "-n", "lab"], "{.spec.type}"),
        "ClusterIP",
        "nothing half-written"
    );
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: lab}}\nspec:\n  containers:\n  - name: main\n    image: hello:latest\n{resources}"
        )
    };
    c.apply(&pod("a", ""));
    assert_eq!(
        c.jsonpath(
            &["pod", "a", "-n", "lab"],
            "{.spec.containers[0].resources}"
        ),
        r#"{"limits":{"cpu":"500m","memory":"64Mi"},"requests":{"cpu":"100m","memory":"64Mi"}}"#
    );
    let create = |manifest: &str| {
        let path = c
            .dir
            .path()
            .join(format!("m-{}.yaml", crate::harness::rand_suffix()));
        std::fs::write(&path, manifest).expect("write");
        c.kubectl(&["create", "-f", path.to_str().expect("utf-8")])
    };
    let out = create(&pod("big", "    resources: {limits: {memory: 512Mi}}\n"));
    assert!(
        stderr(&out).contains(r#"pods "big" is forbidden: maximum memory usage per Container is 256Mi, but limit is 512Mi"#),
        "{}",
        stderr(&out)
    );
    assert!(create(&pod("b", "")).status.success());
    let out = create(&pod("c", ""));
    assert!(
        stderr(&out).contains(r#"pods "c" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        c.jsonpath(&["quota", "compute", "-n", "lab"], "{.status.used.pods}"),
        "2"
    );
    assert_eq!(
        c.jsonpath(
            &["quota", "compute", "-n", "lab"],
            "{.status.used.requests\\.cpu}"
        ),
        "200m"
    );
    let described = c.kubectl_ok(&["describe", "quota", "compute", "-n", "lab"]);
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("pods") && l.contains('2')),
        "{described}"
    );
    // A deletion gives its usage back.
    c.kubectl_ok(&[
        "delete",
        "pod",
        "a",
        "-n",
        "lab",
        "--grace-period=0",
        "--force",
    ]);
    c.wait_for(
        &["quota", "compute", "-n", "lab"],
        "{.status.used.pods}",
        "1",
        crate::T,
    );
    assert!(create(&pod("c", "")).status.success());
    // Counts of any kind.
    c.kubectl_ok(&[
        "create",
        "deployment",
        "d1",
        "-n",
        "lab",
        "--image=hello:latest",
    ]);
    let out = c.kubectl(&[
        "create",
        "deployment",
        "d2",
        "-n",
        "lab",
        "--image=hello:latest",
    ]);
    assert!(
        stderr(&out).contains("exceeded quota: counts, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"),
        "{}",
        stderr(&out)
    );

    // Many creates race for the last three pods: exactly three get one.
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: race}\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata: {name: three, namespace: race}\nspec:\n  hard: {pods: \"3\"}\n");
    let children: Vec<_> = (0..10)
        .map(|i| {
            let path = c.dir.path().join(format!("race-{i}.yaml"));
            std::fs::write(
                &path,
                format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: race}}\nspec:\n  containers:\n  - {{name: main, image: hello:latest}}\n"),
            )
            .expect("write");
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&c.kubeconfig)
                .args(["create", "-f"])
                .arg(&path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kubectl")
        })
        .collect();
    let created = children
        .into_iter()
        .map(|mut ch| ch.wait().expect("kubectl ends"))
        .filter(|s| s.success())
        .count();
    assert_eq!(created, 3);
    assert_eq!(
        c.jsonpath(&["quota", "three", "-n", "race"], "{.status.used.pods}"),
        "3"
    );
}

/// `--audit-log`: one audit.k8s.io Event per request (who, what, the answer), never a value.
#[test]
fn the_audit_log_records_who_did_what() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.log");
    let c = Cluster::start(&["--no-node", "--audit-log", log.to_str().expect("utf-8")]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2-value",
    ]);
    c.kubectl_ok(&["create", "serviceaccount", "eve"]);
    let token = c.kubectl_ok(&["create", "token", "eve"]);
    let eve = token_kubeconfig(&c, "eve", &token);
    run(&c, &eve, &["get", "secret", "db"]).expect_err("eve may not");
    let find = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let denied = events.iter().find(|e| {
            e["user"]["username"] == "system:serviceaccount:default:eve"
                && e["objectRef"]["resource"] == "secrets"
                && e["responseStatus"]["code"] == 403
        })?;
        let created = events.iter().find(|e| {
            e["user"]["username"] == "system:admin"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "secrets"
                && e["responseStatus"]["code"] == 201
        })?;
        Some((text.clone(), denied.clone(), created.clone()))
    };
    let (text, denied, _) =
        crate::harness::eventually("the audit lines are written", crate::T, find);
    assert_eq!(denied["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(denied["objectRef"]["name"], "db");
    assert_eq!(denied["verb"], "get");
    assert!(
        !text.contains("hunter2"),
        "no secret value in the audit log"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).expect("log").permissions().mode() & 0o777,
        0o600
    );
}

/// A node's client and serving certificates are renewed while it runs: with certificates that
/// live 20 s (`--cluster-signing-duration`), the node keeps heartbeating, running pods and
/// serving their logs long after the certificates it started with have expired.
#[test]
fn node_certificates_are_renewed_while_the_node_runs() {
    let mut c = Cluster::start(&["--no-node", "--cluster-signing-duration", "20s"]);
    c.push_ok("hello:latest", &crate::harness::example("hello", false));
    c.join_node("worker");
    let creds = c.dir.path().join("worker").join("credentials");
    let read = |f: &str| std::fs::read_to_string(creds.join(f)).unwrap_or_default();
    let (client0, serving0) =
        crate::harness::eventually("the node's first certificates", crate::T, || {
            let (a, b) = (read("node.crt"), read("serving.crt"));
            (!a.is_empty() && !b.is_empty()).then_some((a, b))
        });
    let started = std::time::Instant::now();
    // Both are replaced while the node runs, without a restart.
    crate::harness::eventually("both certificates renewed", crate::T, || {
        (read("node.crt") != client0 && read("serving.crt") != serving0).then_some(())
    });
    // Past the first certificates' end, the node still works with its new ones.
    let expired = std::time::Duration::from_secs(21);
    if let Some(rest) = expired.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  nodeName: worker
  restartPolicy: Never
  containers: [{name: main, image: hello:latest}]
"#,
    );
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/late",
        "--timeout=60s",
    ]);
    let logs = c.kubectl_ok(&["logs", "late"]);
    assert!(logs.contains("Hello from skiff!"), "{logs}");
    c.wait_for(
        &["node", "worker"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        crate::T,
    );
}

#[test]
fn a_quota_scoped_by_priority_class_counts_only_those_pods() {
    let c = Cluster::start(&[]);
    c.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: prio}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: high-pods, namespace: prio}
spec:
  hard: {pods: "1"}
  scopeSelector:
    matchExpressions: [{scopeName: PriorityClass, operator: In, values: [high]}]
"#,
    );
    let create = |name: &str, class: &str| {
        let path = c.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: prio}}\nspec:\n{class}  containers: [{{name: c, image: \"hello:v1\"}}]\n"
            ),
        )
        .expect("write");
        c.kubectl(&["create", "-f", path.to_str().expect("utf-8")])
    };
    let high = "  priorityClassName: high\n";
    assert!(create("first", high).status.success());
    let out = create("second", high);
    assert!(
        stderr(&out).contains(r#"pods "second" is forbidden: exceeded quota: high-pods, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{}",
        stderr(&out)
    );
    // Pods of no class (or another) are not the quota's.
    assert!(create("plain", "").status.success());
    assert!(create("plain-2", "").status.success());
    assert_eq!(
        c.jsonpath(&["quota", "high-pods", "-n", "prio"], "{.status.used.pods}"),
        "1"
    );
    // A selector kube-apiserver would refuse is refused.
    let bad = c.dir.path().join("bad-quota.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: bad, namespace: prio}\nspec:\n  hard: {pods: \"1\"}\n  scopeSelector:\n    matchExpressions: [{scopeName: BestEffort, operator: In, values: [x]}]\n",
    )
    .expect("write");
    let out = c.kubectl(&["create", "-f", bad.to_str().expect("utf-8")]);
    assert!(
        stderr(&out).contains("spec.scopeSelector.matchExpressions[0].operator"),
        "{}",
        stderr(&out)
    );
}
