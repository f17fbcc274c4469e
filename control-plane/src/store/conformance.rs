//! The contract of [`Storage`], checked the same way against both backends: SQLite and a real
//! etcd (Debian's `etcd-server`, started on loopback ports by the test; `scripts/setup.sh`
//! installs it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::backend::Storage;
use super::{EventKind, ObjectKey, StoreError, Write};

/// An etcd member of the test's own, on free loopback ports; killed when dropped.
pub(crate) struct TestEtcd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// Its client URL.
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestEtcd {
    /// Start one and wait until it answers.
    pub(crate) async fn start() -> TestEtcd {
        let dir = std::env::temp_dir().join(format!(
            "skiff-etcd-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&dir)
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
                &format!("t={peer_url}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd runs (scripts/setup.sh installs Debian's etcd-server)");
        let etcd = TestEtcd { child, dir, url };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(mut c) = etcd_client::Client::connect([&etcd.url], None).await {
                if c.get("probe", None).await.is_ok() {
                    return etcd;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd at {} never answered", etcd.url);
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn key(resource: &str, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(resource, ns, name)
}

fn data(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

/// Every promise of the trait, in one pass over a fresh store.
async fn contract(s: Arc<dyn Storage>) {
    let start = s.revision();
    let mut pods = s.watch(Some("pods"), start).await.expect("watch pods");
    let mut all = s.watch(None, start).await.expect("watch all");

    // Create, and a second create of the same key.
    let a = s
        .write(Write::Create {
            key: key("pods", "b", "a"),
            data: data("v1"),
        })
        .await
        .expect("create");
    assert!(a.revision > start);
    assert!(matches!(
        s.write(Write::Create {
            key: key("pods", "b", "a"),
            data: data("again"),
        })
        .await,
        Err(StoreError::AlreadyExists)
    ));
    let got = s.get(&key("pods", "b", "a")).await.expect("get");
    assert_eq!((got.revision, got.data.clone()), (a.revision, data("v1")));
    assert!(matches!(
        s.get(&key("pods", "b", "zz")).await,
        Err(StoreError::NotFound)
    ));

    // Update: with the right precondition, without one, with a stale one, of nothing.
    let b = s
        .write(Write::Update {
            key: key("pods", "b", "a"),
            data: data("v2"),
            precondition: Some(a.revision),
        })
        .await
        .expect("update");
    assert!(b.revision > a.revision);
    match s
        .write(Write::Update {
            key: key("pods", "b", "a"),
            data: data("stale"),
            precondition: Some(a.revision),
        })
        .await
    {
        Err(StoreError::Conflict { current }) => assert_eq!(current, b.revision),
        other => panic!("a stale precondition: {other:?}"),
    }
    assert!(matches!(
        s.write(Write::Update {
            key: key("pods", "b", "nothing"),
            data: data("x"),
            precondition: None,
        })
        .await,
        Err(StoreError::NotFound)
    ));

    // More objects, and lists ordered by namespace and name, filtered by namespace.
    for (ns, name) in [("a", "z"), ("b", "c"), ("a", "m")] {
        s.write(Write::Create {
            key: key("pods", ns, name),
            data: data(name),
        })
        .await
        .expect("create");
    }
    s.write(Write::Create {
        key: key("namespaces", "", "b"),
        data: data("ns"),
    })
    .await
    .expect("a cluster-scoped object");
    s.write(Write::Create {
        key: key("apps/deployments", "b", "d"),
        data: data("dep"),
    })
    .await
    .expect("a grouped resource");
    let listed = s.list("pods", None).await.expect("list");
    let names: Vec<(String, String)> = listed
        .objects
        .iter()
        .map(|o| (o.key.namespace.clone(), o.key.name.clone()))
        .collect();
    assert_eq!(
        names,
        [("a", "m"), ("a", "z"), ("b", "a"), ("b", "c")]
            .map(|(n, m)| (n.to_string(), m.to_string()))
    );
    assert!(listed.revision >= b.revision);
    assert_eq!(
        s.list("pods", Some("a")).await.expect("list").objects.len(),
        2
    );
    let ns = s.list("namespaces", None).await.expect("list");
    assert_eq!(ns.objects.len(), 1);
    assert_eq!(ns.objects[0].key, key("namespaces", "", "b"));
    assert_eq!(
        s.list("apps/deployments", Some("b"))
            .await
            .expect("list")
            .objects[0]
            .key,
        key("apps/deployments", "b", "d")
    );

    // Delete: with a stale precondition, then for real (answered with the last state).
    assert!(matches!(
        s.write(Write::Delete {
            key: key("pods", "b", "a"),
            precondition: Some(a.revision),
        })
        .await,
        Err(StoreError::Conflict { .. })
    ));
    let gone = s
        .write(Write::Delete {
            key: key("pods", "b", "a"),
            precondition: Some(b.revision),
        })
        .await
        .expect("delete");
    assert_eq!(gone.data, data("v2"));
    assert!(matches!(
        s.write(Write::Delete {
            key: key("pods", "b", "a"),
            precondition: None,
        })
        .await,
        Err(StoreError::NotFound)
    ));
    // Releasing what is not there is no change.
    s.write(Write::Release {
        key: key("pods", "b", "never"),
    })
    .await
    .expect("release");

    // A transaction is all or nothing, and names the write refused.
    match s
        .write(Write::Txn(vec![
            Write::Create {
                key: key("pods", "t", "new"),
                data: data("x"),
            },
            Write::Create {
                key: key("pods", "a", "z"),
                data: data("taken"),
            },
        ]))
        .await
    {
        Err(StoreError::Refused { index, source }) => {
            assert_eq!(index, 1);
            assert!(matches!(*source, StoreError::AlreadyExists));
        }
        other => panic!("a refused transaction: {other:?}"),
    }
    assert!(matches!(
        s.get(&key("pods", "t", "new")).await,
        Err(StoreError::NotFound)
    ));
    s.write(Write::Txn(vec![
        Write::Create {
            key: key("pods", "t", "one"),
            data: data("1"),
        },
        Write::Create {
            key: key("configmaps", "t", "two"),
            data: data("2"),
        },
    ]))
    .await
    .expect("a transaction");
    assert!(s.get(&key("configmaps", "t", "two")).await.is_ok());

    // The pods watch saw the pods' changes in order, with what they were before.
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let ev = tokio::time::timeout(Duration::from_secs(10), pods.next())
            .await
            .expect("an event in time")
            .expect("an event");
        assert_eq!(ev.object.key.resource, "pods");
        seen.push((
            ev.kind,
            ev.object.key.name.clone(),
            ev.object.data.clone(),
            ev.previous.clone(),
        ));
    }
    assert_eq!(seen[0], (EventKind::Added, "a".into(), data("v1"), None));
    assert_eq!(
        seen[1],
        (
            EventKind::Modified,
            "a".into(),
            data("v2"),
            Some(data("v1"))
        )
    );
    assert_eq!(
        seen[5],
        (EventKind::Deleted, "a".into(), data("v2"), Some(data("v2")))
    );
    assert_eq!((seen[6].0, seen[6].1.as_str()), (EventKind::Added, "one"));
    // The watch of everything saw the other resources too.
    let mut resources = std::collections::BTreeSet::new();
    while resources.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), all.next())
            .await
            .expect("an event in time")
            .expect("an event");
        resources.insert(ev.object.key.resource.clone());
    }
    assert_eq!(
        resources.into_iter().collect::<Vec<_>>(),
        ["apps/deployments", "configmaps", "namespaces", "pods"]
    );
    // A watch from a revision sees what came after it.
    let mut late = s.watch(Some("pods"), b.revision).await.expect("watch");
    let ev = late.next().await.expect("an event");
    assert!(ev.object.revision > b.revision);
    assert!(s.revision() >= ev.object.revision);
}

#[tokio::test]
async fn sqlite_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("skiff-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = super::Store::open(&dir.join("state.db"), Default::default())
        .await
        .expect("open");
    contract(Arc::new(store)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn etcd_keeps_the_contract() {
    let etcd = TestEtcd::start().await;
    let store = super::etcd::EtcdStore::connect(&super::etcd::EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        prefix: "/registry".into(),
        ..Default::default()
    })
    .await
    .expect("connect");
    contract(Arc::new(store)).await;
}

#[tokio::test]
async fn the_watch_cache_on_etcd_keeps_the_contract() {
    let etcd = TestEtcd::start().await;
    let raw = super::etcd::EtcdStore::connect(&super::etcd::EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        prefix: "/registry".into(),
        ..Default::default()
    })
    .await
    .expect("connect");
    let cached = super::Cached::new(Arc::new(raw)).await.expect("cache");
    contract(Arc::new(cached)).await;
}

/// Two API servers on one etcd: what one writes, the other's cache, lists and watches see; a
/// server's own write is readable from it as soon as it is answered; a conflict is answered
/// only once the cache holds the write that won.
#[tokio::test]
async fn watch_caches_on_one_etcd_see_each_others_writes() {
    let etcd = TestEtcd::start().await;
    let config = super::etcd::EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        prefix: "/two".into(),
        ..Default::default()
    };
    let open = || async {
        let raw = super::etcd::EtcdStore::connect(&config)
            .await
            .expect("connect");
        super::Cached::new(Arc::new(raw)).await.expect("cache")
    };
    let (a, b) = (open().await, open().await);
    let mut on_b = b.watch(Some("pods"), b.revision()).await.expect("watch");
    let made = a
        .write(Write::Create {
            key: key("pods", "x", "p"),
            data: data("1"),
        })
        .await
        .expect("create");
    assert_eq!(
        a.get(&key("pods", "x", "p"))
            .await
            .expect("own write")
            .revision,
        made.revision
    );
    let ev = tokio::time::timeout(Duration::from_secs(10), on_b.next())
        .await
        .expect("in time")
        .expect("an event");
    assert_eq!(
        (ev.kind, ev.object.revision),
        (EventKind::Added, made.revision)
    );
    assert_eq!(
        b.get(&key("pods", "x", "p")).await.expect("seen").data,
        data("1")
    );
    // b updates it; a's stale update conflicts, and a then reads the winner.
    let won = b
        .write(Write::Update {
            key: key("pods", "x", "p"),
            data: data("2"),
            precondition: Some(made.revision),
        })
        .await
        .expect("update");
    match a
        .write(Write::Update {
            key: key("pods", "x", "p"),
            data: data("3"),
            precondition: Some(made.revision),
        })
        .await
    {
        Err(StoreError::Conflict { current }) => assert_eq!(current, won.revision),
        other => panic!("a stale update: {other:?}"),
    }
    let now = a.get(&key("pods", "x", "p")).await.expect("get");
    assert_eq!((now.revision, now.data), (won.revision, data("2")));
    assert_eq!(a.list("pods", None).await.expect("list").objects.len(), 1);
    // A watch from before the cache started comes from etcd's own history.
    let mut old = a.watch(Some("pods"), 1).await.expect("an old watch");
    let first = old.next().await.expect("an event");
    assert_eq!(first.object.revision, made.revision);
}

/// A watch from a revision etcd compacted away is `Gone` (410 to clients, who list again);
/// a lost etcd is an error, not a hang or a crash.
#[tokio::test]
async fn etcd_compaction_and_loss_are_errors() {
    let etcd = TestEtcd::start().await;
    let config = super::etcd::EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        prefix: "/c".into(),
        ..Default::default()
    };
    let store = super::etcd::EtcdStore::connect(&config)
        .await
        .expect("connect");
    let mut last = 0;
    for i in 0..5 {
        last = store
            .write(Write::Create {
                key: key("pods", "x", &format!("p{i}")),
                data: data("x"),
            })
            .await
            .expect("create")
            .revision;
    }
    let mut client = etcd_client::Client::connect([&etcd.url], None)
        .await
        .expect("client");
    client.compact(last as i64, None).await.expect("compact");
    let mut w = store.watch(Some("pods"), 1).await.expect("watch");
    match tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("answered")
    {
        Err(StoreError::Gone { compacted, .. }) => assert_eq!(compacted, last),
        other => panic!("a compacted watch: {other:?}"),
    }
    let cached = super::Cached::new(Arc::new(
        super::etcd::EtcdStore::connect(&config)
            .await
            .expect("connect"),
    ))
    .await
    .expect("cache");
    drop(etcd);
    let lost = tokio::time::timeout(Duration::from_secs(30), store.get(&key("pods", "x", "p0")))
        .await
        .expect("answered in time");
    assert!(matches!(lost, Err(StoreError::Etcd(_))), "{lost:?}");
    // The cache goes on answering reads; its writes fail with etcd's error.
    assert!(cached.get(&key("pods", "x", "p0")).await.is_ok());
    assert_eq!(
        cached.list("pods", None).await.expect("list").objects.len(),
        5
    );
    let write = tokio::time::timeout(
        Duration::from_secs(30),
        cached.write(Write::Create {
            key: key("pods", "x", "late"),
            data: data("x"),
        }),
    )
    .await
    .expect("answered in time");
    assert!(matches!(write, Err(StoreError::Etcd(_))), "{write:?}");
}
