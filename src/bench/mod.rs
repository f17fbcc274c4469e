//! `skiff bench`: benchmarks a user can run against any cluster. Results are printed as one JSON
//! line per benchmark plus a human summary on stderr.

mod pull;
mod reaction;
mod scaled;
mod zero;

pub use pull::pull;
pub use reaction::hpa_reaction;
pub use zero::scale_from_zero;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;

/// Median, p99, min, max of samples in milliseconds, as one JSON line and a summary.
pub fn report(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        eprintln!("# {name}: no samples");
        return;
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p99 = ms[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{}",
        serde_json::json!({"bench": name, "unit": "ms", "n": n, "median": median, "p99": p99, "min": ms[0], "max": ms[n - 1]})
    );
    eprintln!(
        "# {name}: median {median:.1} ms, p99 {p99:.1} ms (n={n}, min {:.1}, max {:.1})",
        ms[0],
        ms[n - 1]
    );
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// A plain HTTPS client for the write benchmarks, built from the kubeconfig's server, CA and
/// token: it sends the same requests kube-rs would but does not decode the answers into typed
/// objects, so that on a machine shared with the server the client costs about what
/// `bench etcd`'s client costs (the same reqwest client, with TLS on top).
#[derive(Clone)]
pub(crate) struct RawApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl RawApi {
    pub(crate) fn from_kubeconfig(kubeconfig: &Path) -> Result<Self> {
        use base64::Engine as _;
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let ctx_name = kc.current_context.clone().unwrap_or_default();
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.clone())
            .context("kubeconfig has no current context")?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.clone())
            .context("kubeconfig names no cluster")?;
        let user = kc
            .auth_infos
            .iter()
            .find(|a| Some(&a.name) == ctx.user.as_ref())
            .and_then(|a| a.auth_info.clone())
            .context("kubeconfig names no user")?;
        let token = user
            .token
            .map(|t| secrecy::ExposeSecret::expose_secret(&t).to_string())
            .context("the benchmark needs a kubeconfig with a bearer token")?;
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(512);
        if let Some(ca) = cluster.certificate_authority_data {
            let pem = base64::engine::general_purpose::STANDARD.decode(ca.trim())?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build()?,
            base: cluster
                .server
                .context("kubeconfig cluster has no server")?
                .trim_end_matches('/')
                .to_string(),
            token,
        })
    }

    /// The same client with another bearer token.
    pub(crate) fn with_token(&self, token: &str) -> RawApi {
        RawApi {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.to_string(),
        }
    }

    /// Send `body` and read the whole answer; anything but `expect` is an error.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        expect: u16,
    ) -> Result<()> {
        let (status, bytes) = self.exchange(method, path, content_type, body).await?;
        anyhow::ensure!(
            status == expect,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(())
    }

    /// Send `body`, read the whole answer and return its status code.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<u16> {
        Ok(self.exchange(method, path, content_type, body).await?.0)
    }

    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes)> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?))
    }
}

/// A pod the size of a typical manifest, for a scheduler that does not exist: nothing
/// schedules or runs it, so the numbers are the API's and the store's alone.
fn bench_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "api"},
            "annotations": {"note": "x".repeat(512)}},
        "spec": {"schedulerName": "skiff-bench-none",
            "containers": [{"name": "c", "image": "hello", "args": ["a", "b"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))
    .expect("a valid pod")
}

/// Run `total` operations with `clients` concurrent workers; returns per-op latencies (ms) and
/// the wall time.
pub(crate) async fn concurrent<F, Fut>(
    total: usize,
    clients: usize,
    op: F,
) -> Result<(Vec<f64>, Duration)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let next = next.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, t0.elapsed()))
}

fn rate(name: &str, n: usize, wall: Duration) {
    let per_sec = n as f64 / wall.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"bench": name, "unit": "ops/s", "value": per_sec})
    );
    eprintln!(
        "# {name}: {per_sec:.0} ops/s ({n} in {:.2} s)",
        wall.as_secs_f64()
    );
}

/// `skiff bench api`.
/// Make `n` RoleBindings in `ns` (of `view` to other users) and, if `as_tenant`, a
/// ServiceAccount bound to `edit` there; the client to write with (the tenant's token, or the
/// admin's).
async fn tenant(admin: &RawApi, ns: &str, n: usize, as_tenant: bool) -> Result<RawApi> {
    let json = "application/json";
    let binding = |name: &str, subject: serde_json::Value, role: &str| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "subjects": [subject],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        }))
    };
    let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings");
    for i in 0..n {
        let subject = serde_json::json!({"kind": "User", "name": format!("user-{i}"),
            "apiGroup": "rbac.authorization.k8s.io"});
        admin
            .send(
                reqwest::Method::POST,
                &path,
                json,
                binding(&format!("other-{i}"), subject, "view")?,
                201,
            )
            .await?;
    }
    if !as_tenant {
        return Ok(admin.clone());
    }
    let sa = serde_json::to_vec(&serde_json::json!({"metadata": {"name": "bench-tenant"}}))?;
    admin
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json,
            sa,
            201,
        )
        .await?;
    let subject =
        serde_json::json!({"kind": "ServiceAccount", "name": "bench-tenant", "namespace": ns});
    admin
        .send(
            reqwest::Method::POST,
            &path,
            json,
            binding("bench-tenant-edit", subject, "edit")?,
            201,
        )
        .await?;
    let request = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}))?;
    let (status, body) = admin
        .exchange(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/bench-tenant/token"),
            json,
            request,
        )
        .await?;
    anyhow::ensure!(status == 201, "token request answered {status}");
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let token = answer["status"]["token"]
        .as_str()
        .context("no token in the TokenRequest answer")?;
    Ok(admin.with_token(token))
}

/// Who sends the create and update load of `bench api`.
pub struct Writer {
    /// A ServiceAccount bound to `edit` in the bench namespace instead of the admin (whose
    /// `system:masters` membership skips RBAC): every request is then authorized by RBAC.
    pub tenant: bool,
    /// RoleBindings (to other subjects) created in the bench namespace first, so each decision
    /// walks them.
    pub role_bindings: usize,
}

pub async fn api(
    kubeconfig: &Path,
    writes: usize,
    levels: &[usize],
    list_pods: usize,
    writer: Writer,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let client = client_for(kubeconfig).await?;
    let ns_name = format!("skiff-bench-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns_name}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
    let mut raw = RawApi::from_kubeconfig(kubeconfig)?;
    let pods_path = format!("/api/v1/namespaces/{ns_name}/pods");
    let result = async {
        if writer.tenant || writer.role_bindings > 0 {
            raw = tenant(&raw, &ns_name, writer.role_bindings, writer.tenant).await?;
        }
        for &c in levels {
            let (api, path) = (raw.clone(), pods_path.clone());
            let (lat, wall) = concurrent(writes, c, move |i| {
                let (api, path) = (api.clone(), path.clone());
                async move {
                    let body = serde_json::to_vec(&bench_pod(&format!("c{c}-{i}")))?;
                    api.send(reqwest::Method::POST, &path, "application/json", body, 201)
                        .await
                }
            })
            .await?;
            rate(&format!("create-c{c}"), writes, wall);
            report(&format!("create-latency-c{c}"), lat);
            let (api, path) = (raw.clone(), pods_path.clone());
            let (lat, wall) = concurrent(writes, c, move |i| {
                let (api, path) = (api.clone(), path.clone());
                async move {
                    let patch = serde_json::json!({"metadata": {"labels": {"rev": i.to_string()}}});
                    api.send(
                        reqwest::Method::PATCH,
                        &format!("{path}/c{c}-{i}"),
                        "application/merge-patch+json",
                        serde_json::to_vec(&patch)?,
                        200,
                    )
                    .await
                }
            })
            .await?;
            rate(&format!("update-c{c}"), writes, wall);
            report(&format!("update-latency-c{c}"), lat);
        }
        // Watch delivery: write acknowledged -> event received, one write at a time.
        let mut stream = pods
            .watch(&WatchParams::default().labels("bench=watch"), "0")
            .await?
            .boxed();
        let mut lat = Vec::new();
        for i in 0..200 {
            let mut p = bench_pod(&format!("w-{i}"));
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("bench".into(), "watch".into());
            pods.create(&PostParams::default(), &p).await?;
            let acked = Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
                    Ok(Ok(Some(WatchEvent::Added(got))))
                        if got.metadata.name.as_deref() == Some(&format!("w-{i}")) =>
                    {
                        break
                    }
                    Ok(Ok(Some(_))) => continue,
                    other => anyhow::bail!("watch ended early: {other:?}"),
                }
            }
            lat.push(acked.elapsed().as_secs_f64() * 1000.0);
        }
        report("watch-delivery", lat);
        // LIST of many pods.
        if list_pods == 0 {
            return Ok(());
        }
        let have = pods.list(&ListParams::default()).await?.items.len();
        if list_pods > have {
            let api = pods.clone();
            concurrent(list_pods - have, 64, move |i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &bench_pod(&format!("l-{i}")))
                        .await?;
                    Ok(())
                }
            })
            .await?;
        }
        let mut lat = Vec::new();
        let mut raw = Vec::new();
        let path = format!("/api/v1/namespaces/{ns_name}/pods");
        for _ in 0..10 {
            // As the server sends it (bytes received) ...
            let t = Instant::now();
            let req = http::Request::get(&path).body(Vec::new())?;
            let text = client.request_text(req).await?;
            raw.push(t.elapsed().as_secs_f64() * 1000.0);
            let n = serde_json::from_str::<serde_json::Value>(&text)?["items"]
                .as_array()
                .map_or(0, Vec::len);
            anyhow::ensure!(n >= list_pods, "listed {n} pods, expected {list_pods}");
            // ... and decoded into typed pods, as a kube-rs program sees it.
            let t = Instant::now();
            pods.list(&ListParams::default()).await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        report(&format!("list-{list_pods}-pods-received"), raw);
        report(&format!("list-{list_pods}-pods-decoded-by-kube-rs"), lat);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = namespaces.delete(&ns_name, &DeleteParams::default()).await;
    result
}

/// `skiff bench etcd`: puts of a value the size of the bench pod (as skiff stores it) through
/// etcd's v3 JSON gateway, reported like `bench api`'s creates.
pub async fn etcd(endpoint: &str, writes: usize, levels: &[usize]) -> Result<()> {
    use base64::Engine as _;
    let value = serde_json::to_vec(&bench_pod("etcd-value-size"))?;
    let value = base64::engine::general_purpose::STANDARD.encode(&value);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let url = format!("{}/v3/kv/put", endpoint.trim_end_matches('/'));
    for &c in levels {
        let (http, url, value) = (http.clone(), url.clone(), value.clone());
        let (lat, wall) = concurrent(writes, c, move |i| {
            let (http, url, value) = (http.clone(), url.clone(), value.clone());
            async move {
                let key = base64::engine::general_purpose::STANDARD
                    .encode(format!("/registry/pods/bench/c{c}-{i}"));
                let resp = http
                    .post(&url)
                    .json(&serde_json::json!({"key": key, "value": value}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "etcd answered {}",
                    resp.status()
                );
                resp.bytes().await?;
                Ok(())
            }
        })
        .await?;
        rate(&format!("etcd-put-c{c}"), writes, wall);
        report(&format!("etcd-put-latency-c{c}"), lat);
    }
    Ok(())
}

/// Create a pod from `manifest` `n` times and time creation → `Succeeded` as a watch sees it.
pub async fn pod_startup(kubeconfig: &Path, manifest: &Path, n: usize) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let template: Pod = serde_yaml::from_str(&text).context("the manifest must be one Pod")?;
    let ns = template
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut pod = template.clone();
        let name = format!("bench-{}-{i}", std::process::id());
        pod.metadata.name = Some(name.clone());
        let t0 = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        let done = await_condition(api.clone(), &name, |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        });
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .context("the pod did not finish within 60 s")??;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        api.delete(&name, &DeleteParams::default()).await?;
    }
    report("pod-create-to-succeeded", samples);
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `skiff bench pods`.
pub async fn pods(
    kubeconfig: &Path,
    n: usize,
    rate: u32,
    image: &str,
    module: &Path,
    pid: Option<u32>,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::watcher;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    // In-process runtime numbers first (no cluster involved).
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let cache = tempfile_dir()?;
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    let rt = skiff_node::runtime::Runtime::new(&cache)?;
    let t = Instant::now();
    rt.prepare(&digest, bytes::Bytes::from(bytes.clone()))
        .await?;
    let cold = t.elapsed();
    let mut hits = Vec::new();
    for _ in 0..20 {
        let fresh = skiff_node::runtime::Runtime::new(&cache)?;
        let t = Instant::now();
        fresh
            .prepare(&digest, bytes::Bytes::from(bytes.clone()))
            .await?;
        hits.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let prepared = rt
        .prepare(&digest, bytes::Bytes::from(bytes.clone()))
        .await?;
    let mut inst = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        rt.instantiate(&prepared).await?;
        inst.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(rt);
    let _ = std::fs::remove_dir_all(&cache);
    eprintln!("# compile (cold): {:.1} ms", cold.as_secs_f64() * 1000.0);
    report("compile-cache-hit", hits);
    inst.sort_by(f64::total_cmp);
    let (med, p99) = (inst[inst.len() / 2], inst[inst.len() * 99 / 100]);
    println!(
        "{}",
        serde_json::json!({"bench": "instantiate", "unit": "us", "median": med, "p99": p99, "n": inst.len()})
    );
    eprintln!(
        "# instantiate: median {med:.1} us, p99 {p99:.1} us (n={})",
        inst.len()
    );

    let client = client_for(kubeconfig).await?;
    let ns_name = format!("skiff-bench-pods-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns_name}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
    let rss_before = pid.and_then(rss_kib);
    let result = async {
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        // When each pod was first seen bound to the node (for the breakdown of the latency).
        let bound: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
        // One watch sees every pod of the namespace get bound and reach Running.
        let watch = {
            let (pods, bound) = (pods.clone(), bound.clone());
            tokio::spawn(async move {
                let mut stream = watcher(pods, watcher::Config::default()).boxed();
                let mut seen = std::collections::HashSet::new();
                while let Some(ev) = stream.try_next().await? {
                    if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                        let now = Instant::now();
                        let running = p.status.as_ref().and_then(|s| s.phase.as_deref())
                            == Some("Running");
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                            if let Ok(mut b) = bound.lock() {
                                b.entry(name.clone()).or_insert(now);
                            }
                        }
                        if running && seen.insert(name.clone()) {
                            let _ = tx.send((name, now));
                        }
                    }
                }
                Ok::<_, anyhow::Error>(())
            })
        };
        let template = |name: &str| -> Result<Pod> {
            Ok(serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"app": "bench-pods"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": image,
                        "resources": {"requests": {"cpu": "1m", "memory": "1Mi"},
                            "limits": {"memory": "16Mi"}}}]}
            }))?)
        };
        // The targets are for a module the node already has: one pod first fetches and
        // compiles it, and is gone before the measured pods start.
        let warm = "warm-up";
        pods.create(&PostParams::default(), &template(warm)?).await?;
        let running = await_condition(pods.clone(), warm, |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Running")
        });
        tokio::time::timeout(Duration::from_secs(60), running)
            .await
            .context("the warm-up pod did not reach Running within 60 s")??;
        pods.delete(warm, &DeleteParams::default()).await?;
        if let Ok(mut m) = sent.lock() {
            m.remove(warm);
        }
        let t0 = Instant::now();
        eprintln!("# creating pods from {}", jiff::Timestamp::now());
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut creates = Vec::new();
        for i in 0..n {
            let due = t0 + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let name = format!("p-{i}");
            let pod = template(&name)?;
            let (pods, sent) = (pods.clone(), sent.clone());
            creates.push(tokio::spawn(async move {
                let at = Instant::now();
                if let Ok(mut m) = sent.lock() {
                    m.insert(name, at);
                }
                pods.create(&PostParams::default(), &pod).await.map(|_| {
                    (at.duration_since(due), at.elapsed())
                })
            }));
        }
        let (mut late, mut acked) = (Vec::new(), Vec::new());
        for c in creates {
            let (l, a) = c.await??;
            late.push(l.as_secs_f64() * 1000.0);
            acked.push(a.as_secs_f64() * 1000.0);
        }
        let mut lat = Vec::with_capacity(n);
        let mut slowest: Vec<(f64, String, f64, Option<f64>)> = Vec::new();
        let (mut to_bound, mut bound_to_running) = (Vec::new(), Vec::new());
        let mut last = t0;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        while lat.len() < n {
            let (name, at) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
                .await
                .context("pods did not all reach Running within 120 s")?
                .context("the watch ended")?;
            let start = sent.lock().ok().and_then(|m| m.get(&name).copied());
            if let Some(s) = start {
                lat.push(ms(at.duration_since(s)));
                last = last.max(at);
                let b = bound.lock().ok().and_then(|m| m.get(&name).copied());
                if let Some(b) = b {
                    to_bound.push(ms(b.duration_since(s)));
                    bound_to_running.push(ms(at.duration_since(b)));
                }
                let b = b.map(|b| ms(b.duration_since(s)));
                slowest.push((ms(at.duration_since(s)), name, ms(s.duration_since(t0)), b));
            }
        }
        watch.abort();
        let wall = last.duration_since(t0);
        self::rate("pods-running", n, wall);
        report("pod-create-to-running", lat);
        // Where the time goes: the control plane (create, schedule, bind) and the node (start,
        // status write), as seen by the same watch.
        report("pod-create-to-bound", to_bound);
        report("pod-bound-to-running", bound_to_running);
        // The client's share: how late this process sent each create, and its round trip.
        report("client-create-late", late);
        report("pod-create-request", acked);
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (took, name, at, bound) in slowest.iter().take(5) {
            let bound = bound.map_or("-".into(), |b| format!("{b:.1} ms"));
            eprintln!("# slow: {name} created at +{:.2} s took {took:.1} ms (bound after {bound})", at / 1000.0);
        }
        if let (Some(pid), Some(before)) = (pid, rss_before) {
            if let Some(after) = rss_kib(pid) {
                let per = after.saturating_sub(before) as f64 / n as f64;
                println!("{}", serde_json::json!({"bench": "node-rss", "unit": "KiB",
                    "before": before, "after": after, "per_pod": per, "pods": n}));
                eprintln!(
                    "# node RSS: {:.1} MiB before, {:.1} MiB with {n} running pods ({per:.0} KiB per pod)",
                    before as f64 / 1024.0,
                    after as f64 / 1024.0
                );
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Deleting the namespace deletes every pod; the node stops them.
    let t = Instant::now();
    let _ = namespaces.delete(&ns_name, &DeleteParams::default()).await;
    let gone = await_condition(namespaces.clone(), &ns_name, |ns: Option<&Namespace>| {
        ns.is_none()
    });
    if tokio::time::timeout(Duration::from_secs(300), gone)
        .await
        .is_ok()
    {
        eprintln!(
            "# delete {n} pods (namespace gone): {:.2} s",
            t.elapsed().as_secs_f64()
        );
        println!(
            "{}",
            serde_json::json!({"bench": "delete-all-pods", "unit": "s", "value": t.elapsed().as_secs_f64()})
        );
    }
    result
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("skiff-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The scheduler's decision function alone, in this process, over `nodes` hollow-shaped nodes
/// and `n` pods: decisions per second, with no API in the way.
fn decisions(nodes: usize, n: usize) -> Result<()> {
    use skiff_control_plane::scheduler::{
        decide_among, feasible_nodes_to_find, Decision, NodeSnapshot, PodRequest,
    };
    let taint: k8s_openapi::api::core::v1::Taint = serde_json::from_value(
        serde_json::json!({"key": crate::hollow::KEY, "value": "x", "effect": "NoSchedule"}),
    )?;
    let mut snap: Vec<NodeSnapshot> = (0..nodes)
        .map(|i| {
            let name = format!("hollow-x-{i}");
            NodeSnapshot {
                labels: [
                    ("kubernetes.io/hostname".to_string(), name.clone()),
                    (crate::hollow::KEY.to_string(), "x".to_string()),
                ]
                .into(),
                name,
                ready: true,
                allocatable: (64_000, 256 << 30, 110),
                taints: vec![taint.clone()],
                ..Default::default()
            }
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = snap
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let placement: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(crate::hollow::placement("x"))?;
    let req = PodRequest {
        cpu_millis: 10,
        memory: 16 << 20,
        node_selector: placement.node_selector.unwrap_or_default(),
        tolerations: placement.tolerations.unwrap_or_default(),
        ..Default::default()
    };
    // As the scheduler's passes decide: each decision examines nodes until enough fit, and the
    // next one starts after them.
    let enough = feasible_nodes_to_find(snap.len());
    let mut start = 0;
    let t = Instant::now();
    for _ in 0..n {
        let (decision, examined) = decide_among(&req, &snap, start, enough);
        start = (start + examined) % snap.len().max(1);
        match decision {
            Decision::Bind(node) => {
                let at = *index.get(&node).context("decided on an unknown node")?;
                let r = &mut snap[at].requested;
                r.0 += req.cpu_millis;
                r.1 += req.memory;
                r.2 += 1;
            }
            Decision::Unschedulable(why) => anyhow::bail!("the in-process pass failed: {why}"),
        }
    }
    rate("scheduler-decisions-in-process", n, t.elapsed());
    Ok(())
}

/// A scratch namespace for one benchmark, deleted (and waited for) by [`Scratch::delete`].
struct Scratch {
    api: Api<k8s_openapi::api::core::v1::Namespace>,
    name: String,
}

impl Scratch {
    async fn create(client: &kube::Client, prefix: &str) -> Result<Self> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let name = format!("{prefix}-{}", std::process::id());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
        Ok(Self { api, name })
    }

    /// Delete the namespace and wait (up to 5 minutes) until its pods are gone.
    async fn delete(self) -> Option<Duration> {
        let t = Instant::now();
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
        let gone = await_condition(self.api.clone(), &self.name, |ns: Option<&_>| ns.is_none());
        tokio::time::timeout(Duration::from_secs(300), gone)
            .await
            .ok()
            .map(|_| t.elapsed())
    }
}

/// What the scheduler benchmark's watch saw happen to a pod.
#[derive(Clone, Copy, PartialEq)]
enum Seen {
    Unschedulable,
    Bound,
    Running,
}

/// Wait (at most 60 s without progress) until `want` has happened to `count` of the pods named
/// in `names`; returns everything the watch reported meanwhile.
async fn wait_seen(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Seen, Instant)>,
    want: Seen,
    count: usize,
    names: &std::collections::HashMap<String, Instant>,
) -> Result<Vec<(String, Seen, Instant)>> {
    let mut got = 0;
    let mut times = Vec::new();
    while got < count {
        let (name, what, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .with_context(|| format!("no progress for 60 s ({got} of {count})"))?
            .context("the watch ended")?;
        if what == want && names.contains_key(&name) {
            got += 1;
        }
        times.push((name, what, at));
    }
    Ok(times)
}

/// `skiff bench scheduler`: `nodes` hollow nodes, `n` pods created by `clients` concurrent
/// clients as fast as the API takes them; pods/s scheduled and bound, and Running, as a watch
/// sees them. With `backlog`, the pods are created (and found unschedulable) before the nodes
/// exist, so that the rate of binding is the scheduler's alone, not the creates'. First, the
/// same decisions in this process without the API.
pub async fn scheduler(
    kubeconfig: &Path,
    nodes: usize,
    n: usize,
    clients: usize,
    backlog: bool,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::watcher;
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    decisions(nodes, n)?;
    let client = client_for(kubeconfig).await?;
    let raw = RawApi::from_kubeconfig(kubeconfig)?;
    let run = std::process::id().to_string();
    let ns = Scratch::create(&client, "skiff-bench-sched").await?;
    let per_node = u32::try_from(n / nodes.max(1) + 110)?;
    let start_nodes = || async {
        let t = Instant::now();
        let h = crate::hollow::Hollow::start(
            client.clone(),
            raw.clone(),
            &run,
            nodes,
            per_node,
            &ns.name,
        )
        .await?;
        eprintln!(
            "# registered {nodes} hollow nodes in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        Ok::<_, anyhow::Error>(h)
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut hollow = None;
    let result = async {
        // One watch sees every pod found unschedulable, bound and Running.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Seen, Instant)>();
        let watch = tokio::spawn({
            let pods = pods.clone();
            async move {
                let mut stream = watcher(pods, watcher::Config::default()).boxed();
                let mut seen: HashSet<(String, u8)> = HashSet::new();
                while let Some(ev) = stream.try_next().await? {
                    if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                        let now = Instant::now();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let status = p.status.as_ref();
                        let unschedulable =
                            status
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| {
                                        c.type_ == "PodScheduled"
                                            && c.reason.as_deref() == Some("Unschedulable")
                                    })
                                });
                        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
                        for (what, yes) in [
                            (Seen::Unschedulable, unschedulable),
                            (Seen::Bound, bound),
                            (Seen::Running, running),
                        ] {
                            if yes && seen.insert((name.clone(), what as u8)) {
                                let _ = tx.send((name.clone(), what, now));
                            }
                        }
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        let template = |name: &str| -> Result<Vec<u8>> {
            let mut pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "bench-scheduler"}},
                "spec": {"containers": [{"name": "c", "image": "hello",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            });
            if let (Some(spec), serde_json::Value::Object(extra)) =
                (pod["spec"].as_object_mut(), crate::hollow::placement(&run))
            {
                spec.extend(extra);
            }
            Ok(serde_json::to_vec(&pod)?)
        };
        let path = format!("/api/v1/namespaces/{}/pods", ns.name);
        if !backlog {
            hollow = Some(start_nodes().await?);
            // A warm-up pod: the scheduler has seen the nodes once it binds this one.
            raw.send(
                reqwest::Method::POST,
                &path,
                "application/json",
                template("warm-up")?,
                201,
            )
            .await?;
            let warm: HashMap<String, Instant> = [("warm-up".to_string(), Instant::now())].into();
            wait_seen(&mut rx, Seen::Running, 1, &warm)
                .await
                .context("the warm-up pod")?;
        }
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
        let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
            (0..n)
                .map(|i| {
                    let name = format!("s-{i}");
                    template(&name).map(|b| (name, b))
                })
                .collect::<Result<_>>()?,
        );
        let t0 = Instant::now();
        let creating = tokio::spawn({
            let (raw, path, sent) = (raw.clone(), path.clone(), sent.clone());
            concurrent(n, clients, move |i| {
                let (raw, path, sent, bodies) =
                    (raw.clone(), path.clone(), sent.clone(), bodies.clone());
                async move {
                    let (name, body) = &bodies[i];
                    if let Ok(mut m) = sent.lock() {
                        m.insert(name.clone(), Instant::now());
                    }
                    raw.send(
                        reqwest::Method::POST,
                        &path,
                        "application/json",
                        body.clone(),
                        201,
                    )
                    .await
                }
            })
        });
        // The watch's reports wait in the channel meanwhile, with the times they were seen.
        let (_, create_wall) = creating.await??;
        rate("scheduler-pods-created", n, create_wall);
        let names = sent.lock().map(|m| m.clone()).unwrap_or_default();
        // In a backlog run, every pod is pending and explained before the nodes come.
        let mut times = Vec::new();
        let mut nodes_at = t0;
        if backlog {
            times = wait_seen(&mut rx, Seen::Unschedulable, n, &names)
                .await
                .context("waiting for the scheduler to find every pod unschedulable")?;
            nodes_at = Instant::now();
            hollow = Some(start_nodes().await?);
        }
        times.extend(wait_seen(&mut rx, Seen::Running, n, &names).await?);
        // A pod's binding reaches the watch before its Running status, so every binding is in.
        watch.abort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (mut to_bound, mut to_running) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut first_bound, mut last_bound, mut last_running) = (None::<Instant>, t0, t0);
        for (name, what, at) in times {
            let Some(&s) = names.get(&name) else { continue };
            let since = if backlog { nodes_at } else { s };
            match what {
                Seen::Bound => {
                    to_bound.push(ms(at.duration_since(since)));
                    last_bound = last_bound.max(at);
                    first_bound = Some(first_bound.map_or(at, |f| f.min(at)));
                }
                Seen::Running => {
                    to_running.push(ms(at.duration_since(since)));
                    last_running = last_running.max(at);
                }
                Seen::Unschedulable => {}
            }
        }
        let from = if backlog { nodes_at } else { t0 };
        rate(
            "scheduler-pods-scheduled-and-bound",
            n,
            last_bound.duration_since(from),
        );
        if backlog {
            // Once the first node could take pods: the scheduler's own pace.
            let first = first_bound.unwrap_or(nodes_at);
            rate(
                "scheduler-backlog-bound-after-first-binding",
                n,
                last_bound.duration_since(first),
            );
        }
        rate(
            "scheduler-pods-running",
            n,
            last_running.duration_since(from),
        );
        let since = if backlog { "nodes" } else { "create" };
        report(&format!("scheduler-{since}-to-bound"), to_bound);
        report(&format!("scheduler-{since}-to-running"), to_running);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Some(took) = ns.delete().await {
        eprintln!(
            "# delete {n} pods (namespace gone): {:.2} s",
            took.as_secs_f64()
        );
    }
    if let Some(h) = hollow {
        h.stop().await;
    }
    result
}

/// `skiff bench deployments`: a Deployment of `replicas` on `nodes` hollow nodes, `runs` times:
/// time from create to Available (every replica available), then a rolling update to complete.
pub async fn deployments(
    kubeconfig: &Path,
    nodes: usize,
    replicas: i32,
    runs: usize,
) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};

    let client = client_for(kubeconfig).await?;
    let raw = RawApi::from_kubeconfig(kubeconfig)?;
    let run = std::process::id().to_string();
    let ns = Scratch::create(&client, "skiff-bench-deploy").await?;
    // Room for the surge of a rolling update (25 %) and the pods still terminating.
    let per_node = u32::try_from(replicas.max(0) as usize * 2 / nodes.max(1) + 10)?;
    let hollow =
        match crate::hollow::Hollow::start(client.clone(), raw, &run, nodes, per_node, &ns.name)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                ns.delete().await;
                return Err(e);
            }
        };
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    // `kubectl rollout status`'s test: the generation is observed and every replica is updated
    // and available, with no old replica left.
    let complete = |generation: i64, replicas: i32| {
        move |d: Option<&Deployment>| {
            let Some(d) = d else { return false };
            let Some(s) = d.status.as_ref() else {
                return false;
            };
            s.observed_generation.unwrap_or(0) >= generation
                && s.updated_replicas.unwrap_or(0) == replicas
                && s.replicas.unwrap_or(0) == replicas
                && s.available_replicas.unwrap_or(0) == replicas
        }
    };
    let result = async {
        let (mut available, mut rolled) = (Vec::new(), Vec::new());
        for k in 0..runs {
            let name = format!("bench-{k}");
            let mut spec = serde_json::json!({
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "hello",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}});
            if let (Some(pod), serde_json::Value::Object(extra)) = (
                spec["template"]["spec"].as_object_mut(),
                crate::hollow::placement(&run),
            ) {
                pod.extend(extra);
            }
            let d: Deployment = serde_json::from_value(
                serde_json::json!({"metadata": {"name": name}, "spec": spec}),
            )?;
            let t = Instant::now();
            api.create(&PostParams::default(), &d).await?;
            tokio::time::timeout(
                Duration::from_secs(300),
                await_condition(api.clone(), &name, complete(1, replicas)),
            )
            .await
            .with_context(|| format!("{name} was not Available within 300 s"))??;
            available.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"skiff.dev/bench-rollout": "2"}}}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            tokio::time::timeout(
                Duration::from_secs(300),
                await_condition(api.clone(), &name, complete(2, replicas)),
            )
            .await
            .with_context(|| format!("{name}'s rolling update did not complete within 300 s"))??;
            rolled.push(t.elapsed().as_secs_f64() * 1000.0);
            eprintln!(
                "# run {k}: Available after {:.0} ms, rolling update complete after {:.0} ms",
                available[k], rolled[k]
            );
            api.delete(&name, &DeleteParams::foreground()).await?;
            tokio::time::timeout(
                Duration::from_secs(300),
                await_condition(api.clone(), &name, |d: Option<&Deployment>| d.is_none()),
            )
            .await
            .with_context(|| format!("{name} was not deleted within 300 s"))??;
        }
        report(&format!("deployment-{replicas}-available"), available);
        report(&format!("deployment-{replicas}-rolling-update"), rolled);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    ns.delete().await;
    hollow.stop().await;
    result
}

/// The gateway peer proof that lets the bench address pods by `<pod>.<ns>.pod` (only nodes of
/// the cluster may): derived from the `node-token` beside the kubeconfig, as `skiff server`
/// writes them; `None` where there is none.
fn peer_proof(kubeconfig: &Path) -> Option<String> {
    let token = std::fs::read_to_string(kubeconfig.parent()?.join("node-token")).ok()?;
    Some(skiff_common::token::gateway_peer_secret(&token))
}

/// Requests/s and latency of `connections` clients sending GETs with `Host: host` to `addr` for
/// `duration`.
async fn http_load(
    name: &str,
    addr: &str,
    host: &str,
    peer: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .http1_only()
        .tcp_nodelay(true)
        .build()?;
    let url = format!("http://{addr}/");
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, host) = (client.clone(), url.clone(), host.to_string());
            let peer = peer.map(str::to_string);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut req = client.get(&url).header("host", &host);
                    if let Some(p) = &peer {
                        req = req.header(skiff_common::token::GATEWAY_PEER_HEADER, p);
                    }
                    let ok = match req.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let began = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let wall = began.elapsed().as_secs_f64();
    let rps = all.len() as f64 / wall;
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((p * all.len() as f64).ceil() as usize).clamp(1, all.len().max(1)) - 1)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({"bench": name, "rps": rps, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "requests": all.len(), "errors": errors, "connections": connections})
    );
    eprintln!(
        "# {name}: {rps:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {errors} errors, {connections} connections)",
        pct(0.5),
        pct(0.99),
        all.len()
    );
    Ok(())
}

/// The gateway address (`ip:port`) of a node.
async fn gateway_of(client: &kube::Client, node: &str) -> Result<String> {
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get(node)
        .await?;
    let port = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(skiff_node::gateway::GATEWAY_PORT_ANNOTATION))
        .context("the node publishes no gateway port")?;
    let ip = n
        .status
        .and_then(|s| s.addresses)
        .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address)
        .context("the node has no InternalIP")?;
    Ok(format!("{ip}:{port}"))
}

fn http_pod(name: &str, image: &str, labels: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "hello", "image": image,
            "ports": [{"name": "http", "containerPort": 8080}],
            "env": [{"name": "POD_NAME", "value": name}]}],
            "terminationGracePeriodSeconds": 1}
    }))?)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `skiff bench http`: a `wasi:http` pod through its node's gateway, directly and through a
/// Service, with `connections` clients; then `pods` pods of distinct modules on one node, the
/// latency of each one's first request once it is Ready, and the node's RSS.
pub async fn http(
    kubeconfig: &Path,
    module: &Path,
    connections: usize,
    duration: Duration,
    pods: usize,
    pid: Option<u32>,
) -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher;
    let peer = peer_proof(kubeconfig);

    let client = client_for(kubeconfig).await?;
    let raw = RawApi::from_kubeconfig(kubeconfig)?;
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let put = |reference: String, body: Vec<u8>| {
        let raw = raw.clone();
        async move {
            let path = format!("{}/{reference}", skiff_common::MODULES_PATH);
            let status = raw
                .request(reqwest::Method::PUT, &path, "application/wasm", body)
                .await?;
            anyhow::ensure!(
                (200..300).contains(&status),
                "pushing {reference} answered {status}"
            );
            Ok::<_, anyhow::Error>(())
        }
    };
    put("bench-http:latest".into(), bytes.clone()).await?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-http"},
        "spec": {"selector": {"skiff-bench": "http"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }))?;
    let _ = services
        .delete("bench-http", &DeleteParams::default())
        .await;
    let _ = pods_api
        .delete("bench-http", &DeleteParams::default())
        .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(pods_api.clone(), "bench-http", |p: Option<&Pod>| {
            p.is_none()
        }),
    )
    .await;
    services.create(&PostParams::default(), &svc).await?;
    pods_api
        .create(
            &PostParams::default(),
            &http_pod(
                "bench-http",
                "bench-http:latest",
                serde_json::json!({"skiff-bench": "http"}),
            )?,
        )
        .await?;
    let ready = await_condition(pods_api.clone(), "bench-http", |p: Option<&Pod>| {
        p.is_some_and(is_ready)
    });
    let pod = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .context("bench-http never became Ready")??
        .context("bench-http is gone")?;
    let node = pod
        .spec
        .and_then(|s| s.node_name)
        .context("bench-http is not bound")?;
    let gw = gateway_of(&client, &node).await?;
    eprintln!("# gateway of {node}: {gw}");
    // Let the Service's endpoints reach the gateway.
    let probe = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = probe
            .get(format!("http://{gw}/"))
            .header("host", "bench-http")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the Service never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http_load(
        "http-gateway-pod",
        &gw,
        "bench-http.default.pod",
        peer.as_deref(),
        connections,
        duration,
    )
    .await?;
    http_load(
        "http-gateway-service",
        &gw,
        "bench-http",
        None,
        connections,
        duration,
    )
    .await?;
    let _ = pods_api
        .delete("bench-http", &DeleteParams::default())
        .await;
    let _ = services
        .delete("bench-http", &DeleteParams::default())
        .await;

    if pods == 0 {
        return Ok(());
    }
    // Many pods of distinct modules on one node: the first request once each is Ready.
    let rss_before = pid.and_then(rss_kib);
    let t = Instant::now();
    let uploads = futures::stream::iter((0..pods).map(|i| {
        put(
            format!("bench-http-{i}:latest"),
            skiff_common::wasm::with_custom_section(&bytes, "skiff-bench", &i.to_le_bytes()),
        )
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    for u in uploads {
        u?;
    }
    eprintln!(
        "# pushed {pods} distinct modules in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let watch = {
        let (pods_api, seen, gw, peer) = (pods_api.clone(), seen.clone(), gw.clone(), peer.clone());
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .build()?;
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels("skiff-bench=http-many");
            let mut stream = watcher(pods_api, cfg).boxed();
            while let Some(Ok(ev)) = stream.next().await {
                let ps: Vec<Pod> = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    _ => continue,
                };
                for p in ps {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if !is_ready(&p) || !seen.lock().is_ok_and(|mut s| s.insert(name.clone())) {
                        continue;
                    }
                    let (http, gw, tx, peer) = (http.clone(), gw.clone(), tx.clone(), peer.clone());
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let mut req = http
                            .get(format!("http://{gw}/"))
                            .header("host", format!("{name}.default.pod"));
                        if let Some(p) = &peer {
                            req = req.header(skiff_common::token::GATEWAY_PEER_HEADER, p);
                        }
                        let r = req.send().await;
                        if let Ok(r) = r {
                            if r.status().is_success() && r.bytes().await.is_ok() {
                                let _ = tx.send(t.elapsed().as_secs_f64() * 1000.0);
                                return;
                            }
                        }
                        eprintln!("# first request to {name} failed");
                    });
                }
            }
        })
    };
    let t = Instant::now();
    let creates = futures::stream::iter((0..pods).map(|i| {
        let api = pods_api.clone();
        async move {
            let name = format!("bench-http-{i}");
            let pod = http_pod(
                &name,
                &format!("bench-http-{i}:latest"),
                serde_json::json!({"skiff-bench": "http-many"}),
            )?;
            api.create(&PostParams::default(), &pod).await?;
            Ok::<_, anyhow::Error>(())
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for c in creates {
        c?;
    }
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while first.len() < pods && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(ms)) => first.push(ms),
            _ => break,
        }
    }
    eprintln!(
        "# {} of {pods} pods Ready and answered in {:.1} s",
        first.len(),
        t.elapsed().as_secs_f64()
    );
    watch.abort();
    report("http-first-request", first);
    // Let the allocator return the compilers' scratch memory before reading RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let (Some(pid), Some(before)) = (pid, rss_before) {
        if let Some(after) = rss_kib(pid) {
            println!(
                "{}",
                serde_json::json!({"bench": "http-node-rss", "unit": "KiB",
                "before": before, "after": after, "pods": pods})
            );
            eprintln!(
                "# node RSS: {:.1} MiB before, {:.1} MiB with {pods} HTTP pods of distinct modules",
                before as f64 / 1024.0,
                after as f64 / 1024.0
            );
        }
    }
    let _ = pods_api
        .delete_collection(
            &DeleteParams::default(),
            &kube::api::ListParams::default().labels("skiff-bench=http-many"),
        )
        .await;
    Ok(())
}
