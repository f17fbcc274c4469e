//! Fetching modules named by a container's `image`, as its `imagePullPolicy` says: resolve the
//! tag at the control plane's module store, or at the OCI registry the image names
//! (`crate::registry`) (`Always`, or the first time for `IfNotPresent`),
//! download the blob once per digest into the node's cache, verify its sha256. What each tag
//! resolved to is remembered (in memory and under `tags/`), so `IfNotPresent` and `Never` start
//! a module the node has without asking.
//!
//! Pods pulling the same image with the same credentials at once share one pull (one request
//! to the store or registry).
//!
//! A registry module is used without asking the registry only by a pod that could pull it:
//! its image pulled anonymously before, or with one of the pod's own credentials (Kubernetes'
//! "ensure secret pulled images"); any other pod pulls it again (the manifest; the blob stays
//! cached), so one tenant's private module never starts for another by `IfNotPresent`.
//!
//! Invariants: a cached blob's name is its verified digest; a digest mismatch is an error,
//! never a cached file; a remembered tag names a digest the store gave for it, with who pulled
//! it (identities are hashes, never secrets).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
use skiff_common::dockerconfig::Credential;
use skiff_common::image::{ImageRef, PullPolicy};

use crate::runtime::Source;

/// The directory of the cache that keeps what tags resolved to.
const TAGS: &str = "tags";

/// Why a module could not be fetched (shown as `ErrImagePull` with this message).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The image reference does not parse.
    #[error("{0}")]
    BadReference(String),
    /// The module store has no such module.
    #[error("module {0} not found in the cluster's module store (push it with `skiff push {0} FILE.wasm`)")]
    NotFound(String),
    /// The registry refused or failed the pull (its own words).
    #[error("pulling {0}: {1}")]
    Registry(String, String),
    /// The registry holds something that is not a wasm module.
    #[error("{0} is not a WebAssembly image (the CNCF wasm artifact: a config {WASM_CONFIG} and one layer {WASM_LAYER}; or a wasi/wasm image whose one tar layer holds a .wasm file): found {1}", WASM_CONFIG = crate::registry::WASM_CONFIG, WASM_LAYER = crate::registry::WASM_LAYER)]
    NotWasm(String, String),
    /// The bytes do not match the digest.
    #[error("digest mismatch for {reference}: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    /// Talking to the API server failed.
    #[error("fetching {0}: {1}")]
    Http(String, String),
    /// Local cache IO failed.
    #[error("module cache: {0}")]
    Io(#[from] std::io::Error),
    /// The pull another pod started for the same image failed so.
    #[error("{0}")]
    Shared(Arc<FetchError>),
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `bytes` are what `expected` names, or a `DigestMismatch` for `reference`.
pub(crate) fn verify(reference: &str, expected: &str, bytes: &[u8]) -> Result<(), FetchError> {
    let actual = sha256(bytes);
    if actual == expected {
        return Ok(());
    }
    Err(FetchError::DigestMismatch {
        reference: reference.into(),
        expected: expected.into(),
        actual,
    })
}

/// A module on the node.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its bytes: the verified blob in the node's cache (or the bytes just downloaded).
    pub source: Source,
    /// Whether the blob was in the node's cache already.
    pub cached: bool,
}

/// Fetches modules from the control plane with the node's credentials (the client certificate
/// its HTTP client presents).
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    /// The API servers (`https://host:port`); each request tries them from the one that
    /// answered last.
    servers: Arc<Vec<String>>,
    preferred: Arc<std::sync::atomic::AtomicUsize>,
    cache: PathBuf,
    /// What each tag named when this node last resolved it, and who pulled it (also kept on
    /// disk under `tags/`, so `IfNotPresent` survives an agent restart).
    tags: Arc<Mutex<HashMap<String, Known>>>,
    /// OCI registries (`crate::registry`).
    registries: Arc<crate::registry::Registries>,
    /// Pulls in flight, by image: a second pod pulling the same image waits for the first.
    inflight: Arc<Mutex<HashMap<String, Pulling>>>,
    /// How many containers hold each digest ([`Fetcher::hold`]): never collected.
    in_use: Arc<Mutex<HashMap<String, usize>>>,
    /// Notified when a pull put a new module in the cache.
    pub added: Arc<tokio::sync::Notify>,
}

/// A module in the node's cache (`crate::modulegc`).
#[derive(Clone, Debug)]
pub struct CachedModule {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The blob's size.
    pub bytes: u64,
    /// When a pod last used it (the blob's modification time, set at each use).
    pub last_used: std::time::SystemTime,
    /// Whether a container holds it.
    pub in_use: bool,
    /// The references that resolved to it (`name:tag`, `host/repo:tag`, `host/repo@sha256:..`).
    pub names: Vec<String>,
}

/// A container's hold on a module: while it lives, the module is not collected.
pub struct Held {
    in_use: Arc<Mutex<HashMap<String, usize>>>,
    digest: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut m) = self.in_use.lock() {
            if let Some(n) = m.get_mut(&self.digest) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.digest);
                }
            }
        }
    }
}

/// What a tag resolved to, and the identities that pulled it from a registry
/// (`crate::registry::identity`, or `anonymous`; empty for the module store).
#[derive(Clone, Debug, Default)]
struct Known {
    digest: String,
    by: BTreeSet<String>,
}

/// A pull in flight, shared by every pod that asks for the same image meanwhile.
type Pulling = Shared<BoxFuture<'static, Result<Fetched, Arc<FetchError>>>>;

#[derive(serde::Deserialize)]
struct Descriptor {
    digest: String,
}

impl Fetcher {
    /// A fetcher against `servers` (any of which may answer) with its own blob cache in
    /// `cache`; `http` authenticates.
    pub fn new(
        http: reqwest::Client,
        servers: &[String],
        cache: &Path,
        insecure_registries: &[String],
        registry_roots: &[Vec<u8>],
    ) -> Result<Self, FetchError> {
        std::fs::create_dir_all(cache.join(TAGS))?;
        Ok(Fetcher {
            http,
            servers: Arc::new(
                servers
                    .iter()
                    .map(|s| s.trim_end_matches('/').to_string())
                    .collect(),
            ),
            preferred: Arc::default(),
            cache: cache.to_path_buf(),
            tags: Arc::default(),
            registries: Arc::new(crate::registry::Registries::new(
                insecure_registries,
                registry_roots,
            )),
            inflight: Arc::default(),
            in_use: Arc::default(),
            added: Arc::default(),
        })
    }

    /// Keep `digest` from being collected while the returned hold lives.
    pub fn hold(&self, digest: &str) -> Held {
        if let Ok(mut m) = self.in_use.lock() {
            *m.entry(digest.to_string()).or_default() += 1;
        }
        Held {
            in_use: self.in_use.clone(),
            digest: digest.to_string(),
        }
    }

    /// The modules in the cache, with the references that name them.
    pub fn cached(&self) -> Vec<CachedModule> {
        let in_use = self.in_use.lock().map(|m| m.clone()).unwrap_or_default();
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        for entry in std::fs::read_dir(self.cache.join(TAGS))
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = entry.file_name();
            let Some(reference) = file
                .to_str()
                .and_then(|n| hex::decode(n).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if let Some(k) = self.known_tag(&reference) {
                names.entry(k.digest).or_default().push(reference);
            }
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.cache)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(hex) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            let digest = format!("sha256:{hex}");
            if skiff_common::image::validate_digest(&digest).is_err() {
                continue;
            }
            // Never follows a link: a blob is a regular file the node wrote.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mut refs = names.remove(&digest).unwrap_or_default();
            refs.sort();
            out.push(CachedModule {
                bytes: meta.len(),
                last_used: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                in_use: in_use.contains_key(&digest),
                names: refs,
                digest,
            });
        }
        out
    }

    /// Remove a module from the cache, and what tags resolved to it, unless a container took
    /// hold of it meanwhile (then false).
    pub fn remove(&self, m: &CachedModule) -> bool {
        let held = self.in_use.lock().map(|u| u.contains_key(&m.digest));
        if held.unwrap_or(true) {
            return false;
        }
        for reference in &m.names {
            if let Ok(mut t) = self.tags.lock() {
                t.remove(reference);
            }
            let _ = std::fs::remove_file(self.tag_path(reference));
        }
        std::fs::remove_file(self.blob_path(&m.digest)).is_ok()
    }

    /// Mark the module at `path` used now (the cache's least recently used order).
    fn touch(path: &Path) {
        if let Ok(f) = std::fs::File::options().write(true).open(path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// The module `image` names, if the node has it and `policy` lets the node use it without
    /// asking the module store: a digest whose blob is cached, or a tag this node resolved
    /// before (`IfNotPresent`, `Never`); from a registry, only if it was pulled anonymously or
    /// with one of `creds` (the pod's). None means a pull is needed (or, for `Never`, that
    /// the container cannot start).
    pub fn present(
        &self,
        image: &str,
        policy: PullPolicy,
        creds: &[Credential],
    ) -> Option<Fetched> {
        if policy == PullPolicy::Always {
            return None;
        }
        let digest = match ImageRef::parse(image).ok()? {
            ImageRef::Local { name, tag } => self.known_tag(&format!("{name}:{tag}"))?.digest,
            ImageRef::LocalDigest { digest, .. } => digest,
            ImageRef::Registry {
                host, repository, ..
            } => {
                let known = self.known_tag(image.trim())?;
                let mine = identities(creds, &host, &repository);
                let allowed = known.by.contains(crate::registry::ANONYMOUS)
                    || mine.iter().any(|i| known.by.contains(i));
                if !allowed {
                    return None;
                }
                known.digest
            }
        };
        let path = self.blob_path(&digest);
        if !path.is_file() {
            return None;
        }
        Self::touch(&path);
        Some(Fetched {
            digest,
            source: Source::File(path),
            cached: true,
        })
    }

    /// Pull `image`: resolve a tag at the module store or the registry (every time: this is
    /// what `Always` asks for), then download the blob unless its digest is cached. A registry
    /// is asked with the first of `creds` that matches the image and works. Pods that pull the
    /// same image with the same credentials at once share one pull.
    pub async fn pull(&self, image: &str, creds: &[Credential]) -> Result<Fetched, FetchError> {
        let image = image.trim();
        let mut key = image.to_string();
        if let Ok(ImageRef::Registry {
            host, repository, ..
        }) = ImageRef::parse(image)
        {
            for i in identities(creds, &host, &repository) {
                key.push('\n');
                key.push_str(&i);
            }
        }
        let shared = {
            let mut inflight = self
                .inflight
                .lock()
                .map_err(|_| FetchError::Http(key.clone(), "the fetcher is gone".into()))?;
            match inflight.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let (this, k) = (self.clone(), key.clone());
                    let (image, creds) = (image.to_string(), creds.to_vec());
                    let pull = async move {
                        let got = this.pull_once(&image, &creds).await.map_err(Arc::new);
                        if let Ok(mut m) = this.inflight.lock() {
                            m.remove(&k);
                        }
                        got
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key.clone(), pull.clone());
                    pull
                }
            }
        };
        shared.await.map_err(FetchError::Shared)
    }

    async fn pull_once(&self, image: &str, creds: &[Credential]) -> Result<Fetched, FetchError> {
        let r = ImageRef::parse(image).map_err(|e| FetchError::BadReference(e.to_string()))?;
        let digest = match &r {
            ImageRef::Local { name, tag } => self.resolve(name, tag).await?,
            ImageRef::LocalDigest { digest, .. } => digest.clone(),
            ImageRef::Registry { .. } => return self.pull_from_registry(image, creds).await,
        };
        // The digest names a file of the cache: only `sha256:<64 hex>` may, whoever said it.
        skiff_common::image::validate_digest(&digest)
            .map_err(|e| FetchError::BadReference(format!("{image}: {digest:?}: {e}")))?;
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or(&digest)
            .to_string();
        let path = self.blob_path(&digest);
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            Self::touch(&path);
            return Ok(Fetched {
                digest,
                source: Source::File(path),
                cached: true,
            });
        }
        let resp = self
            .get(&format!("{}/{digest}", skiff_common::BLOBS_PATH), image)
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| FetchError::Http(image.into(), e.to_string()))?;
        verify(image, &digest, &bytes)?;
        let tmp = self.cache.join(format!(".{hex}.tmp"));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        self.added.notify_one();
        Ok(Fetched {
            digest,
            source: Source::Bytes(bytes),
            cached: false,
        })
    }

    /// Pull `image` from its registry (resolving its tag there every time), and keep the
    /// module under its digest and what the tag named.
    async fn pull_from_registry(
        &self,
        image: &str,
        creds: &[Credential],
    ) -> Result<Fetched, FetchError> {
        let have = |digest: &str| self.blob_path(digest).is_file();
        let crate::registry::Pulled { digest, bytes, by } =
            self.registries.pull(image, creds, &have).await?;
        let path = self.blob_path(&digest);
        let fetched = match bytes {
            Some(bytes) if !path.is_file() => {
                let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
                let tmp = self.cache.join(format!(".{hex}.tmp"));
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::rename(&tmp, &path).await?;
                self.added.notify_one();
                Fetched {
                    digest: digest.clone(),
                    source: Source::Bytes(bytes),
                    cached: false,
                }
            }
            _ => {
                Self::touch(&path);
                Fetched {
                    digest: digest.clone(),
                    source: Source::File(path),
                    cached: true,
                }
            }
        };
        self.remember(image, &digest, Some(&by)).await;
        Ok(fetched)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.cache
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// The file that keeps what `reference` (`name:tag`) last resolved to: named by the hex of
    /// the reference, as names may hold `/`.
    fn tag_path(&self, reference: &str) -> PathBuf {
        self.cache.join(TAGS).join(hex::encode(reference))
    }

    /// What `reference` resolved to when this node last asked (memory, then disk: the
    /// digest's line, then one line per identity that pulled it).
    fn known_tag(&self, reference: &str) -> Option<Known> {
        if let Some(k) = self.tags.lock().ok()?.get(reference) {
            return Some(k.clone());
        }
        let text = std::fs::read_to_string(self.tag_path(reference)).ok()?;
        let mut lines = text.lines().map(str::trim);
        let digest = lines.next()?.to_string();
        skiff_common::image::validate_digest(&digest).ok()?;
        let known = Known {
            digest,
            by: lines.filter(|l| !l.is_empty()).map(String::from).collect(),
        };
        self.tags
            .lock()
            .ok()?
            .insert(reference.into(), known.clone());
        Some(known)
    }

    /// Remember that `reference` now names `digest`, pulled by `by` (written to disk only when
    /// it changed). A new digest forgets who pulled the old one. Best effort: a node that
    /// cannot write it resolves the tag again after a restart.
    async fn remember(&self, reference: &str, digest: &str, by: Option<&str>) {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let known = self.known_tag(reference);
        let mut next = match known {
            Some(k) if k.digest == digest => k,
            _ => Known {
                digest: digest.into(),
                by: BTreeSet::new(),
            },
        };
        let changed = {
            let Ok(mut tags) = self.tags.lock() else {
                return;
            };
            let changed = by.is_some_and(|b| next.by.insert(b.to_string()))
                || tags.get(reference).is_none_or(|k| k.digest != digest);
            tags.insert(reference.into(), next.clone());
            changed
        };
        if !changed {
            return;
        }
        let mut text = next.digest.clone();
        for b in std::mem::take(&mut next.by) {
            text.push('\n');
            text.push_str(&b);
        }
        let path = self.tag_path(reference);
        // Pods starting together may write the same tag: each through its own file.
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{n}.tmp"));
        let written = async {
            tokio::fs::write(&tmp, &text).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(%reference, error = %e, "could not keep what the tag resolved to");
        }
    }

    /// GET `path` as the node from the first server that has it, starting with the one that
    /// answered last: one that cannot be reached, or has not got it (each server keeps the
    /// blobs pushed to it), sends the request on to the next. 404 everywhere means the module
    /// (`what`) is not there.
    async fn get(&self, path: &str, what: &str) -> Result<reqwest::Response, FetchError> {
        use std::sync::atomic::Ordering;
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = FetchError::Http(what.into(), "no API server given".into());
        for k in 0..n {
            let i = (first + k) % n;
            let url = format!("{}{path}", self.servers[i]);
            let resp = match self.http.get(&url).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = FetchError::Http(what.into(), e.to_string());
                    continue;
                }
            };
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                last = FetchError::NotFound(what.to_string());
                continue;
            }
            if !resp.status().is_success() {
                return Err(FetchError::Http(
                    what.into(),
                    format!("HTTP {}", resp.status()),
                ));
            }
            self.preferred.store(i, Ordering::Relaxed);
            return Ok(resp);
        }
        Err(last)
    }

    async fn resolve(&self, name: &str, tag: &str) -> Result<String, FetchError> {
        let reference = format!("{name}:{tag}");
        let resp = self
            .get(
                &format!("{}/{reference}", skiff_common::MODULES_PATH),
                &reference,
            )
            .await?;
        let d: Descriptor = resp
            .json()
            .await
            .map_err(|e| FetchError::Http(reference.clone(), e.to_string()))?;
        skiff_common::image::validate_digest(&d.digest)
            .map_err(|m| FetchError::Http(reference.clone(), m.to_string()))?;
        self.remember(&reference, &d.digest, None).await;
        Ok(d.digest)
    }
}

/// The identities of the credentials that serve `repository` on `host`.
fn identities(creds: &[Credential], host: &str, repository: &str) -> Vec<String> {
    skiff_common::dockerconfig::lookup(creds, host, repository)
        .into_iter()
        .map(crate::registry::identity)
        .collect()
}
