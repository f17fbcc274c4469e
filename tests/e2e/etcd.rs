//! A cluster on etcd (`--datastore-endpoint`): Debian's etcd-server on loopback ports, the same
//! workloads and kubectl as on SQLite, and the state outliving the server that wrote it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{example, Cluster};
use crate::T;

/// An etcd cluster of its own on free loopback ports (Debian's etcd-server), killed when dropped.
struct Etcd {
    members: Vec<Option<Child>>,
    urls: Vec<String>,
    /// Every member's client URL, comma separated (`--datastore-endpoint`).
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
    /// One member.
    fn start() -> Etcd {
        Etcd::start_members(1)
    }

    /// A cluster of `n` members, started together, once every member is healthy.
    fn start_members(n: usize) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join(format!("m{i}")))
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
                    &initial,
                    "--initial-cluster-state",
                    "new",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd runs (scripts/setup.sh installs Debian's etcd-server)");
            members.push(Some(child));
            urls.push(url);
        }
        let etcd = Etcd {
            members,
            url: urls.join(","),
            urls,
            _dir: dir,
        };
        for url in &etcd.urls {
            crate::harness::eventually(&format!("etcd {url} is healthy"), T, || {
                Command::new("curl")
                    .args(["-sf", &format!("{url}/health")])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    .then_some(())
            });
        }
        etcd
    }

    /// The member that leads etcd's raft now (from each member's status).
    fn leader(&self) -> usize {
        let leads = |url: &String| -> Option<bool> {
            let out = Command::new("curl")
                .args(["-sf", "-X", "POST", "-d", "{}"])
                .arg(format!("{url}/v3/maintenance/status"))
                .output()
                .ok()?;
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let me = status["header"]["member_id"].as_str()?;
            Some(status["leader"].as_str() == Some(me))
        };
        crate::harness::eventually("an etcd leader", T, || {
            self.urls.iter().position(|url| leads(url) == Some(true))
        })
    }

    /// Kill member `i` (it stays down).
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
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
    // Pushed to the first only: the second fetches the blob from it when asked.
    first.push_ok("ticker:latest", &example("ticker", false));
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

/// The port of a server's URL.
fn port(c: &Cluster) -> String {
    c.url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The ports of the API servers `c` lists in the `kubernetes` Endpoints, sorted.
fn endpoint_ports(c: &Cluster) -> Vec<String> {
    let mut got: Vec<String> = c
        .jsonpath(&["endpoints", "kubernetes"], "{.subsets[*].ports[0].port}")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    got.sort();
    got
}

/// Three API servers on a three-member etcd, and a node joined to all three: each server lists
/// the three in the `kubernetes` Endpoints; a module pushed to one server runs through another;
/// the leader dies in the middle of a rollout and the rollout completes once, under a new
/// leader; etcd's leader member dies and writes go on; the dead server leaves the Endpoints.
#[test]
fn three_servers_on_three_etcd_members_survive_the_leader_and_a_member() {
    let mut etcd = Etcd::start_members(3);
    let args = [
        "--datastore-endpoint",
        etcd.url.as_str(),
        "--datastore-prefix",
        "/three",
        "--no-node",
    ];
    let first = Cluster::start(&args);
    let second = second_server(&first, &args);
    let third = second_server(&first, &args);
    let mut servers = [first, second, third];
    let mut ports: Vec<String> = servers.iter().map(port).collect();
    ports.sort();
    for c in &servers {
        crate::harness::eventually("the three servers in the Endpoints", T, || {
            (endpoint_ports(c) == ports).then_some(())
        });
    }
    // The module is pushed to the first server only; the node asks the third first.
    servers[0].push_ok("ticker:latest", &example("ticker", false));
    let list = format!("{},{},{}", servers[2].url, servers[1].url, servers[0].url);
    servers[0].join_node_to("worker", &list);
    servers[1].wait_for(
        &["node", "worker"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        T,
    );
    servers[2].apply(&crate::manifest("ticker-deployment"));
    servers[2].kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=90s"]);
    assert!(
        servers[2]
            .server_log()
            .contains("module blob fetched from a peer"),
        "the third server took the blob from the first"
    );

    // A rollout through one server; its leader dies while it rolls.
    let leader = holder(&servers[0], "kube-controller-manager");
    let li = servers
        .iter()
        .position(|c| {
            std::fs::read_to_string(c.data().join("server-id")).is_ok_and(|s| s.trim() == leader)
        })
        .expect("the leader is one of the three");
    let other = (li + 1) % 3;
    servers[other].kubectl_ok(&["set", "env", "deployment/ticker", "ROUND=2"]);
    servers[li].kill9();
    servers[other].kubectl_ok(&["rollout", "status", "deployment/ticker", "--timeout=90s"]);
    let c = &servers[other];
    let new_leader = holder(c, "kube-controller-manager");
    assert!(
        new_leader != leader && !new_leader.is_empty(),
        "{new_leader}"
    );
    // Done once: the old ReplicaSet at 0, the new one at 2, and two pods, both of the new one.
    let mut rs: Vec<String> = c
        .jsonpath(
            &["rs", "-l", "app=ticker"],
            "{range .items[*]}{.spec.replicas} {end}",
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
    rs.sort();
    assert_eq!(rs, ["0", "2"]);
    let hash = c.jsonpath(
        &["rs", "-l", "app=ticker"],
        "{.items[?(@.spec.replicas==2)].metadata.labels.pod-template-hash}",
    );
    crate::harness::eventually("two pods, of the new ReplicaSet", T, || {
        let pods = c.jsonpath(
            &["pods", "-l", "app=ticker"],
            "{range .items[*]}{.metadata.labels.pod-template-hash} {end}",
        );
        let pods: Vec<&str> = pods.split_whitespace().collect();
        (pods == [hash.as_str(), hash.as_str()]).then_some(())
    });

    // etcd's leader dies: after its election, writes and reads go on through the servers left.
    let etcd_leader = etcd.leader();
    etcd.kill(etcd_leader);
    let (a, b) = (other, 3 - li - other);
    servers[a].kubectl_ok(&["create", "configmap", "after-member", "--from-literal=k=v"]);
    assert_eq!(
        servers[b].wait_for(&["configmap", "after-member"], "{.data.k}", "v", T),
        "v"
    );
    // The dead server leaves the Endpoints once its Lease stops changing (15 s).
    let mut left = vec![port(&servers[a]), port(&servers[b])];
    left.sort();
    crate::harness::eventually("the dead server out of the Endpoints", T, || {
        (endpoint_ports(&servers[a]) == left).then_some(())
    });
}

/// Migration: a snapshot of a SQLite cluster restored into etcd is the same cluster on etcd
/// (names, uids, data, modules), which takes scheduled snapshots too; a snapshot of that one, taken from etcd, restored without
/// etcd is the same cluster on SQLite again. A restore into a prefix that holds a cluster is
/// refused.
#[test]
fn a_cluster_moves_from_sqlite_to_etcd_and_back() {
    let etcd = Etcd::start();
    let on_etcd = [
        "--datastore-endpoint",
        etcd.url.as_str(),
        "--datastore-prefix",
        "/moved",
    ];
    let mut sqlite = Cluster::start(&[]);
    sqlite.push_ok("hello:latest", &example("hello", false));
    sqlite.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: keep}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: keep}
data: {color: blue}
"#,
    );
    let uid = sqlite.jsonpath(&["configmap", "settings", "-n", "keep"], "{.metadata.uid}");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let snap = path(&sqlite.dir.path().join("from-sqlite.db"));
    sqlite
        .skiff(&[
            "snapshot",
            "save",
            &snap,
            "--data-dir",
            &path(&sqlite.data()),
        ])
        .status
        .success()
        .then_some(())
        .expect("a snapshot of the SQLite cluster");
    sqlite.kill9();

    let restore = |c: &Cluster, file: &str, data: &std::path::Path, etcd_flags: &[&str]| {
        let out = c.skiff(
            &[
                &["snapshot", "restore", file, "--data-dir", &path(data)],
                etcd_flags,
            ]
            .concat(),
        );
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let moved = Cluster::start_prepared(
        |data| {
            let (ok, text) = restore(&sqlite, &snap, data, &on_etcd);
            assert!(ok, "{text}");
        },
        &[on_etcd.as_slice(), &["--snapshot-interval", "1s"]].concat(),
    );
    assert!(
        !moved.data().join("state.db").exists(),
        "the cluster is etcd's"
    );
    let same = |c: &Cluster| {
        assert_eq!(
            c.jsonpath(
                &["configmap", "settings", "-n", "keep"],
                "{.metadata.uid} {.data.color}"
            ),
            format!("{uid} blue")
        );
        c.apply(
            r#"apiVersion: v1
kind: Pod
metadata: {name: hello-again, namespace: keep}
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
            "pod/hello-again",
            "--timeout=60s",
        ]);
        c.kubectl_ok(&["delete", "pod", "-n", "keep", "hello-again"]);
    };
    same(&moved);
    // Scheduled snapshots of a cluster on etcd.
    crate::harness::eventually("a scheduled snapshot from etcd", T, || {
        std::fs::read_dir(moved.data().join("snapshots"))
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".db"))
            .then_some(())
    });
    // Never into a prefix that holds a cluster.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let (ok, text) = restore(&moved, &snap, elsewhere.path(), &on_etcd);
    assert!(!ok && text.contains("holds"), "{text}");

    // And back: a snapshot taken from etcd, restored into a data dir of its own.
    let back_snap = path(&moved.dir.path().join("from-etcd.db"));
    let out = moved.skiff(
        &[
            &[
                "snapshot",
                "save",
                &back_snap,
                "--data-dir",
                &path(&moved.data()),
            ],
            on_etcd.as_slice(),
        ]
        .concat(),
    );
    assert!(out.status.success(), "{out:?}");
    let mut moved = moved;
    moved.kill9();
    let back = Cluster::start_prepared(
        |data| {
            let (ok, text) = restore(&moved, &back_snap, data, &[]);
            assert!(ok, "{text}");
        },
        &[],
    );
    same(&back);
}
