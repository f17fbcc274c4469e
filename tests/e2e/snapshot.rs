//! Snapshots: an online `skiff snapshot save` of a running cluster, refusals (an existing file,
//! a restore under a running server, a second server on a data dir), scheduled snapshots with
//! retention, and a restore that brings back every object, the cluster's identity and its
//! modules, and nothing written after the snapshot.

use crate::harness::{eventually, example, Cluster};
use crate::T;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `skiff snapshot VERB FILE --data-dir DIR`.
fn snapshot(
    c: &Cluster,
    verb: &str,
    file: &std::path::Path,
    dir: &std::path::Path,
) -> std::process::Output {
    let (file, dir) = (file.to_str().expect("utf-8"), dir.to_str().expect("utf-8"));
    c.skiff(&["snapshot", verb, file, "--data-dir", dir])
}

#[test]
fn a_snapshot_brings_the_cluster_back() {
    let mut c = Cluster::start(&["--snapshot-interval", "1s", "--snapshot-retention", "2"]);
    c.push_ok("hello:latest", &example("hello", false));
    c.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: keep}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: keep}
data: {color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: password, namespace: keep}
stringData: {value: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: before, namespace: keep}
spec:
  restartPolicy: Never
  containers: [{name: main, image: hello:latest}]
"#,
    );
    c.kubectl_ok(&[
        "wait",
        "-n",
        "keep",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/before",
        "--timeout=60s",
    ]);
    let uid = c.jsonpath(&["configmap", "settings", "-n", "keep"], "{.metadata.uid}");

    // Online, while the server runs.
    let data = c.data();
    let snap = c.dir.path().join("one.db");
    let out = snapshot(&c, "save", &snap, &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("saved: revision"), "{}", text(&out));
    // Never over a file; never a restore under a running server; one server per data dir.
    let again = snapshot(&c, "save", &snap, &data);
    assert!(
        !again.status.success() && text(&again).contains("exists already"),
        "{}",
        text(&again)
    );
    let under = snapshot(&c, "restore", &snap, &data);
    assert!(
        !under.status.success() && text(&under).contains("a skiff server is running on"),
        "{}",
        text(&under)
    );
    let second = c.skiff(&[
        "server",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
        "--no-node",
    ]);
    assert!(
        !second.status.success() && text(&second).contains("another skiff server is running on"),
        "{}",
        text(&second)
    );
    // Scheduled snapshots, the newest two kept.
    let scheduled = data.join("snapshots");
    eventually("two scheduled snapshots, no more", T, || {
        let n = std::fs::read_dir(&scheduled)
            .map(|d| d.count())
            .unwrap_or(0);
        (n == 2).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        std::fs::read_dir(&scheduled)
            .map(|d| d.count())
            .unwrap_or(0),
        2
    );

    // Written after the snapshot: gone after the restore.
    c.kubectl_ok(&[
        "create",
        "configmap",
        "later",
        "-n",
        "keep",
        "--from-literal=a=b",
    ]);

    // Lose the data dir; restore into it; start again.
    c.kill9();
    std::fs::rename(&data, c.dir.path().join("lost")).expect("move the data dir away");
    let out = snapshot(&c, "restore", &snap, &data);
    assert!(out.status.success(), "{}", text(&out));
    c.start_again(&[]);
    assert_eq!(
        c.jsonpath(
            &["configmap", "settings", "-n", "keep"],
            "{.data.color} {.metadata.uid}"
        ),
        format!("blue {uid}")
    );
    let secret = c.jsonpath(&["secret", "password", "-n", "keep"], "{.data.value}");
    assert_eq!(secret, "czNjcmV0", "s3cret, base64");
    let later = c.kubectl(&["get", "configmap", "later", "-n", "keep"]);
    assert!(!later.status.success(), "written after the snapshot");
    assert_eq!(
        c.jsonpath(&["pod", "before", "-n", "keep"], "{.status.phase}"),
        "Succeeded"
    );
    // Its modules came back too: a new pod runs from the module pushed before.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: after, namespace: keep}
spec:
  restartPolicy: Never
  containers: [{name: main, image: hello:latest}]
"#,
    );
    c.kubectl_ok(&[
        "wait",
        "-n",
        "keep",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/after",
        "--timeout=60s",
    ]);
    let logs = c.kubectl_ok(&["logs", "after", "-n", "keep"]);
    assert!(logs.contains("Hello from skiff!"), "{logs}");
    // Restoring into a directory that is not empty is refused.
    let out = snapshot(&c, "restore", &snap, &c.dir.path().join("lost"));
    assert!(
        !out.status.success() && text(&out).contains("is not empty"),
        "{}",
        text(&out)
    );
}
