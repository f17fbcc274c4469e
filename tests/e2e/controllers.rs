//! The controllers end to end with kubectl: a Deployment's rollout (status, history, undo,
//! restart, pause), scaling, ReplicaSet adoption, and cascading deletion.

use crate::harness::{example, Cluster};
use crate::T;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: ticker:v1
";

fn rollout_ok(c: &Cluster) {
    let out = c.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

/// The images of the Deployment's pods that are not being deleted, sorted.
fn images(c: &Cluster) -> Vec<String> {
    let out = c.jsonpath(
        &["pods", "-l", "app=web"],
        "{range .items[*]}{.metadata.deletionTimestamp}/{.spec.containers[0].image}{\"\\n\"}{end}",
    );
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| l.trim_start_matches('/').to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn deployments_roll_out_undo_restart_scale_and_cascade() {
    let c = Cluster::start(&[]);
    for tag in ["v1", "v2"] {
        c.push_ok(&format!("ticker:{tag}"), &example("ticker", false));
    }
    c.apply(DEPLOYMENT);
    rollout_ok(&c);
    assert_eq!(images(&c), vec!["ticker:v1"; 3]);
    let table = c.kubectl_ok(&["get", "deploy", "web"]);
    assert!(table.contains("3/3"), "{table}");

    // A new image rolls out through a second ReplicaSet; the first is scaled to zero and kept.
    c.kubectl_ok(&["set", "image", "deploy/web", "web=ticker:v2"]);
    rollout_ok(&c);
    assert_eq!(images(&c), vec!["ticker:v2"; 3]);
    let sets = c.jsonpath(&["rs", "-l", "app=web"], "{.items[*].spec.replicas}");
    let mut sets: Vec<&str> = sets.split_whitespace().collect();
    sets.sort();
    assert_eq!(sets, vec!["0", "3"]);
    let history = c.kubectl_ok(&["rollout", "history", "deploy/web"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );

    // Undo goes back to v1 (revision 3); restart rolls out new pods of the same template.
    c.kubectl_ok(&["rollout", "undo", "deploy/web"]);
    rollout_ok(&c);
    assert_eq!(images(&c), vec!["ticker:v1"; 3]);
    assert_eq!(
        c.jsonpath(
            &["deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    c.kubectl_ok(&["rollout", "restart", "deploy/web"]);
    rollout_ok(&c);
    let history = c.kubectl_ok(&["rollout", "history", "deploy/web"]);
    assert!(history.contains("4 "), "{history}");

    // A paused Deployment does not roll out until resumed.
    c.kubectl_ok(&["rollout", "pause", "deploy/web"]);
    c.kubectl_ok(&["set", "image", "deploy/web", "web=ticker:v2"]);
    c.wait_for(
        &["deploy", "web"],
        "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        "DeploymentPaused",
        T,
    );
    assert_eq!(images(&c), vec!["ticker:v1"; 3]);
    c.kubectl_ok(&["rollout", "resume", "deploy/web"]);
    rollout_ok(&c);
    assert_eq!(images(&c), vec!["ticker:v2"; 3]);

    // Scale up and down.
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=5"]);
    rollout_ok(&c);
    c.wait_for(&["deploy", "web"], "{.status.readyReplicas}", "5", T);
    c.kubectl_ok(&["scale", "deploy/web", "--replicas=2"]);
    c.wait_for(&["deploy", "web"], "{.status.replicas}", "2", T);
    assert_eq!(images(&c).len(), 2);

    // A ReplicaSet adopts a matching orphan and creates only what is missing.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: solo}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: ticker:v1}]
",
    );
    c.apply(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: solo}
spec:
  replicas: 2
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: ticker:v1}]
",
    );
    c.wait_for(&["rs", "solo"], "{.status.readyReplicas}", "2", T);
    assert_eq!(
        c.jsonpath(&["pod", "stray"], "{.metadata.ownerReferences[0].name}"),
        "solo"
    );
    let solo = c.jsonpath(&["pods", "-l", "app=solo"], "{.items[*].metadata.name}");
    assert_eq!(solo.split_whitespace().count(), 2, "{solo}");
    // A deleted pod is replaced.
    c.kubectl_ok(&["delete", "pod", "stray", "--wait=false"]);
    c.wait_for(&["rs", "solo"], "{.status.readyReplicas}", "2", T);

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    c.kubectl_ok(&["delete", "deploy", "web"]);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "rs",
        "-l",
        "app=web",
        "--timeout=60s",
    ]);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "pods",
        "-l",
        "app=web",
        "--timeout=60s",
    ]);
}

const JOBS: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: hello, image: hello:latest}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: show, image: envprint:latest, args: [show]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: crash, image: crash:latest}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: short-lived}
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: hello, image: hello:latest}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: every-minute}
spec:
  schedule: \"* * * * *\"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: hello, image: hello:latest}]
";

#[test]
fn jobs_complete_count_indexes_back_off_and_expire() {
    let c = Cluster::start(&[]);
    for m in ["hello", "envprint", "crash"] {
        c.push_ok(&format!("{m}:latest"), &example(m, false));
    }
    c.apply(JOBS);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "job/indexed",
        "--timeout=60s",
    ]);
    assert_eq!(c.jsonpath(&["job", "three"], "{.status.succeeded}"), "3");
    let pods = c.jsonpath(
        &["pods", "-l", "batch.kubernetes.io/job-name=three"],
        "{.items[*].status.phase}",
    );
    assert_eq!(
        pods.split_whitespace().collect::<Vec<_>>(),
        vec!["Succeeded"; 3]
    );
    assert_eq!(
        c.jsonpath(&["job", "indexed"], "{.status.completedIndexes}"),
        "0-2"
    );
    let logs = c.kubectl_ok(&["logs", "-l", "batch.kubernetes.io/job-name=indexed"]);
    for i in 0..3 {
        assert!(
            logs.contains(&format!("env JOB_COMPLETION_INDEX={i}")),
            "{logs}"
        );
    }
    let table = c.kubectl_ok(&["get", "job", "three"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    // Two failures (the second after the 10 s back-off) exceed backoffLimit 1.
    c.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(
            &["job", "failing"],
            "{.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "BackoffLimitExceeded"
    );
    assert_eq!(c.jsonpath(&["job", "failing"], "{.status.failed}"), "2");

    // ttlSecondsAfterFinished: 0 deletes the finished Job and its pods.
    c.kubectl_ok(&["wait", "--for=delete", "job/short-lived", "--timeout=60s"]);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=short-lived",
        "--timeout=60s",
    ]);

    // The CronJob fires at the next minute and its Job completes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while c
        .jsonpath(&["cronjob", "every-minute"], "{.status.lastSuccessfulTime}")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CronJob never ran a Job to completion"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let owned = c.jsonpath(
        &["jobs"],
        "{range .items[?(@.metadata.ownerReferences[0].kind==\"CronJob\")]}{.metadata.name}{\"\\n\"}{end}",
    );
    assert!(owned.starts_with("every-minute-"), "{owned}");
    let table = c.kubectl_ok(&["get", "cronjob", "every-minute"]);
    assert!(table.contains("* * * * *"), "{table}");
}

/// A node's Ready condition, for `wait_for`.
const NODE_READY: &str = "{.status.conditions[?(@.type==\"Ready\")].status}";

#[test]
fn a_dead_nodes_pods_are_replaced_elsewhere_and_stopped_when_it_returns() {
    // The grace period must outlast the agents' Lease renewal interval (5 s), or the live node
    // is found silent between two renewals.
    let mut c = Cluster::start(&[
        "--node-monitor-grace-period",
        "7s",
        "--default-unreachable-toleration-seconds",
        "2",
    ]);
    c.push_ok("ticker:v1", &example("ticker", false));
    c.join_node("worker");
    // A poll, not `kubectl wait`, which fails at once while the node has not registered yet.
    c.wait_for(&["node", "worker"], NODE_READY, "True", T);
    // Two replicas that each request half a core land on different nodes (least allocated).
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 2
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: ticker:v1
        resources: {requests: {cpu: 500m}}
",
    );
    c.kubectl_ok(&["rollout", "status", "deploy/spread", "--timeout=60s"]);
    let on_worker = c.jsonpath(
        &[
            "pods",
            "-l",
            "app=spread",
            "--field-selector",
            "spec.nodeName=worker",
        ],
        "{.items[*].metadata.name}",
    );
    assert!(!on_worker.is_empty(), "no replica on the worker");
    // New pods tolerate an unreachable node for the configured seconds.
    assert_eq!(
        c.jsonpath(
            &["pod", &on_worker],
            "{.spec.tolerations[?(@.key==\"node.kubernetes.io/unreachable\")].tolerationSeconds}"
        ),
        "2"
    );

    // The worker dies: it becomes Unknown, tainted, and its pod is replaced on the other node.
    drop(c.extra.pop());
    c.wait_for(
        &["node", "worker"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "Unknown",
        T,
    );
    assert!(c
        .jsonpath(&["node", "worker"], "{.spec.taints[*].key}")
        .contains("node.kubernetes.io/unreachable"));
    let deadline = std::time::Instant::now() + T;
    loop {
        let live = c.jsonpath(
            &["pods", "-l", "app=spread"],
            "{range .items[*]}{.metadata.deletionTimestamp}/{.spec.nodeName}/{.status.phase}{\"\\n\"}{end}",
        );
        let running: Vec<&str> = live
            .lines()
            .filter(|l| l.starts_with('/') && l.ends_with("/Running"))
            .collect();
        if running.len() == 2 && running.iter().all(|l| l.contains("/testnode/")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not replaced: {live}\n{}\n{}",
            c.kubectl_ok(&["describe", "pods", "-l", "app=spread"]),
            c.server_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Nothing new is scheduled onto it, and the reason says why.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: only-worker}
spec:
  nodeSelector: {kubernetes.io/hostname: worker}
  containers: [{name: c, image: ticker:v1}]
",
    );
    c.wait_for(
        &["pod", "only-worker"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        "Unschedulable",
        T,
    );
    let why = c.jsonpath(
        &["pod", "only-worker"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
    );
    assert!(
        why.contains("1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }"),
        "{why}"
    );

    // When it comes back, it stops the pod that was replaced and is schedulable again.
    c.join_node("worker");
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        &format!("pod/{on_worker}"),
        "--timeout=60s",
    ]);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "node/worker",
        "--timeout=60s",
    ]);
    c.wait_for(&["pod", "only-worker"], "{.status.phase}", "Running", T);
}

#[test]
fn a_daemonset_runs_one_pod_per_node_and_rolls_out_updates() {
    let mut c = Cluster::start(&[]);
    for tag in ["v1", "v2"] {
        c.push_ok(&format!("ticker:{tag}"), &example("ticker", false));
    }
    for n in ["node-b", "node-c"] {
        c.join_node(n);
    }
    for n in ["node-b", "node-c"] {
        c.wait_for(&["node", n], NODE_READY, "True", T);
    }
    c.apply(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: ticker:v1}]
",
    );
    c.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let nodes = |c: &Cluster| {
        let out = c.jsonpath(
            &["pods", "-l", "app=agent"],
            "{range .items[*]}{.metadata.deletionTimestamp}/{.spec.nodeName}/{.spec.containers[0].image}{\"\\n\"}{end}",
        );
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(|l| l[1..].to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        nodes(&c),
        vec!["node-b/ticker:v1", "node-c/ticker:v1", "testnode/ticker:v1"]
    );
    assert_eq!(c.jsonpath(&["ds", "agent"], "{.status.numberReady}"), "3");
    c.kubectl_ok(&["set", "image", "ds/agent", "c=ticker:v2"]);
    c.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    c.wait_for(&["ds", "agent"], "{.status.updatedNumberScheduled}", "3", T);
    let deadline = std::time::Instant::now() + T;
    while nodes(&c) != vec!["node-b/ticker:v2", "node-c/ticker:v2", "testnode/ticker:v2"] {
        assert!(std::time::Instant::now() < deadline, "{:?}", nodes(&c));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Each template is a ControllerRevision: kubectl shows the history and rolls back.
    c.wait_for(
        &["controllerrevisions", "-l", "app=agent"],
        "{.items[*].revision}",
        "1 2",
        T,
    );
    let history = c.kubectl_ok(&["rollout", "history", "ds/agent"]);
    assert!(
        history.contains("REVISION") && history.contains("\n2 "),
        "{history}"
    );
    c.kubectl_ok(&["rollout", "undo", "ds/agent"]);
    c.wait_for(
        &["ds", "agent"],
        "{.spec.template.spec.containers[0].image}",
        "ticker:v1",
        T,
    );
    c.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    // The old template is the newest revision again.
    c.wait_for(
        &[
            "controllerrevisions",
            "-l",
            "app=agent",
            "--sort-by=.revision",
        ],
        "{.items[*].revision}",
        "2 3",
        T,
    );
}

#[test]
fn a_statefulset_starts_in_order_with_stable_names_and_storage() {
    let c = Cluster::start(&[]);
    c.push_ok("ticker:v1", &example("ticker", false));
    c.push_ok("envprint:latest", &example("envprint", false));
    // Each pod shows what its claim directory held at start, then leaves a note in it.
    c.apply(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      terminationGracePeriodSeconds: 1
      initContainers:
      - {name: show, image: envprint:latest, args: [show, /data], volumeMounts: [{name: data, mountPath: /data}]}
      - name: note
        image: envprint:latest
        args: [write, /data/note, \"written by $(POD_NAME)\"]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        volumeMounts: [{name: data, mountPath: /data}]
      containers:
      - {name: c, image: ticker:v1}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
",
    );
    c.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    c.wait_for(&["sts", "web"], "{.status.readyReplicas}", "3", T);
    // Ordered: each pod was created once the one before was Ready.
    let ready_at = |pod: &str| {
        c.jsonpath(
            &["pod", pod],
            "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        )
    };
    let created = |pod: &str| c.jsonpath(&["pod", pod], "{.metadata.creationTimestamp}");
    assert!(created("web-1") >= ready_at("web-0"));
    assert!(created("web-2") >= ready_at("web-1"));
    assert_eq!(c.jsonpath(&["pod", "web-1"], "{.spec.hostname}"), "web-1");
    // Each member has its claim, bound by the local-path provisioner to a volume on its node:
    // the node's own claim directory.
    c.wait_for(
        &["pvc", "data-web-1"],
        "{.status.phase} {.spec.storageClassName}",
        "Bound local-path",
        T,
    );
    let pv = c.jsonpath(&["pvc", "data-web-1"], "{.spec.volumeName}");
    assert_eq!(
        c.jsonpath(
            &["pv", &pv],
            "{.spec.claimRef.name} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]} {.status.phase}"
        ),
        "data-web-1 testnode Bound"
    );
    assert!(c
        .jsonpath(&["pv", &pv], "{.spec.local.path}")
        .ends_with("/claims/default/data-web-1"));
    // A new web-1 finds what the old one wrote in its claim.
    c.kubectl_ok(&["delete", "pod", "web-1"]);
    c.wait_for(&["pod", "web-1"], "{.status.phase}", "Running", T);
    let shown = c.kubectl_ok(&["logs", "web-1", "-c", "show"]);
    assert!(shown.contains("/data/note = written by web-1"), "{shown}");
    // Scale down removes the highest ordinals.
    c.kubectl_ok(&["scale", "sts/web", "--replicas=1"]);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "pod/web-2",
        "pod/web-1",
        "--timeout=60s",
    ]);
    assert_eq!(c.jsonpath(&["pod", "web-0"], "{.status.phase}"), "Running");
}

#[test]
fn the_scheduler_and_deployment_benchmarks_run_on_hollow_nodes() {
    let c = Cluster::start(&[]);
    let bench = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(crate::harness::SKIFF)
            .arg("bench")
            .args(args)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .output()
            .expect("skiff bench runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "bench {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    let lines = bench(&["scheduler", "--nodes", "20", "--pods", "200"]);
    let names: Vec<&str> = lines.iter().filter_map(|l| l["bench"].as_str()).collect();
    for want in [
        "scheduler-decisions-in-process",
        "scheduler-pods-scheduled-and-bound",
        "scheduler-pods-running",
        "scheduler-create-to-bound",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let bound = lines
        .iter()
        .find(|l| l["bench"] == "scheduler-create-to-bound")
        .expect("create-to-bound");
    assert_eq!(bound["n"], 200, "{bound}");
    let lines = bench(&[
        "deployments",
        "--nodes",
        "3",
        "--replicas",
        "30",
        "--runs",
        "1",
    ]);
    let available = lines
        .iter()
        .find(|l| l["bench"] == "deployment-30-available")
        .expect("deployment-30-available");
    assert_eq!(available["n"], 1, "{available}");
    // The hollow nodes are gone afterwards and no real pod ever went to them.
    let nodes = c.jsonpath(&["nodes"], "{.items[*].metadata.name}");
    assert_eq!(nodes, "testnode", "hollow nodes left behind: {nodes}");
}

#[test]
fn services_get_endpoints_and_endpointslices_of_their_ready_pods() {
    let c = Cluster::start(&[]);
    c.push_ok("ticker:latest", &example("ticker", false));
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: api
        image: ticker:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: web, port: 80, targetPort: http}]
",
    );
    c.kubectl_ok(&["rollout", "status", "deploy/api", "--timeout=60s"]);
    // Pods report their node's address as their IP.
    let ips = c.jsonpath(&["pods", "-l", "app=api"], "{.items[*].status.podIP}");
    assert_eq!(ips, "127.0.0.1 127.0.0.1");
    let wide = c.kubectl_ok(&["get", "pods", "-l", "app=api", "-o", "wide"]);
    assert!(wide.contains("127.0.0.1"), "{wide}");
    // The named targetPort resolves to the container port; both pods are ready addresses.
    c.wait_for(
        &["endpoints", "api"],
        "{.subsets[0].addresses[*].ip}:{.subsets[0].ports[0].port}",
        "127.0.0.1 127.0.0.1:8080",
        T,
    );
    let table = c.kubectl_ok(&["get", "endpoints", "api"]);
    assert!(table.contains("127.0.0.1:8080,127.0.0.1:8080"), "{table}");
    let slices = &["endpointslices", "-l", "kubernetes.io/service-name=api"];
    c.wait_for(
        slices,
        "{.items[0].endpoints[*].conditions.ready}",
        "true true",
        T,
    );
    assert_eq!(
        c.jsonpath(
            slices,
            "{.items[0].ports[0].name}/{.items[0].ports[0].port}"
        ),
        "web/8080"
    );
    // Scaled to zero: no addresses, one empty slice.
    c.kubectl_ok(&["scale", "deploy/api", "--replicas=0"]);
    c.wait_for(&["endpoints", "api"], "{.subsets}", "", T);
    c.wait_for(slices, "{.items[0].endpoints}", "[]", T);
    // The Service goes, and its endpoints with it; the API server's own stay.
    c.kubectl_ok(&["delete", "service", "api"]);
    c.wait_for(&["endpoints"], "{.items[*].metadata.name}", "kubernetes", T);
    c.wait_for(
        &["endpointslices"],
        "{.items[*].metadata.name}",
        "kubernetes",
        T,
    );
}

#[test]
fn a_control_plane_that_was_down_evicts_nothing_when_it_returns() {
    let args = [
        "--node-monitor-grace-period",
        "6s",
        "--default-unreachable-toleration-seconds",
        "1",
    ];
    let mut c = Cluster::start(&args);
    c.push_ok("ticker:latest", &example("ticker", false));
    c.apply(
        &crate::harness::pod("keep", "ticker:latest", "", "")
            .replace("restartPolicy: Never", "restartPolicy: Always"),
    );
    c.wait_for(&["pod", "keep"], "{.status.phase}", "Running", T);
    let uid = c.jsonpath(&["pod", "keep"], "{.metadata.uid}");
    // The server (control plane and embedded node) is down for longer than the grace period:
    // every Lease is old when it starts again, and the node has not renewed yet.
    c.kill9_and_restart_after(std::time::Duration::from_secs(8), &args);
    c.wait_for(&["node", "testnode"], NODE_READY, "True", T);
    // For longer than the grace period and the toleration: the pod stays, and so does the node.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(9);
    while std::time::Instant::now() < until {
        let now = c.jsonpath(
            &["pod", "keep"],
            "{.metadata.uid}/{.metadata.deletionTimestamp}",
        );
        assert_eq!(
            now,
            format!("{uid}/"),
            "the pod was evicted\n{}",
            c.server_log()
        );
        let taints = c.jsonpath(&["node", "testnode"], "{.spec.taints[*].key}");
        assert!(
            !taints.contains("unreachable"),
            "the live node was tainted: {taints}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    c.wait_for(&["pod", "keep"], "{.status.phase}", "Running", T);
}
