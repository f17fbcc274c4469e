//! The store under `kill -9`: concurrent writers, the server killed at varying moments over
//! several cycles. After each restart every acknowledged write is there, revisions only grow,
//! SQLite's integrity check passes, and a watch resumed from its last revision sees every
//! later change exactly once, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

use crate::harness::Cluster;

/// What a writer was told was committed: name → (value, resourceVersion).
type Acked = Arc<Mutex<HashMap<String, (u64, u64)>>>;

pub(crate) async fn client(c: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

fn rv(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn value(cm: &ConfigMap) -> u64 {
    cm.data
        .as_ref()
        .and_then(|d| d.get("v"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One writer: creates its objects and keeps updating them with growing values until an
/// error (the server died).
async fn writer(api: Api<ConfigMap>, prefix: String, acked: Acked) {
    let mut i: u64 = 0;
    loop {
        i += 1;
        let name = format!("{prefix}-{}", i % 5);
        let result = if i <= 5 {
            let cm: ConfigMap = serde_json::from_value(
                serde_json::json!({"metadata": {"name": name}, "data": {"v": i.to_string()}}),
            )
            .expect("configmap");
            api.create(&PostParams::default(), &cm).await
        } else {
            let p = serde_json::json!({"data": {"v": i.to_string()}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                .await
        };
        match result {
            Ok(cm) => {
                acked
                    .lock()
                    .expect("lock")
                    .insert(name, (value(&cm), rv(&cm)));
            }
            Err(_) => return,
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_and_watches_resume() {
    let mut c = Cluster::start(&["--no-node"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked: Acked = Default::default();
    let mut max_rv = 0u64;
    // The last event a long-running watch saw before each kill.
    let mut watched_to = 0u64;
    for cycle in 0..4u64 {
        let api: Api<ConfigMap> =
            rt.block_on(async { Api::namespaced(client(&c).await, "default") });
        // A watch that follows the writes and stops recording halfway to the kill, so the
        // resumed watch below has a stretch of history to replay.
        let seen = Arc::new(Mutex::new(0u64));
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = {
            let api = api.clone();
            let seen = seen.clone();
            let frozen = frozen.clone();
            let from = watched_to.to_string();
            rt.spawn(async move {
                let Ok(stream) = api.watch(&WatchParams::default(), &from).await else {
                    return;
                };
                let mut stream = stream.boxed();
                while let Ok(Some(ev)) = stream.try_next().await {
                    if frozen.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) =
                        ev
                    {
                        let mut s = seen.lock().expect("lock");
                        *s = (*s).max(rv(&o));
                    }
                }
            })
        };
        let writers: Vec<_> = (0..8)
            .map(|w| rt.spawn(writer(api.clone(), format!("c{cycle}-w{w}"), acked.clone())))
            .collect();
        // Kill at a different moment each cycle, while the writers are busy.
        let start = Instant::now();
        let until = Duration::from_millis(300 + 250 * cycle);
        while start.elapsed() < until {
            if start.elapsed() > until / 2 {
                frozen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        c.kill9_and_restart(&["--no-node"]);
        for w in writers {
            let _ = rt.block_on(w);
        }
        watch.abort();
        let resume_from = *seen.lock().expect("lock");

        let api: Api<ConfigMap> =
            rt.block_on(async { Api::namespaced(client(&c).await, "default") });
        let list = rt
            .block_on(api.list(&ListParams::default()))
            .expect("list after restart");
        let list_rv: u64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("list revision");
        let stored: BTreeMap<String, (u64, u64)> = list
            .items
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap_or_default(),
                    (value(cm), rv(cm)),
                )
            })
            .collect();
        let acked_now = acked.lock().expect("lock").clone();
        assert!(
            !acked_now.is_empty(),
            "no write was acknowledged in cycle {cycle}"
        );
        for (name, (v, at)) in &acked_now {
            let (sv, srv) = stored.get(name).unwrap_or_else(|| {
                panic!("acknowledged {name} (rv {at}) is missing after kill -9")
            });
            // A later write may have committed without its answer arriving; never an older one.
            assert!(
                sv >= v && srv >= at,
                "{name}: stored v{sv}@{srv}, acknowledged v{v}@{at}"
            );
        }
        let acked_max = acked_now.values().map(|(_, r)| *r).max().unwrap_or(0);
        assert!(
            list_rv >= acked_max && list_rv >= max_rv,
            "revision went back: {list_rv} < {acked_max}/{max_rv}"
        );
        max_rv = list_rv;

        // A watch resumed from the last revision it saw: every later change once, in order.
        if resume_from > 0 {
            let events = rt.block_on(async {
                let mut out = Vec::new();
                let mut stream = api
                    .watch(&WatchParams::default(), &resume_from.to_string())
                    .await
                    .expect("resumed watch")
                    .boxed();
                // Read until the newest stored revision has come by.
                let newest = stored.values().map(|(_, r)| *r).max().unwrap_or(0);
                let deadline = Instant::now() + Duration::from_secs(20);
                while out.last().map_or(resume_from, |(_, r)| *r) < newest
                    && Instant::now() < deadline
                {
                    match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
                        Ok(Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o)))) => {
                            out.push((o.metadata.name.clone().unwrap_or_default(), rv(&o)))
                        }
                        Ok(Ok(Some(WatchEvent::Error(e)))) => {
                            assert_eq!(e.code, 410, "unexpected watch error {e:?}");
                            return None;
                        }
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                Some(out)
            });
            eprintln!(
                "cycle {cycle}: {} acknowledged, list at {list_rv}, resumed from {resume_from}: {:?} events",
                acked_now.len(),
                events.as_ref().map(Vec::len)
            );
            if let Some(events) = events {
                let revs: Vec<u64> = events.iter().map(|(_, r)| *r).collect();
                assert!(
                    revs.windows(2).all(|w| w[0] < w[1]),
                    "out of order or repeated: {revs:?}"
                );
                assert!(
                    revs.iter().all(|r| *r > resume_from),
                    "replayed an old event: {revs:?}"
                );
                // The last event of each object is its stored state.
                let mut last: HashMap<&str, u64> = HashMap::new();
                for (n, r) in &events {
                    last.insert(n, *r);
                }
                for (name, (_, srv)) in stored.iter().filter(|(_, (_, r))| *r > resume_from) {
                    assert_eq!(
                        last.get(name.as_str()),
                        Some(srv),
                        "{name} missed by the resumed watch"
                    );
                }
            }
        }
        watched_to = list_rv;
    }

    // SQLite's own check of the file the server wrote through all those kills.
    c.kill9_and_restart(&["--no-node"]);
    let db = c.data().join("state.db");
    let check: String = rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true)
            .connect()
            .await
            .expect("open state.db");
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .expect("integrity_check")
    });
    assert_eq!(check, "ok");
}
