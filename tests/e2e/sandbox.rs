//! The attacks of issue 22, done as an attacker would: real pods with a real module that plants
//! links, hostile manifests and hand-made requests through stock kubectl. Each asserts the
//! refusal and that nothing outside the pod's directory was read or changed.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{example, pod, rand_suffix, Cluster};
use crate::T;

/// `kubectl apply` that must fail: its stderr.
fn apply_refused(c: &Cluster, manifest: &str) -> String {
    let path = c.dir.path().join(format!("bad-{}.yaml", rand_suffix()));
    std::fs::write(&path, manifest).expect("write manifest");
    let out = c.kubectl(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(
        !out.status.success(),
        "applied although it must be refused:\n{manifest}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pods_cannot_leave_their_volumes() {
    let c = Cluster::start(&[]);
    c.push_ok("envprint:latest", &example("envprint", false));
    let admin_token = std::fs::read_to_string(c.data().join("admin-token")).unwrap();
    let admin_token = admin_token.trim();

    // 1. A volume name that is a path is refused at the API (422), and nothing is written.
    let outside = c.dir.path().join("outside");
    let err = apply_refused(
        &c,
        &pod(
            "volname",
            "envprint:latest",
            "    args: [write, /v/x, pwned]\n    volumeMounts: [{name: v, mountPath: /v}]\n",
            &format!(
                "  volumes: [{{name: \"{}\", emptyDir: {{}}}}]\n",
                outside.display()
            ),
        ),
    );
    assert!(
        err.contains("spec.volumes[0].name: Invalid value") && err.contains("RFC 1123 label"),
        "{err}"
    );
    assert!(!outside.exists());

    // 2. subPath through a link a guest planted (CVE-2017-1002101): the init container links
    // `escape` to the server's data dir; the app container mounts it with subPath and would
    // read the admin token. It is never started: the mount is refused.
    c.apply(&pod(
        "subpath",
        "envprint:latest",
        "    args: [cat, /host/admin-token]\n    volumeMounts: [{name: data, mountPath: /host, subPath: escape}]\n",
        "  volumes: [{name: data, emptyDir: {}}]\n  initContainers:\n  - name: plant\n    image: envprint:latest\n    args: [link, ../../../../.., /data/escape]\n    volumeMounts: [{name: data, mountPath: /data}]\n",
    ));
    c.wait_for(
        &["pod", "subpath"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
        T,
    );
    let msg = c.jsonpath(
        &["pod", "subpath"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(msg.contains("symbolic link"), "{msg}");
    // The link was planted (the attack really happened) and the token never showed.
    let init_log = c.kubectl_ok(&["logs", "subpath", "-c", "plant"]);
    assert!(init_log.contains("linked /data/escape"), "{init_log}");
    let out = c.kubectl(&["logs", "subpath", "-c", "main"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(admin_token));

    // 3. A termination message through a link: the node reads it without following links.
    c.apply(&pod(
        "termlink",
        "envprint:latest",
        "    args: [link, ../../../../../admin-token, /data/msg]\n    terminationMessagePath: /data/msg\n    volumeMounts: [{name: data, mountPath: /data}]\n",
        "  volumes: [{name: data, emptyDir: {}}]\n",
    ));
    c.wait_for(&["pod", "termlink"], "{.status.phase}", "Succeeded", T);
    let logs = c.kubectl_ok(&["logs", "termlink"]);
    assert!(logs.contains("linked /data/msg"), "{logs}");
    let status = c.kubectl_ok(&["get", "pod", "termlink", "-o", "json"]);
    assert!(!status.contains(admin_token), "the token leaked: {status}");

    // 5. A limit the node cannot parse never means "unlimited": refused at admission.
    for (field, value) in [
        ("memory", "lots"),
        ("memory", "1e400"),
        ("memory", "0.5.5Gi"),
        ("cpu", "\"-1\""),
    ] {
        let err = apply_refused(
            &c,
            &pod(
                "limits",
                "envprint:latest",
                &format!("    args: [show]\n    resources: {{limits: {{{field}: {value}}}}}\n"),
                "",
            ),
        );
        assert!(
            err.contains(&format!(
                "spec.containers[0].resources.limits[{field}]: Invalid value"
            )),
            "{field}={value}: {err}"
        );
    }

    // 10. The data dir and the store (which holds Secrets) are the server's alone.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.data()), 0o700);
    assert_eq!(mode(&c.data().join("state.db")), 0o600);
    assert_eq!(mode(&c.data().join("node")), 0o700);
}

#[test]
fn the_api_refuses_hostile_requests() {
    let c = Cluster::start(&["--no-node"]);

    // 6. Names and data Kubernetes validates, with its messages.
    let err = apply_refused(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys}\ndata: {\"..data\": x}\n",
    );
    assert!(
        err.contains("data[..data]: Invalid value: \"..data\": must not start with '..'"),
        "{err}"
    );
    let err = apply_refused(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: labels, labels: {\"bad key\": v}}\n",
    );
    assert!(
        err.contains("metadata.labels: Invalid value: \"bad key\""),
        "{err}"
    );
    let big = "x".repeat(300 * 1024);
    let err = apply_refused(
        &c,
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: notes, annotations: {{a: {big}}}}}\n"),
    );
    assert!(err.contains("must have at most 262144 bytes"), "{err}");

    // 4. A JSON patch that doubles a subtree again and again is refused before it allocates.
    c.kubectl_ok(&["create", "configmap", "target", "--from-literal=k=v"]);
    let mut ops =
        vec![serde_json::json!({"op": "add", "path": "/data/a", "value": "x".repeat(1024)})];
    ops.push(serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": {"l": ["x".repeat(1024)]}}));
    for _ in 0..40 {
        ops.push(serde_json::json!({"op": "copy", "from": "/metadata/annotations/l", "path": "/metadata/annotations/m"}));
        ops.push(serde_json::json!({"op": "copy", "from": "/metadata/annotations/m", "path": "/metadata/annotations/l/-"}));
    }
    let patch = serde_json::to_string(&ops).unwrap();
    assert!(
        patch.len() < 16 * 1024,
        "a small request: {} bytes",
        patch.len()
    );
    let out = c.kubectl(&["patch", "configmap", "target", "--type=json", "-p", &patch]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("larger than"),
        "{err}"
    );
    // The server is fine and the object unchanged.
    assert_eq!(c.jsonpath(&["configmap", "target"], "{.data.k}"), "v");

    // 7. A forged continue token is refused; a watch from a future revision ends with 504.
    let forged = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"v":"meta.k8s.io/v1","rv":99999999,"start":"default/a"}"#)
    };
    let out = c.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={forged}"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("continue key is not valid"),
        "{err}"
    );
    // A real token from this server works.
    c.kubectl_ok(&["create", "configmap", "second"]);
    let page = c.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=1",
    ]);
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    c.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}"),
    ]);
    // One request with curl: kubectl would retry the 504 after its Retry-After, as client-go
    // does with kube-apiserver's.
    let token = std::fs::read_to_string(c.data().join("admin-token")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--cacert"])
        .arg(c.data().join("tls/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=99999999",
            c.url
        ))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/2 504") || answer.starts_with("http/1.1 504"),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.contains("too large resource version: 99999999"),
        "{answer}"
    );
}

/// Does any file of the store hold `needle`?
fn store_holds(c: &Cluster, needle: &str) -> bool {
    ["state.db", "state.db-wal"].iter().any(|f| {
        std::fs::read(c.data().join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    use base64::Engine as _;
    let keys = tempfile::tempdir().unwrap();
    let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let write = |name: &str, providers: &str| {
        let path = keys.path().join(name);
        std::fs::write(
            &path,
            format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let first = write(
        "first.yaml",
        &format!(
            "  - aescbc: {{keys: [{{name: one, secret: \"{}\"}}]}}\n  - identity: {{}}\n",
            key(1)
        ),
    );
    let mut c = Cluster::start(&["--no-node", "--encryption-provider-config", &first]);
    let value = format!("very-secret-{}", rand_suffix());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        &format!("--from-literal=password={value}"),
    ]);
    c.kubectl_ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=note=visible-note",
    ]);
    assert_eq!(c.jsonpath(&["secret", "pw"], "{.data.password}"), encoded);
    assert!(
        !store_holds(&c, &encoded),
        "the secret is stored in plain text"
    );
    assert!(store_holds(&c, "k8s:enc:aescbc:v1:one:"));
    // ConfigMaps are not configured: stored as they are.
    assert!(store_holds(&c, "visible-note"));

    // Rotation: the new key first, the old one still readable; re-write; then drop the old key.
    let both = write(
        "both.yaml",
        &format!(
            "  - secretbox: {{keys: [{{name: two, secret: \"{}\"}}]}}\n  - aescbc: {{keys: [{{name: one, secret: \"{}\"}}]}}\n",
            key(2),
            key(1)
        ),
    );
    c.kill9_and_restart(&["--no-node", "--encryption-provider-config", &both]);
    assert_eq!(c.jsonpath(&["secret", "pw"], "{.data.password}"), encoded);
    let json = c.kubectl_ok(&["get", "secret", "pw", "-o", "json"]);
    let path = c.dir.path().join("pw.json");
    std::fs::write(&path, json).unwrap();
    c.kubectl_ok(&["replace", "-f", path.to_str().unwrap()]);
    let only_new = write(
        "new.yaml",
        &format!(
            "  - secretbox: {{keys: [{{name: two, secret: \"{}\"}}]}}\n",
            key(2)
        ),
    );
    c.kill9_and_restart(&["--no-node", "--encryption-provider-config", &only_new]);
    assert_eq!(c.jsonpath(&["secret", "pw"], "{.data.password}"), encoded);
    // Without the key, the server does not hand out what it cannot decrypt, nor invent it.
    let wrong = write(
        "wrong.yaml",
        &format!(
            "  - secretbox: {{keys: [{{name: three, secret: \"{}\"}}]}}\n",
            key(3)
        ),
    );
    // Without the key, the server refuses to start, naming the object and the key it lacks.
    if let Some(mut p) = c.server.take() {
        p.0.kill().unwrap();
        let _ = p.0.wait();
    }
    let out = std::process::Command::new(crate::harness::SKIFF)
        .args([
            "server",
            "--no-node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(c.data())
        .args(["--encryption-provider-config", &wrong])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("secrets/default/pw") && err.contains("no configured key \"two\""),
        "{err}"
    );
}
