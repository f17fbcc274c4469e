//! The node runtime end to end: the sandbox (env sources, volumes, no escapes, hostPath
//! refused), init containers, memory and CPU limits, pod-level failures, agent restarts.

use std::time::Duration;

use crate::harness::{eventually, example, pod, Cluster};
use crate::{manifest, T};

fn push_node_examples(c: &Cluster) {
    for m in ["envprint", "memhog", "spinner", "ticker", "hello"] {
        c.push_ok(&format!("{m}:latest"), &example(m, false));
    }
}

fn wait_phase(c: &Cluster, pod: &str, phase: &str) {
    c.kubectl_ok(&[
        "wait",
        &format!("--for=jsonpath={{.status.phase}}={phase}"),
        &format!("pod/{pod}"),
        "--timeout=60s",
    ]);
}

#[test]
fn the_sandbox_shows_env_sources_and_volumes_and_nothing_else() {
    let c = Cluster::start(&[]);
    push_node_examples(&c);
    c.apply(&manifest("sandbox"));
    c.apply(&manifest("init-pair"));
    wait_phase(&c, "sandbox", "Succeeded");
    let logs = c.kubectl_ok(&["logs", "sandbox"]);
    for want in [
        "env GREETING=hello from a configmap",
        "env PASSWORD=not-a-real-password",
        "env POD_NAME=sandbox",
        "env MEMORY_LIMIT_MI=64",
        "env MESSAGE=sandbox says hello from a configmap",
        "env CFG_mode=demo",
        "/etc/config/greeting.txt = hello from a configmap",
        "/etc/secret/password = not-a-real-password",
        "/etc/podinfo/labels = app=\"sandbox\"",
        "/etc/podinfo/name = sandbox",
        "/etc/config is read-only",
        "/scratch is writable",
        "no escape from /etc/config",
        "no escape from /scratch",
        "no host filesystem",
    ] {
        assert!(logs.contains(want), "{want:?} missing from:\n{logs}");
    }
    assert!(!logs.contains("ESCAPED"), "{logs}");
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("env HOME=") || l.starts_with("env PATH=")),
        "the host environment must not leak: {logs}"
    );

    // Init containers run first and share the emptyDir.
    wait_phase(&c, "init-pair", "Succeeded");
    assert_eq!(
        c.kubectl_ok(&["logs", "init-pair", "-c", "reader"]).trim(),
        "written by the init container"
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "init-pair"],
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );

    // A sidecar starts first, runs beside the app container and is stopped after it; the pod
    // completes by its app container.
    c.apply(&manifest("sidecar"));
    wait_phase(&c, "with-sidecar", "Succeeded");
    let at = |path: &str| c.jsonpath(&["pod", "with-sidecar"], path);
    assert_eq!(
        at("{.status.containerStatuses[0].state.terminated.reason}"),
        "Completed"
    );
    assert!(c
        .kubectl_ok(&["logs", "with-sidecar", "-c", "work"])
        .contains("tick 30"));
    assert!(c
        .kubectl_ok(&["logs", "with-sidecar", "-c", "shipper"])
        .contains("tick 1"));
    let sidecar_started = at("{.status.initContainerStatuses[0].state.terminated.startedAt}");
    let work_started = at("{.status.containerStatuses[0].state.terminated.startedAt}");
    assert!(
        !sidecar_started.is_empty() && sidecar_started <= work_started,
        "sidecar started {sidecar_started:?}, app container {work_started:?}"
    );
    let sidecar_finished = at("{.status.initContainerStatuses[0].state.terminated.finishedAt}");
    let work_finished = at("{.status.containerStatuses[0].state.terminated.finishedAt}");
    assert!(
        sidecar_finished >= work_finished,
        "sidecar stopped {sidecar_finished:?}, before the app container {work_finished:?}"
    );
    // A restartPolicy on an app container is refused, as Kubernetes does.
    let bad = pod(
        "bad-policy",
        "hello:latest",
        "    restartPolicy: Always\n",
        "",
    );
    let file = c.data().join("bad-policy.yaml");
    std::fs::write(&file, bad).expect("write manifest");
    let out = c.kubectl(&["apply", "-f", file.to_str().expect("utf-8 path")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A failing init container keeps the app container from starting; the pod fails.
    let m = pod(
        "init-fails",
        "envprint:latest",
        "    args: [\"show\"]\n",
        "  initContainers:\n  - name: first\n    image: envprint:latest\n    args: [\"cat\", \"/nowhere\"]\n",
    );
    c.apply(&m);
    wait_phase(&c, "init-fails", "Failed");
    assert_eq!(
        c.jsonpath(
            &["pod", "init-fails"],
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "PodInitializing"
    );

    // Missing sources and refused hostPaths are explained, never silently dropped.
    let m = pod(
        "no-key",
        "envprint:latest",
        "    env:\n    - name: X\n      valueFrom:\n        configMapKeyRef: {name: sandbox-config, key: nope}\n",
        "",
    );
    c.apply(&m);
    c.wait_for(
        &["pod", "no-key"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
        T,
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "no-key"],
            "{.status.containerStatuses[0].state.waiting.message}"
        ),
        "couldn't find key nope in ConfigMap default/sandbox-config"
    );
    let m = pod(
        "host",
        "envprint:latest",
        "    volumeMounts: [{name: h, mountPath: /h}]\n",
        "  volumes: [{name: h, hostPath: {path: /etc}}]\n",
    );
    c.apply(&m);
    let deadline = std::time::Instant::now() + T;
    loop {
        let events = c.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=host",
        ]);
        if events.contains("FailedMount") && events.contains("hostPath \"/etc\" is not allowed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no FailedMount event: {events}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.jsonpath(&["pod", "host"], "{.status.phase}"), "Pending");
}

#[test]
fn memory_and_cpu_limits_hold_and_restarts_back_off() {
    let c = Cluster::start(&[]);
    push_node_examples(&c);
    c.apply(&manifest("memhog"));
    c.wait_for(
        &["pod", "memhog"],
        "{.status.containerStatuses[0].lastState.terminated.reason}",
        "OOMKilled",
        T,
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "memhog"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "137"
    );
    c.wait_for(
        &["pod", "memhog"],
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CrashLoopBackOff",
        T,
    );
    let table = c.kubectl_ok(&["get", "pod", "memhog"]);
    assert!(
        table.contains("CrashLoopBackOff") || table.contains("OOMKilled"),
        "{table}"
    );

    // Two spinners (one limited to 100m, one unlimited) do not keep another pod from running
    // or the node from renewing its Lease.
    c.apply(&manifest("spinner"));
    let m = pod(
        "spinner-free",
        "spinner:latest",
        "",
        "  terminationGracePeriodSeconds: 0\n",
    )
    .replace("restartPolicy: Never", "restartPolicy: Always");
    c.apply(&m);
    wait_phase(&c, "spinner", "Running");
    wait_phase(&c, "spinner-free", "Running");
    let lease = |c: &Cluster| {
        c.jsonpath(
            &["leases", "-n", "kube-node-lease"],
            "{.items[0].spec.renewTime}",
        )
    };
    let before = lease(&c);
    c.apply(&manifest("hello"));
    wait_phase(&c, "hello", "Succeeded");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lease(&c) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the node stopped renewing its lease while pods spin"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs = c.kubectl_ok(&["logs", "spinner", "--tail=1"]);
    assert!(logs.contains("spinning"), "{logs}");

    // The node's /metrics (HTTPS; whoever RBAC lets get `nodes/metrics`, here the admin)
    // counts CPU time per container; the limited spinner used far less than the unlimited one.
    let node = c.jsonpath(&["nodes"], "{.items[0].metadata.name}");
    let admin = c.admin_token();
    let metrics = || {
        let (code, body) = c.node_get(&node, "/metrics", Some(&admin));
        assert_eq!(code, 200, "{body}");
        body
    };
    let cpu = |text: &str, pod: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("skiff_container_cpu_seconds_total")
                    && l.contains(&format!("pod=\"{pod}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no cpu line for {pod}:\n{text}"))
    };
    let text = metrics();
    assert!(text.contains("skiff_node_resident_memory_bytes"), "{text}");
    assert!(
        text.contains("skiff_container_restarts_total{namespace=\"default\",pod=\"memhog\",container=\"memhog\"}"),
        "{text}"
    );
    assert!(
        text.contains("skiff_container_instances{namespace=\"default\",pod=\"spinner\",container=\"spinner\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("skiff_container_memory_bytes")
                && l.contains("pod=\"spinner\"")
                && !l.ends_with(" 0")),
        "{text}"
    );
    let (limited, free) = (cpu(&text, "spinner"), cpu(&text, "spinner-free"));
    assert!(
        free > 2.0 * limited,
        "limits.cpu 100m should hold the spinner well below an unlimited one: {limited} vs {free}"
    );
}

#[test]
fn deadlines_and_empty_dir_limits_fail_the_pod_and_agent_restarts_resume_pods() {
    let reserved = ["--reserved-cpu", "500m", "--reserved-memory", "256Mi"];
    let mut c = Cluster::start(&reserved);
    push_node_examples(&c);
    // Allocatable is capacity minus what is reserved.
    c.wait_for(
        &["nodes"],
        "{.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    let cpu = |field: &str| -> i64 {
        let q = c.jsonpath(&["nodes"], &format!("{{.items[0].status.{field}.cpu}}"));
        match q.strip_suffix('m') {
            Some(m) => m.parse().expect("millicores"),
            None => q.parse::<i64>().expect("cores") * 1000,
        }
    };
    assert_eq!(cpu("capacity") - cpu("allocatable"), 500);
    let m = pod(
        "deadline",
        "ticker:latest",
        "",
        "  activeDeadlineSeconds: 2\n",
    );
    c.apply(&m);
    wait_phase(&c, "deadline", "Failed");
    assert_eq!(
        c.jsonpath(&["pod", "deadline"], "{.status.reason}"),
        "DeadlineExceeded"
    );

    let m = pod(
        "filler",
        "envprint:latest",
        "    args: [\"fill\", \"/scratch\", \"3\"]\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
        "  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]\n",
    );
    c.apply(&m);
    wait_phase(&c, "filler", "Failed");
    assert_eq!(
        c.jsonpath(&["pod", "filler"], "{.status.reason}"),
        "Evicted"
    );
    let msg = c.jsonpath(&["pod", "filler"], "{.status.message}");
    assert!(msg.contains("exceeds the limit"), "{msg}");

    // A deleted pod's directory (its logs and emptyDir) goes with it, as the kubelet removes it.
    let pods_root = c.data().join("node").join("pods");
    let uid = c.jsonpath(&["pod", "filler"], "{.metadata.uid}");
    let filler_dir = pods_root.join(format!("default_filler_{uid}"));
    assert!(
        filler_dir.join("volumes").join("scratch").is_dir(),
        "{} should hold the pod's emptyDir",
        filler_dir.display()
    );
    c.kubectl_ok(&["delete", "pod", "filler", "--wait=true"]);
    eventually("the deleted pod's directory to be removed", T, || {
        (!filler_dir.exists()).then_some(())
    });
    // One left by a pod deleted while the agent was down is removed when it starts again.
    let ghost = pods_root.join("default_ghost_00000000-0000-0000-0000-000000000000");
    std::fs::create_dir_all(ghost.join("c")).expect("make a stale pod directory");
    std::fs::write(ghost.join("c").join("0.log"), "old\n").expect("write a stale log");

    // A running pod runs again after the agent (here: the whole server) is killed.
    let m = pod("resumes", "ticker:latest", "", "")
        .replace("restartPolicy: Never", "restartPolicy: Always");
    c.apply(&m);
    wait_phase(&c, "resumes", "Running");
    c.kill9_and_restart(&reserved);
    c.wait_for(
        &["pod", "resumes"],
        "{.status.containerStatuses[0].restartCount}",
        "1",
        T,
    );
    wait_phase(&c, "resumes", "Running");
    eventually("the stale pod directory to be removed", T, || {
        (!ghost.exists()).then_some(())
    });
    let resumes_uid = c.jsonpath(&["pod", "resumes"], "{.metadata.uid}");
    assert!(
        pods_root
            .join(format!("default_resumes_{resumes_uid}"))
            .is_dir(),
        "a running pod keeps its directory across agent restarts"
    );
}

#[test]
fn logs_follow_a_running_container_across_rotations() {
    let c = Cluster::start(&["--container-log-max-size", "64Ki"]);
    c.push_ok("ticker:latest", &example("ticker", false));
    // About 200 KiB of log in 4-8 s: the file rotates a few times while kubectl follows it.
    c.apply(&pod(
        "chatty",
        "ticker:latest",
        "    env: [{name: TICK_MS, value: \"1\"}, {name: TICKS, value: \"4000\"}]\n",
        "",
    ));
    wait_phase(&c, "chatty", "Running");
    // `kubectl logs -f` ends when the container does.
    let followed = c.kubectl_ok(&["logs", "-f", "chatty"]);
    let ticks: Vec<u64> = followed
        .lines()
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a tick line: {l:?}"))
        })
        .collect();
    assert_eq!(ticks.last(), Some(&4000), "follow stopped early");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "follow lost, repeated or reordered lines across a rotation"
    );
    assert!(
        ticks.len() > 3000,
        "follow started too late to see a rotation: {} lines",
        ticks.len()
    );
    // Without -f, kubectl logs shows the current file only: the last lines, never all 4000.
    let current = c.kubectl_ok(&["logs", "chatty"]);
    assert!(current.ends_with("tick 4000\n"), "{current}");
    assert!(current.lines().count() < 4000);
}
