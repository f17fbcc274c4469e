//! A cluster on etcd (`--datastore-endpoint`): Debian's etcd-server on loopback ports, the same
//! workloads and kubectl as on SQLite, and the state outliving the server that wrote it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{example, Cluster};
use crate::T;

/// An etcd member on free loopback ports, killed when dropped.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "e2e", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("e2e={peer_url}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (scripts/setup.sh installs Debian's etcd-server)");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            let ok = Command::new("curl")
                .args(["-sf", &format!("{}/health", etcd.url)])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd at {} never became healthy", etcd.url);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_cluster_runs_on_etcd() {
    let etcd = Etcd::start();
    let args = [
        "--datastore-endpoint",
        etcd.url.as_str(),
        "--datastore-prefix",
        "/e2e",
    ];
    let mut c = Cluster::start(&args);
    c.push_ok("hello:latest", &example("hello", false));
    c.push_ok("ticker:latest", &example("ticker", false));
    c.apply(&crate::manifest("hello"));
    c.apply(&crate::manifest("ticker-deployment"));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/hello",
        "--timeout=60s",
    ]);
    let logs = c.kubectl_ok(&["logs", "hello"]);
    assert!(logs.contains("Hello from skiff!"), "{logs}");
    c.kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=60s"]);
    c.kubectl_ok(&["scale", "deployment/ticker", "--replicas=3"]);
    c.kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=60s"]);
    // Nothing of the cluster is in SQLite.
    assert!(!c.data().join("state.db").exists());
    let uid = c.jsonpath(&["deployment", "ticker"], "{.metadata.uid}");

    // The state is etcd's: a new server process finds it all.
    c.kill9_and_restart(&args);
    assert_eq!(
        c.jsonpath(
            &["deployment", "ticker"],
            "{.metadata.uid} {.spec.replicas}"
        ),
        format!("{uid} 3")
    );
    c.kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=60s"]);
    // Deleting the Deployment takes its pods with it (the garbage collector's watch of all).
    c.kubectl_ok(&["delete", "deployment", "ticker"]);
    c.kubectl_ok(&[
        "wait",
        "--for=delete",
        "pods",
        "-l",
        "app=ticker",
        "--timeout=60s",
    ]);
    assert_eq!(
        c.jsonpath(&["pod", "hello"], "{.status.phase}"),
        "Succeeded"
    );
}

/// Another API server of `first`'s cluster: started from its secrets (CA and key, the
/// service-account key, the tokens; README "Going HA") in a data dir of its own.
fn second_server(first: &Cluster, args: &[&str]) -> Cluster {
    let secrets = first.data();
    Cluster::start_prepared(
        |data| {
            for f in ["admin-token", "node-token"] {
                std::fs::copy(secrets.join(f), data.join(f)).expect("copy a token");
            }
            std::fs::create_dir_all(data.join("tls")).expect("tls dir");
            for f in ["ca.crt", "ca.key", "service-account.key"] {
                std::fs::copy(secrets.join("tls").join(f), data.join("tls").join(f))
                    .expect("copy a key");
            }
        },
        args,
    )
}

/// The holder of a leader Lease in kube-system.
fn holder(c: &Cluster, lease: &str) -> String {
    c.jsonpath(
        &["lease", lease, "-n", "kube-system"],
        "{.spec.holderIdentity}",
    )
}

/// Two API servers on one etcd serve one cluster: a write through one is read and watched
/// through the other; the scheduler and the controllers run on one of them (leader Leases);
/// when the leader dies, the other takes over and the work goes on.
#[test]
fn two_servers_share_one_cluster_and_hand_over_leadership() {
    let etcd = Etcd::start();
    let args = [
        "--datastore-endpoint",
        etcd.url.as_str(),
        "--datastore-prefix",
        "/ha",
    ];
    let first = Cluster::start(&args);
    first.push_ok("ticker:latest", &example("ticker", false));
    // The second server starts from the first's secrets (CA, keys, tokens) and its own dir;
    // it runs no node of its own.
    let second_args = [args.as_slice(), &["--no-node"]].concat();
    let second = second_server(&first, &second_args);
    // One cluster: what one server writes the other reads.
    first.kubectl_ok(&["create", "configmap", "shared", "--from-literal=a=b"]);
    assert_eq!(second.jsonpath(&["configmap", "shared"], "{.data.a}"), "b");
    // Leaders: the first server (it started first) holds both Leases.
    let leader = holder(&first, "kube-controller-manager");
    assert!(!leader.is_empty());
    assert_eq!(holder(&second, "kube-scheduler"), leader);
    // Work through the second server is done by the first's controllers and scheduler, on the
    // first's node.
    second.apply(&crate::manifest("ticker-deployment"));
    second.kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=60s"]);
    // Done once: two replicas, not one set per server.
    let pods = second.jsonpath(&["pods", "-l", "app=ticker"], "{.items[*].metadata.name}");
    assert_eq!(pods.split_whitespace().count(), 2, "{pods}");

    // The leader dies; the second server takes over within the Lease duration (15 s), and
    // its controllers act: the Deployment scaled through it gets its pods (scheduled on the
    // dead server's node, which is gone with it: they stay Pending, but they exist).
    let mut first = first;
    first.kill9();
    crate::harness::eventually("the second server leads", Duration::from_secs(40), || {
        let h = holder(&second, "kube-controller-manager");
        (h != leader && !h.is_empty()).then_some(())
    });
    second.kubectl_ok(&["scale", "deployment/ticker", "--replicas=3"]);
    second.wait_for(
        &["deployment", "ticker"],
        "{.status.replicas}",
        "3",
        Duration::from_secs(60),
    );
    assert_ne!(
        holder(&second, "kube-scheduler"),
        "",
        "the scheduler Lease is held"
    );
}

/// A node given several servers moves to a live one when its server dies: its pods keep
/// running untouched, it stays Ready, and it takes new pods through the other server.
#[test]
fn a_node_moves_to_another_server_when_its_server_dies() {
    let etcd = Etcd::start();
    let args = [
        "--datastore-endpoint",
        etcd.url.as_str(),
        "--datastore-prefix",
        "/failover",
        "--no-node",
    ];
    let mut first = Cluster::start(&args);
    let second = second_server(&first, &args);
    // The built-in module store keeps blobs on each server's disk: push to both.
    first.push_ok("ticker:latest", &example("ticker", false));
    second.push_ok("ticker:latest", &example("ticker", false));
    let servers = format!("{},{}", first.url, second.url);
    first.join_node_to("worker", &servers);
    let ready = |c: &Cluster| {
        c.wait_for(
            &["node", "worker"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
            "True",
            T,
        )
    };
    ready(&first);
    first.apply(&crate::manifest("ticker-deployment"));
    first.kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=60s"]);
    let pods = |c: &Cluster| {
        c.jsonpath(
            &["pods", "-l", "app=ticker"],
            "{range .items[*]}{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}",
        )
    };
    let before = pods(&first);
    let leader = holder(&first, "kube-controller-manager");

    first.kill9();
    // The other server leads, the node is Ready through it, and a new pod lands and runs.
    crate::harness::eventually("the second server leads", Duration::from_secs(40), || {
        let h = holder(&second, "kube-controller-manager");
        (h != leader && !h.is_empty()).then_some(())
    });
    second.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  nodeName: worker
  containers: [{name: ticker, image: "ticker:latest"}]
"#,
    );
    second.kubectl_ok(&["wait", "--for=condition=Ready", "pod/late", "--timeout=60s"]);
    ready(&second);
    assert_eq!(pods(&second), before, "the node's pods were not restarted");
}
