//! End-to-end tests: the real `skiff` binary on loopback, driven by stock kubectl.
//! One test binary (one link step); see `harness` for the process handling.

mod auth;
mod autoscaling;
mod controllers;
mod crash;
mod etcd;
mod harness;
mod http;
mod kinds;
mod netpolicy;
mod node;
mod operator;
mod outage;
mod podtokens;
mod registry;
mod sandbox;
mod snapshot;
mod tenants;

use std::time::Duration;

use harness::{example, pod, Cluster};

pub(crate) const T: Duration = Duration::from_secs(60);

fn push_examples(c: &Cluster) {
    c.push_ok("hello:latest", &example("hello", false));
    c.push_ok("hello-p2:latest", &example("hello", true));
    c.push_ok("crash:latest", &example("crash", false));
    c.push_ok("ticker:latest", &example("ticker", false));
}

pub(crate) fn manifest(name: &str) -> String {
    std::fs::read_to_string(
        harness::root()
            .join("wasm-examples/manifests")
            .join(format!("{name}.yaml")),
    )
    .expect("example manifest")
}

#[test]
fn hello_succeeds_and_its_output_reaches_kubectl_logs() {
    let c = Cluster::start(&[]);
    push_examples(&c);
    assert!(c.apply(&manifest("hello")).contains("pod/hello created"));
    assert!(c
        .apply(&manifest("hello-p2"))
        .contains("pod/hello-p2 created"));
    // `kubectl wait` lists and watches: this exercises the watch stream.
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/hello",
        "pod/hello-p2",
        "--timeout=60s",
    ]);
    let logs = c.kubectl_ok(&["logs", "hello"]);
    assert!(logs.contains("Hello from skiff!"), "{logs}");
    assert!(
        logs.contains(r#"argv: ["hello", "world", "from a manifest"]"#),
        "{logs}"
    );
    let logs = c.kubectl_ok(&["logs", "hello-p2"]);
    assert!(
        logs.contains("Hi from skiff!") && logs.contains("component"),
        "{logs}"
    );
    let table = c.kubectl_ok(&["get", "pods"]);
    assert!(
        table.contains("STATUS") && table.contains("RESTARTS") && table.contains("Completed"),
        "{table}"
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "hello"],
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "0"
    );
}

#[test]
fn args_from_a_manifest_and_command_become_argv() {
    let c = Cluster::start(&[]);
    c.push_ok("hello:v1", &example("hello", false));
    let m = pod("argv", "hello:v1", "    command: [\"greeter\", \"--loud\"]\n    args: [\"one\", \"two words\"]\n    env:\n    - name: GREETING\n      value: Howdy\n", "");
    c.apply(&m);
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/argv",
        "--timeout=60s",
    ]);
    let logs = c.kubectl_ok(&["logs", "argv", "--timestamps"]);
    assert!(
        logs.contains(r#"argv: ["greeter", "--loud", "one", "two words"]"#),
        "{logs}"
    );
    assert!(logs.contains("Howdy from skiff!"), "{logs}");
    assert!(
        logs.starts_with("20"),
        "--timestamps prefixes each line with its time: {logs}"
    );
    assert_eq!(
        c.kubectl_ok(&["logs", "argv", "--tail=1"]).lines().count(),
        1
    );
}

#[test]
fn crash_fails_with_exit_code_3() {
    let c = Cluster::start(&[]);
    c.push_ok("crash:latest", &example("crash", false));
    c.apply(&manifest("crash"));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/crash",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Error"
    );
    let logs = c.kubectl_ok(&["logs", "crash"]);
    assert!(
        logs.contains("exiting with code 3"),
        "stderr reaches the log: {logs}"
    );
    // What the module wrote to its terminationMessagePath is the terminated state's message.
    assert_eq!(
        c.jsonpath(
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "crash: gave up on purpose (exit code 3)"
    );
    // A path inside a volume works too; FallbackToLogsOnError takes the log when the file is
    // empty.
    c.apply(&pod(
        "crash-custom",
        "crash:latest",
        "    terminationMessagePath: /scratch/why\n    env: [{name: TERMINATION_LOG, value: /scratch/why}]\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
        "  volumes: [{name: scratch, emptyDir: {}}]\n",
    ));
    c.apply(&pod(
        "crash-fallback",
        "crash:latest",
        "    terminationMessagePolicy: FallbackToLogsOnError\n    env: [{name: TERMINATION_LOG, value: /nowhere}]\n",
        "",
    ));
    for p in ["crash-custom", "crash-fallback"] {
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    assert_eq!(
        c.jsonpath(
            &["pod", "crash-custom"],
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "crash: gave up on purpose (exit code 3)"
    );
    assert!(c
        .jsonpath(
            &["pod", "crash-fallback"],
            "{.status.containerStatuses[0].state.terminated.message}"
        )
        .contains("exiting with code 3"));
}

#[test]
fn missing_or_invalid_modules_are_explained() {
    let c = Cluster::start(&[]);
    c.apply(&pod("nope", "missing:v1", "", ""));
    c.wait_for(
        &["pod", "nope"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ErrImagePull",
        T,
    );
    let describe = c.kubectl_ok(&["describe", "pod", "nope"]);
    assert!(describe.contains("ErrImagePull"), "{describe}");
    assert!(
        describe.contains("missing:v1 not found in the cluster's module store"),
        "{describe}"
    );

    // Valid header, invalid body: the node reports CreateContainerError, and keeps running.
    let bad = c.dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x7f\x7f\x7f garbage").unwrap();
    c.push_ok("bad:v1", &bad);
    c.apply(&pod("bad", "bad:v1", "", ""));
    c.wait_for(
        &["pod", "bad"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerError",
        T,
    );
    let msg = c.jsonpath(
        &["pod", "bad"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(msg.contains("invalid WebAssembly"), "{msg}");

    // Not wasm at all: refused at push.
    std::fs::write(&bad, b"#!/bin/sh\necho hi\n").unwrap();
    let out = c.push("notwasm:v1", &bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly module"));

    // Bad input to the API gets a Status with the right reason.
    let out = c.kubectl(&["apply", "-f", "-"]);
    assert!(!out.status.success());
    let bad_pod = c.dir.path().join("invalid.yaml");
    std::fs::write(&bad_pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: main\n").unwrap();
    let out = c.kubectl(&["apply", "-f", bad_pod.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid") && err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
    std::fs::write(&bad_pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: typo\nspec:\n  containers:\n  - name: main\n    image: hello\n    imagee: x\n").unwrap();
    let err = String::from_utf8_lossy(
        &c.kubectl(&["apply", "-f", bad_pod.to_str().unwrap()])
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains(r#"unknown field "spec.containers[0].imagee""#),
        "{err}"
    );
    // The node survived all of it.
    assert!(c.kubectl_ok(&["get", "nodes"]).contains(" Ready "));
}

#[test]
fn image_pull_policy_decides_when_the_node_asks_the_module_store() {
    let c = Cluster::start(&[]);
    let phase = |name: &str| {
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/{name}"),
            "--timeout=60s",
        ]);
    };
    // A tag that is not `latest` defaults to IfNotPresent; the first pod pulls it.
    c.push_ok("tagged:v1", &example("hello", false));
    c.apply(&pod("pp-first", "tagged:v1", "", ""));
    phase("pp-first");
    assert_eq!(
        c.jsonpath(
            &["pod", "pp-first"],
            "{.spec.containers[0].imagePullPolicy}"
        ),
        "IfNotPresent"
    );
    let hello_id = c.jsonpath(
        &["pod", "pp-first"],
        "{.status.containerStatuses[0].imageID}",
    );
    // The tag now names another module (one that exits 3). IfNotPresent and Never keep
    // running what the node has; Always asks and gets the new one.
    c.push_ok("tagged:v1", &example("crash", false));
    c.apply(&pod("pp-cached", "tagged:v1", "", ""));
    c.apply(&pod(
        "pp-never",
        "tagged:v1",
        "    imagePullPolicy: Never\n",
        "",
    ));
    phase("pp-cached");
    phase("pp-never");
    for p in ["pp-cached", "pp-never"] {
        assert_eq!(
            c.jsonpath(&["pod", p], "{.status.containerStatuses[0].imageID}"),
            hello_id
        );
        let events = c.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={p}"),
        ]);
        assert!(
            events.contains("already present on the node") && !events.contains("Pulling"),
            "{events}"
        );
    }
    c.apply(&pod(
        "pp-always",
        "tagged:v1",
        "    imagePullPolicy: Always\n",
        "",
    ));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/pp-always",
        "--timeout=60s",
    ]);
    assert_ne!(
        c.jsonpath(
            &["pod", "pp-always"],
            "{.status.containerStatuses[0].imageID}"
        ),
        hello_id
    );
    // `--sort-by` a field outside the metadata: kubectl asks for whole objects in the table.
    let sorted = c.kubectl_ok(&["get", "events", "--sort-by=.lastTimestamp"]);
    assert!(
        sorted.contains("pod/pp-never") && sorted.contains("already present on the node"),
        "{sorted}"
    );
    let by_policy = c.kubectl_ok(&[
        "get",
        "pods",
        "--sort-by=.spec.containers[0].imagePullPolicy",
    ]);
    let order: Vec<&str> = by_policy
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        order.first() == Some(&"pp-always") && order.last() == Some(&"pp-never"),
        "{by_policy}"
    );
    // Never, for a module this node never pulled: the container waits and says why.
    c.push_ok("elsewhere:v1", &example("hello", false));
    c.apply(&pod(
        "pp-missing",
        "elsewhere:v1",
        "    imagePullPolicy: Never\n",
        "",
    ));
    c.wait_for(
        &["pod", "pp-missing"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ErrImageNeverPull",
        T,
    );
    let describe = c.kubectl_ok(&["describe", "pod", "pp-missing"]);
    assert!(
        describe.contains(r#"Module "elsewhere:v1" is not present with pull policy of Never"#),
        "{describe}"
    );
    // A policy Kubernetes does not know is refused with its list.
    let bad = c.dir.path().join("bad-policy.yaml");
    std::fs::write(
        &bad,
        pod(
            "pp-bad",
            "tagged:v1",
            "    imagePullPolicy: Sometimes\n",
            "",
        ),
    )
    .unwrap();
    let out = c.kubectl(&["apply", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(r#"spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never""#),
        "{err}"
    );
}

#[test]
fn deleting_a_running_pod_waits_its_grace_period() {
    let c = Cluster::start(&[]);
    c.push_ok("ticker:latest", &example("ticker", false));
    c.apply(&pod(
        "tick",
        "ticker:latest",
        "    env:\n    - name: TICK_MS\n      value: \"50\"\n",
        "",
    ));
    c.wait_for(&["pod", "tick"], "{.status.phase}", "Running", T);
    c.wait_for(
        &["pod", "tick"],
        "{.status.containerStatuses[0].ready}",
        "true",
        T,
    );
    let deadline = std::time::Instant::now() + T;
    while !c.kubectl_ok(&["logs", "tick"]).contains("tick 3") {
        assert!(std::time::Instant::now() < deadline, "ticker never ticked");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A deleted pod keeps running through its grace period (30 s by default)...
    c.kubectl_ok(&["delete", "pod", "tick", "--wait=false"]);
    c.wait_for(
        &["pod", "tick"],
        "{.metadata.deletionGracePeriodSeconds}",
        "30",
        T,
    );
    let ticks = |c: &Cluster| c.kubectl_ok(&["logs", "tick"]).lines().count();
    let before = ticks(&c);
    let deadline = std::time::Instant::now() + T;
    while ticks(&c) < before + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "ticker stopped at once"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!c
        .kubectl_ok(&[
            "get",
            "pod",
            "tick",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.running.startedAt}"
        ])
        .is_empty());
    // The node says it is stopping the container, as the kubelet does.
    c.wait_for(
        &[
            "events",
            "--field-selector",
            "involvedObject.name=tick,reason=Killing",
        ],
        "{.items[0].message}",
        "Stopping container main",
        T,
    );
    // ...until a shorter one ends it; kubectl delete waits (watching) until the node stopped
    // the pod and it is gone.
    assert!(c
        .kubectl_ok(&["delete", "pod", "tick", "--grace-period=1", "--timeout=60s"])
        .contains("deleted"));
    let out = c.kubectl(&["get", "pod", "tick"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[test]
fn a_joined_node_gets_pods_and_serves_their_logs() {
    let mut c = Cluster::start(&["--no-node"]);
    c.push_ok("hello:latest", &example("hello", false));
    // With no node, the pod is Pending with a reason.
    c.apply(&pod("early", "hello:latest", "", ""));
    c.wait_for(
        &["pod", "early"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        "Unschedulable",
        T,
    );
    let msg = c.jsonpath(
        &["pod", "early"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
    );
    assert_eq!(msg, "0/0 nodes are available.");

    c.join_node("worker-1");
    c.wait_for(
        &["node", "worker-1"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    // The pending pod is retried once a node appears.
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/early",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(&["pod", "early"], "{.spec.nodeName}"),
        "worker-1"
    );
    assert!(c
        .kubectl_ok(&["logs", "early"])
        .contains("Hello from skiff!"));
    let lease = c.jsonpath(
        &["lease", "worker-1", "-n", "kube-node-lease"],
        "{.spec.holderIdentity}",
    );
    assert_eq!(lease, "worker-1");
    let node = c.jsonpath(
        &["node", "worker-1"],
        "{.status.capacity.pods} {.metadata.labels.kubernetes\\.io/arch}",
    );
    assert_eq!(node, "1000 wasm32");

    // A pod that fits nowhere says why.
    c.apply(&pod(
        "picky",
        "hello:latest",
        "",
        "  nodeSelector:\n    disk: ssd\n",
    ));
    c.wait_for(
        &["pod", "picky"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
        T,
    );
    assert!(c
        .kubectl_ok(&["describe", "pod", "picky"])
        .contains("FailedScheduling"));
}

#[test]
fn a_node_with_a_wrong_token_cannot_join() {
    let c = Cluster::start(&["--no-node"]);
    let token = std::fs::read_to_string(c.data().join("node-token")).unwrap();
    let forged = token.trim().replace("::node:", "::node:x");
    let out = std::process::Command::new(harness::SKIFF)
        .args([
            "node",
            "--server",
            &c.url,
            "--name",
            "intruder",
            "--gateway-port",
            "0",
            "--token",
            &forged,
            "--data-dir",
        ])
        .arg(c.dir.path().join("intruder"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registering the node"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong_ca = format!("K10{}::node:secret", "0".repeat(64));
    let out = std::process::Command::new(harness::SKIFF)
        .args([
            "node",
            "--server",
            &c.url,
            "--name",
            "x",
            "--gateway-port",
            "0",
            "--token",
            &wrong_ca,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the hash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let c = Cluster::start(&["--no-node"]);
    let ca = c.data().join("tls/ca.crt");
    let curl = |auth: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca);
        if let Some(a) = auth {
            cmd.args(["-H", a]);
        }
        let out = cmd
            .arg(format!("{}/api/v1/namespaces/default/pods", c.url))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for auth in [None, Some("Authorization: Bearer wrong")] {
        let body = curl(auth);
        assert!(body.ends_with("401"), "{body}");
        assert!(
            body.contains(r#""kind":"Status""#) && body.contains(r#""reason":"Unauthorized""#),
            "{body}"
        );
    }
    let admin = std::fs::read_to_string(c.data().join("admin-token")).unwrap();
    assert!(curl(Some(&format!("Authorization: Bearer {}", admin.trim()))).ends_with("200"));
    // kubectl with a wrong token prints the familiar message.
    let cfg = std::fs::read_to_string(&c.kubeconfig)
        .unwrap()
        .replace(admin.trim(), "nope");
    let bad = c.dir.path().join("bad-kubeconfig");
    std::fs::write(&bad, cfg).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&bad)
        .args(["get", "pods"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("You must be logged in to the server"));
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut c = Cluster::start(&["--no-node"]);
    let mut manifests = String::new();
    for i in 0..40 {
        manifests.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-{i}\n"
        ));
    }
    c.apply(&manifests);
    c.apply(&pod("keepme", "hello:latest", "", ""));
    let before_rv: u64 = c
        .jsonpath(&["pod", "keepme"], "{.metadata.resourceVersion}")
        .parse()
        .unwrap();
    let uid = c.jsonpath(&["pod", "keepme"], "{.metadata.uid}");
    c.kill9_and_restart(&["--no-node"]);
    let names = c.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    for i in 0..40 {
        assert!(
            names.contains(&format!("namespace/team-{i}\n")),
            "team-{i} lost after kill -9: {names}"
        );
    }
    assert_eq!(c.jsonpath(&["pod", "keepme"], "{.metadata.uid}"), uid);
    // The revision counter never goes backwards.
    c.apply(&pod("after", "hello:latest", "", ""));
    let after_rv: u64 = c
        .jsonpath(&["pod", "after"], "{.metadata.resourceVersion}")
        .parse()
        .unwrap();
    assert!(after_rv > before_rv, "{after_rv} > {before_rv}");
}

#[test]
fn kubectl_watch_output_formats_and_describe() {
    use std::io::{BufRead, BufReader};
    let c = Cluster::start(&[]);
    c.push_ok("hello:latest", &example("hello", false));
    // `kubectl get pods -w` prints rows as the pod moves on (Table watch events).
    let mut watch = harness::Proc(
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .arg("--cache-dir")
            .arg(c.dir.path().join("kube-cache-watch"))
            .args(["get", "pods", "-w"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = watch.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    c.apply(&manifest("hello"));
    let deadline = std::time::Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with("hello ") && line.contains("Completed");
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(_) => panic!("kubectl get pods -w never showed hello Completed; saw {seen:?}"),
        }
    }
    drop(watch);

    let yaml = c.kubectl_ok(&["get", "pods", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List")
            && yaml.contains("name: hello")
            && yaml.contains("phase: Succeeded"),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "pod", "hello", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "Pod");
    assert_eq!(
        json["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let wide = c.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE") && wide.contains("testnode"), "{wide}");
    let nodes = c.kubectl_ok(&["get", "nodes"]);
    assert!(
        nodes.contains("testnode") && nodes.contains("Ready"),
        "{nodes}"
    );
    let describe = c.kubectl_ok(&["describe", "pod", "hello"]);
    let describe = describe
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "Status: Succeeded",
        "Exit Code: 0",
        "Scheduled",
        "Started",
        "default-scheduler",
    ] {
        assert!(
            describe.contains(want),
            "describe lacks {want:?}:\n{describe}"
        );
    }
    let out = c.kubectl(&["get", "pod", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(r#"Error from server (NotFound): pods "nope" not found"#));
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: hello
"#;

#[test]
fn workloads_apply_reapply_label_annotate_scale_and_explain() {
    let c = Cluster::start(&["--no-node"]);
    assert!(c.apply(WEB).contains("deployment.apps/web created"));
    assert!(c.apply(WEB).contains("deployment.apps/web unchanged"));
    let changed = WEB.replace("replicas: 2", "replicas: 3");
    assert!(c.apply(&changed).contains("deployment.apps/web configured"));
    c.kubectl_ok(&["label", "deploy", "web", "tier=front"]);
    c.kubectl_ok(&["annotate", "deploy", "web", "note=hi"]);
    c.kubectl_ok(&["set", "image", "deploy/web", "web=hello:v2"]);
    assert_eq!(
        c.jsonpath(
            &["deploy", "web"],
            "{.spec.replicas} {.metadata.labels.tier} {.metadata.annotations.note} {.spec.template.spec.containers[0].image} {.metadata.generation}"
        ),
        "3 front hi hello:v2 3"
    );
    c.kubectl_ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.spec.replicas}"), "5");
    // Defaults, as Kubernetes fills them in.
    assert_eq!(
        c.jsonpath(
            &["deploy", "web"],
            "{.spec.strategy.rollingUpdate.maxSurge} {.spec.template.spec.restartPolicy}"
        ),
        "25% Always"
    );
    // The selector is immutable, and must match the template.
    let out = c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("field is immutable"),
        "{err}"
    );
    let table = c.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        table.contains("UP-TO-DATE") && table.contains("app=web"),
        "{table}"
    );
    let explain = c.kubectl_ok(&["explain", "pod.spec.containers.image"]);
    assert!(explain.contains("Container image name"), "{explain}");
    let explain = c.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(explain.contains("rollingUpdate"), "{explain}");
    let resources = c.kubectl_ok(&["api-resources"]);
    for r in [
        "deployments",
        "statefulsets",
        "cronjobs",
        "endpointslices",
        "horizontalpodautoscalers",
        "configmaps",
    ] {
        assert!(resources.contains(r), "{r} missing:\n{resources}");
    }
    // exec answers at once with a clear reason.
    let out = c.kubectl(&["exec", "web", "--", "sh"]);
    assert!(!out.status.success());
}

#[test]
fn typed_kubectl_create_commands_send_protobuf_and_work() {
    let c = Cluster::start(&["--no-node"]);
    c.kubectl_ok(&["create", "namespace", "team-a"]);
    c.kubectl_ok(&[
        "-n",
        "team-a",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
    ]);
    c.kubectl_ok(&[
        "-n",
        "team-a",
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=p=hunter2",
    ]);
    c.kubectl_ok(&["-n", "team-a", "create", "serviceaccount", "bot"]);
    c.kubectl_ok(&[
        "-n",
        "team-a",
        "create",
        "service",
        "nodeport",
        "web",
        "--tcp=80:8080",
    ]);
    c.kubectl_ok(&[
        "-n",
        "team-a",
        "create",
        "deployment",
        "web",
        "--image=hello",
        "--replicas=2",
    ]);
    c.kubectl_ok(&["-n", "team-a", "create", "job", "once", "--image=hello"]);
    c.kubectl_ok(&[
        "-n",
        "team-a",
        "create",
        "cronjob",
        "tick",
        "--image=hello",
        "--schedule=*/5 * * * *",
    ]);
    assert_eq!(c.jsonpath(&["-n", "team-a", "cm", "cfg"], "{.data.a}"), "1");
    assert_eq!(
        c.jsonpath(&["-n", "team-a", "secret", "pw"], "{.data.p}"),
        "aHVudGVyMg=="
    );
    let svc = c.jsonpath(
        &["-n", "team-a", "svc", "web"],
        "{.spec.clusterIP} {.spec.ports[0].nodePort}",
    );
    let (ip, port) = svc.split_once(' ').unwrap_or_default();
    assert!(ip.starts_with("10.43."), "{svc}");
    assert!(
        (30000..=32767).contains(&port.parse::<u32>().unwrap_or(0)),
        "{svc}"
    );
    assert_eq!(
        c.jsonpath(
            &["-n", "team-a", "job", "once"],
            "{.spec.template.spec.restartPolicy} {.spec.completions}"
        ),
        "Never 1"
    );
    let table = c.kubectl_ok(&["-n", "team-a", "get", "all"]);
    assert!(
        table.contains("deployment.apps/web") && table.contains("cronjob.batch/tick"),
        "{table}"
    );
}

#[test]
fn deletion_honours_finalizers_propagation_and_namespace_lifecycle() {
    let c = Cluster::start(&["--no-node"]);
    c.kubectl_ok(&["create", "namespace", "lab"]);
    c.apply(&format!("{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: held, namespace: lab, finalizers: [example.com/hold]}}\n", WEB.replacen("name: web\n", "name: web\n  namespace: lab\n", 1)));
    let uid = c.jsonpath(&["-n", "lab", "deploy", "web"], "{.metadata.uid}");
    let owned = |name: &str, uid: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: lab\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}}}]\n")
    };
    c.apply(&owned("dep-a", &uid));
    c.apply(&owned("dep-b", &uid));
    // Orphan: the dependents stay, without the reference.
    c.kubectl_ok(&["-n", "lab", "delete", "deploy", "web", "--cascade=orphan"]);
    assert_eq!(
        c.jsonpath(&["-n", "lab", "cm", "dep-a"], "{.metadata.ownerReferences}"),
        ""
    );
    // Background (the default): dependents of a deleted owner go.
    c.apply(&WEB.replacen("name: web\n", "name: web\n  namespace: lab\n", 1));
    let uid = c.jsonpath(&["-n", "lab", "deploy", "web"], "{.metadata.uid}");
    c.apply(&owned("dep-c", &uid));
    c.kubectl_ok(&["-n", "lab", "delete", "deploy", "web"]);
    c.kubectl_ok(&[
        "-n",
        "lab",
        "wait",
        "--for=delete",
        "cm/dep-c",
        "--timeout=30s",
    ]);
    // A dependent whose owner does not exist is collected as well.
    c.apply(&owned("dep-d", "00000000-0000-0000-0000-000000000000"));
    c.kubectl_ok(&[
        "-n",
        "lab",
        "wait",
        "--for=delete",
        "cm/dep-d",
        "--timeout=30s",
    ]);
    // A finalizer holds an object after delete until it is removed.
    c.kubectl_ok(&["-n", "lab", "delete", "cm", "held", "--wait=false"]);
    assert_ne!(
        c.jsonpath(
            &["-n", "lab", "cm", "held"],
            "{.metadata.deletionTimestamp}"
        ),
        ""
    );
    // The namespace terminates: no new content, then gone once the finalizer is removed.
    c.kubectl_ok(&["delete", "namespace", "lab", "--wait=false"]);
    assert_eq!(c.jsonpath(&["ns", "lab"], "{.status.phase}"), "Terminating");
    let out = c.kubectl(&["-n", "lab", "create", "configmap", "late"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("being terminated"), "{err}");
    c.kubectl_ok(&[
        "-n",
        "lab",
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.kubectl_ok(&["wait", "--for=delete", "namespace/lab", "--timeout=30s"]);
}

#[test]
fn lists_paginate_with_limit_and_continue() {
    let c = Cluster::start(&["--no-node"]);
    // Every namespace gets the cluster CA, as in Kubernetes.
    c.wait_for(
        &["configmap", "kube-root-ca.crt"],
        "{.metadata.name}",
        "kube-root-ca.crt",
        T,
    );
    for i in 0..7 {
        c.kubectl_ok(&[
            "create",
            "configmap",
            &format!("c{i}"),
            "--from-literal=k=v",
        ]);
    }
    // kubectl pages through with limit/continue; every object appears once.
    let out = c.kubectl_ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<&str> = out.lines().filter(|l| l.contains("/c")).collect();
    assert_eq!(names.len(), 7, "{out}");
    let page = c.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=3",
    ]);
    let v: serde_json::Value = serde_json::from_str(&page).expect("json list");
    // Seven, and the namespace's kube-root-ca.crt.
    assert_eq!(v["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["metadata"]["remainingItemCount"], 5);
    let token = v["metadata"]["continue"].as_str().expect("continue token");
    // The rest of the list is the snapshot the first page cut: a later delete and create do
    // not show (as kube-apiserver reads etcd at the first page's revision).
    c.kubectl_ok(&["delete", "configmap", "c6"]);
    c.kubectl_ok(&["create", "configmap", "c7", "--from-literal=k=v"]);
    let rest = c.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=10&continue={token}"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&rest).expect("json list");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(5));
    let names: Vec<&str> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"c6") && !names.contains(&"c7"), "{names:?}");
    assert!(v["metadata"].get("continue").is_none());
}

#[test]
fn server_side_apply_tracks_owners_conflicts_and_removals() {
    let c = Cluster::start(&["--no-node"]);
    let web = WEB.replacen("name: web\n", "name: web\n  labels: {tier: front}\n", 1);
    let path = c.dir.path().join("web.yaml");
    std::fs::write(&path, &web).expect("manifest");
    let file = path.to_str().expect("utf-8 path");
    let out = c.kubectl_ok(&["apply", "--server-side", "-f", file]);
    assert!(out.contains("serverside-applied"), "{out}");
    c.kubectl_ok(&["apply", "--server-side", "-f", file]);
    // Another manager takes replicas; re-applying a different value conflicts.
    c.kubectl_ok(&["scale", "deploy", "web", "--replicas=4"]);
    std::fs::write(
        &path,
        web.replace("replicas: 2", "replicas: 3")
            .replace("  labels: {tier: front}\n", ""),
    )
    .expect("manifest");
    let out = c.kubectl(&["apply", "--server-side", "-f", file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Apply failed with 1 conflict")
            && err.contains(".spec.replicas"),
        "{err}"
    );
    // Forced, the applier wins the field; the label it stopped applying is gone.
    c.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", file]);
    assert_eq!(
        c.jsonpath(
            &["deploy", "web"],
            "{.spec.replicas} {.metadata.labels.tier}"
        ),
        "3 "
    );
    let owners = c.jsonpath(
        &["deploy", "web", "--show-managed-fields"],
        "{.metadata.managedFields[*].manager}",
    );
    assert!(owners.contains("kubectl"), "{owners}");
}
