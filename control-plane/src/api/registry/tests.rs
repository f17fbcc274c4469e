//! The generic registry over a real store in a temporary directory: values held alone stay
//! unique under concurrent creates, are released with their holder, and a data dir without
//! claims gets them at start-up.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::Query;
use crate::api::strategy::service::{IP_CLAIMS, NODE_PORT_CLAIMS};
use crate::api::AppState;
use crate::resources::{self, ResourceType};
use crate::store::{ObjectKey, Store, StoreConfig, Write};

async fn state(what: &str) -> (Arc<AppState>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "skiff-registry-{what}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn crate::store::Storage> = Arc::new(
        Store::open(&dir.join("state.db"), StoreConfig::default())
            .await
            .unwrap(),
    );
    let modules = crate::modules::ModuleStore::new(&dir.join("modules"), store.clone()).unwrap();
    let state = Arc::new(AppState {
        store,
        authn: crate::auth::authn::Authenticator::new(Vec::new(), {
            let key = rcgen::KeyPair::generate().unwrap();
            crate::auth::satoken::Signer::new(&key.serialize_der(), key.public_key_raw()).unwrap()
        }),
        authorizer: crate::auth::authorizer::Authorizer::new(),
        node_token: "n".into(),
        modules,
        ca_pem: String::new(),
        advertise: "127.0.0.1:6443".into(),
        usage: Default::default(),
        http: reqwest::Client::new(),
        continue_key: crate::api::continue_key("test"),
        snapshots: Default::default(),
        audit: None,
    });
    crate::api::bootstrap(&state).await.unwrap();
    (state, dir)
}

fn services() -> &'static ResourceType {
    resources::find("", "v1", "services").unwrap()
}

fn service(name: &str, node_port: Option<i64>) -> Value {
    let mut port = json!({"port": 80});
    if let Some(n) = node_port {
        port["nodePort"] = json!(n);
    }
    json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [port]}})
}

async fn claims(state: &AppState, resource: &str) -> Vec<String> {
    let listing = state.store.list(resource, None).await.unwrap();
    listing.objects.into_iter().map(|o| o.key.name).collect()
}

#[tokio::test]
async fn concurrent_creates_never_share_a_cluster_ip_or_node_port() {
    let (state, dir) = state("race").await;
    let q = Query::new();
    // 32 creates ask for the same node port at once: exactly one gets it.
    let racing = (0..32).map(|i| {
        let state = state.clone();
        let q = q.clone();
        async move {
            super::create(
                &state,
                services(),
                "default",
                service(&format!("want-{i}"), Some(30080)),
                &q,
                false,
            )
            .await
        }
    });
    let results = futures::future::join_all(racing).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        won,
        1,
        "{:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            r.to_string().contains("provided port is already allocated"),
            "{r}"
        );
    }
    // 64 creates that let the server choose: all distinct, each claimed once.
    let many = (0..64).map(|i| {
        let state = state.clone();
        let q = q.clone();
        async move {
            super::create(
                &state,
                services(),
                "default",
                service(&format!("auto-{i}"), None),
                &q,
                false,
            )
            .await
        }
    });
    let made: Vec<Value> = futures::future::join_all(many)
        .await
        .into_iter()
        .map(|r| r.unwrap().0)
        .collect();
    let ips: HashSet<&str> = made
        .iter()
        .map(|s| s["spec"]["clusterIP"].as_str().unwrap())
        .collect();
    let ports: HashSet<i64> = made
        .iter()
        .map(|s| s["spec"]["ports"][0]["nodePort"].as_i64().unwrap())
        .collect();
    assert_eq!((ips.len(), ports.len()), (64, 64));
    // Plus the `kubernetes` Service's IP (no node port).
    assert_eq!(claims(&state, IP_CLAIMS).await.len(), 66);
    assert_eq!(claims(&state, NODE_PORT_CLAIMS).await.len(), 65);
    assert!(!ports.contains(&30080));

    // Deleting a Service releases what it held; changing its type to ClusterIP releases the port.
    super::delete(&state, services(), "default", "want-0", &json!({}), &q)
        .await
        .ok();
    let winner = made[0]["metadata"]["name"].as_str().unwrap().to_string();
    let mut changed = super::get_object(&state, services(), "default", &winner)
        .await
        .unwrap();
    changed["spec"]["type"] = json!("ClusterIP");
    changed["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    super::update(&state, services(), "default", &winner, changed, false, &q)
        .await
        .unwrap();
    let winner_port = made[0]["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .unwrap()
        .to_string();
    assert!(!claims(&state, NODE_PORT_CLAIMS)
        .await
        .contains(&winner_port));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_data_dir_without_claims_gets_them_at_start_up() {
    let (state, dir) = state("repair").await;
    // A Service as an older skiff stored it: addresses, no claims.
    let old = json!({"metadata": {"name": "old", "namespace": "default", "uid": "u"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.7.7", "ports": [{"port": 80, "nodePort": 31000}]}});
    state
        .store
        .write(Write::Create {
            key: ObjectKey::new("services", "default", "old"),
            data: serde_json::to_vec(&old).unwrap().into(),
        })
        .await
        .unwrap();
    crate::api::bootstrap(&state).await.unwrap();
    assert_eq!(
        claims(&state, IP_CLAIMS).await,
        vec!["10.43.0.1", "10.43.7.7"]
    );
    assert_eq!(claims(&state, NODE_PORT_CLAIMS).await, vec!["31000"]);
    let q = Query::new();
    let err = super::create(
        &state,
        services(),
        "default",
        service("new", Some(31000)),
        &q,
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already allocated"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_autoscaling_v1_hpa_is_stored_as_v2() {
    let (state, dir) = state("hpa").await;
    let v1 = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
    let v2 = resources::find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
    let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 75}});
    let (made, _) = super::create(&state, v1, "default", obj, &Query::new(), false)
        .await
        .unwrap();
    assert_eq!(made["spec"]["targetCPUUtilizationPercentage"], 75);
    let stored = super::get_object(&state, v2, "default", "h").await.unwrap();
    assert_eq!(
        stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 75,
        "{stored}"
    );
    let again = super::get_object(&state, v1, "default", "h").await.unwrap();
    assert_eq!(
        again["spec"]["targetCPUUtilizationPercentage"], 75,
        "{again}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A name made from `generateName` that is taken is made again (Kubernetes 1.32), not 409.
#[tokio::test]
async fn generate_name_collisions_are_retried() {
    let (state, dir) = state("generate").await;
    let cms = resources::find("", "v1", "configmaps").unwrap();
    let q = Query::new();
    super::create(
        &state,
        cms,
        "default",
        json!({"metadata": {"name": "x-aaaaa"}}),
        &q,
        false,
    )
    .await
    .unwrap();
    super::rules::test_suffixes::script(&["aaaaa", "aaaaa", "bbbbb"]);
    let (made, _) = super::create(
        &state,
        cms,
        "default",
        json!({"metadata": {"generateName": "x-"}}),
        &q,
        false,
    )
    .await
    .unwrap();
    assert_eq!(made["metadata"]["name"], "x-bbbbb");
    // A name the client chose is not retried.
    let taken = super::create(
        &state,
        cms,
        "default",
        json!({"metadata": {"name": "x-aaaaa"}}),
        &q,
        false,
    )
    .await;
    assert!(matches!(
        taken,
        Err(crate::api::ApiError::AlreadyExists { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A benchmark, not a check (ignored; run it with `cargo test --release -p
/// skiff-control-plane authz_path_cost -- --ignored --nocapture`): what authenticating and
/// authorizing one request costs, for the admin (`system:masters`) and for a ServiceAccount
/// token whose user RBAC decides, on a real store with the default roles. Prints ns per
/// request; compare with the server's CPU per create from `bench/authz.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn authz_path_cost() {
    use crate::auth::authn::Authenticator;
    use crate::auth::rbac::Attributes;
    let (state0, dir) = state("authzcost").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let signer =
        crate::auth::satoken::Signer::new(&key.serialize_der(), key.public_key_raw()).unwrap();
    let authn = Authenticator::new(
        vec![(
            "admintoken".into(),
            crate::auth::authn::user("system:admin", &["system:masters"]),
        )],
        signer,
    );
    let authorizer = crate::auth::authorizer::Authorizer::new();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(authorizer.clone().run(state0.store.clone(), stop.clone()));
    let ns_rt = resources::find("", "v1", "namespaces").unwrap();
    super::create(
        &state0,
        ns_rt,
        "",
        json!({"metadata": {"name": "a"}}),
        &Default::default(),
        false,
    )
    .await
    .unwrap();
    let sa_rt = resources::find("", "v1", "serviceaccounts").unwrap();
    let (sa, _) = super::create(
        &state0,
        sa_rt,
        "a",
        json!({"metadata": {"name": "t"}}),
        &Default::default(),
        false,
    )
    .await
    .unwrap();
    let rb = resources::find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
    super::create(&state0, rb, "a", json!({"metadata": {"name": "t"}, "subjects": [{"kind": "ServiceAccount", "name": "t", "namespace": "a"}], "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:aggregate-to-edit"}}), &Default::default(), false).await.unwrap();
    let now = jiff::Timestamp::now().as_second();
    let claims = crate::auth::satoken::Claims {
        iss: crate::auth::satoken::ISSUER.into(),
        sub: "system:serviceaccount:a:t".into(),
        aud: vec![crate::auth::satoken::ISSUER.into()],
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: "x".into(),
        kubernetes: crate::auth::satoken::KubernetesClaim {
            namespace: "a".into(),
            serviceaccount: crate::auth::satoken::Ref {
                name: "t".into(),
                uid: sa["metadata"]["uid"].as_str().unwrap().into(),
            },
            pod: None,
        },
    };
    let token = authn.signer.sign(&claims).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let attrs = Attributes::Resource {
        verb: "create".into(),
        group: "".into(),
        resource: "configmaps".into(),
        subresource: "".into(),
        name: "".into(),
        namespace: "a".into(),
    };
    for (label, t) in [
        ("admin", "admintoken".to_string()),
        ("tenant", token.clone()),
    ] {
        let n = 200_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let u = authn.bearer(&t, state0.store.as_ref()).await.unwrap();
            let rev = state0.store.revision();
            assert!(authorizer.authorize(&u, &attrs, rev).await.is_some());
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        eprintln!("{label}: {per:.0} ns per authn+authz");
        let start = std::time::Instant::now();
        for _ in 0..n {
            let _u = authn.bearer(&t, state0.store.as_ref()).await.unwrap();
        }
        eprintln!(
            "{label}: {:.0} ns per authn",
            start.elapsed().as_nanos() as f64 / n as f64
        );
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
