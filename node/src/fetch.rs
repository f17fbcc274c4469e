//! Fetching modules named by a container's `image`, as its `imagePullPolicy` says: resolve the
//! tag at the control plane's module store, or at the OCI registry the image names
//! (`crate::registry`) (`Always`, or the first time for `IfNotPresent`),
//! download the blob once per digest into the node's cache, verify its sha256. What each tag
//! resolved to is remembered (in memory and under `tags/`), so `IfNotPresent` and `Never` start
//! a module the node has without asking.
//!
//! Pods pulling the same image at once share one pull (one request to the store or registry).
//!
//! Invariants: a cached blob's name is its verified digest; a digest mismatch is an error,
//! never a cached file; a remembered tag names a digest the store gave for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
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
    #[error("{0} is not a WebAssembly OCI artifact (a config {WASM_CONFIG} and one layer {WASM_LAYER}): found {1}", WASM_CONFIG = crate::registry::WASM_CONFIG, WASM_LAYER = crate::registry::WASM_LAYER)]
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
    /// What each tag named when this node last resolved it (also kept on disk under
    /// `tags/`, so `IfNotPresent` survives an agent restart).
    tags: Arc<Mutex<HashMap<String, String>>>,
    /// OCI registries (`crate::registry`).
    registries: Arc<crate::registry::Registries>,
    /// Pulls in flight, by image: a second pod pulling the same image waits for the first.
    inflight: Arc<Mutex<HashMap<String, Pulling>>>,
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
            registries: Arc::new(crate::registry::Registries::new(insecure_registries)),
            inflight: Arc::default(),
        })
    }

    /// The module `image` names, if the node has it and `policy` lets the node use it without
    /// asking the module store: a digest whose blob is cached, or a tag this node resolved
    /// before (`IfNotPresent`, `Never`). None means a pull is needed (or, for `Never`, that
    /// the container cannot start).
    pub fn present(&self, image: &str, policy: PullPolicy) -> Option<Fetched> {
        if policy == PullPolicy::Always {
            return None;
        }
        let digest = match ImageRef::parse(image).ok()? {
            ImageRef::Local { name, tag } => self.known_tag(&format!("{name}:{tag}"))?,
            ImageRef::LocalDigest { digest, .. } => digest,
            ImageRef::Registry { reference, .. } if reference.starts_with("sha256:") => reference,
            ImageRef::Registry { .. } => self.known_tag(image.trim())?,
        };
        let path = self.blob_path(&digest);
        path.is_file().then(|| Fetched {
            digest,
            source: Source::File(path),
            cached: true,
        })
    }

    /// Pull `image`: resolve a tag at the module store or the registry (every time: this is
    /// what `Always` asks for), then download the blob unless its digest is cached. Pods that
    /// pull the same image at once share one pull.
    pub async fn pull(&self, image: &str) -> Result<Fetched, FetchError> {
        let key = image.trim().to_string();
        let shared = {
            let mut inflight = self
                .inflight
                .lock()
                .map_err(|_| FetchError::Http(key.clone(), "the fetcher is gone".into()))?;
            match inflight.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let (this, k) = (self.clone(), key.clone());
                    let pull = async move {
                        let got = this.pull_once(&k).await.map_err(Arc::new);
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

    async fn pull_once(&self, image: &str) -> Result<Fetched, FetchError> {
        let r = ImageRef::parse(image).map_err(|e| FetchError::BadReference(e.to_string()))?;
        let digest = match &r {
            ImageRef::Local { name, tag } => self.resolve(name, tag).await?,
            ImageRef::LocalDigest { digest, .. } => digest.clone(),
            ImageRef::Registry { .. } => return self.pull_from_registry(image.trim()).await,
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
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != hex {
            return Err(FetchError::DigestMismatch {
                reference: image.into(),
                expected: digest,
                actual: format!("sha256:{actual}"),
            });
        }
        let tmp = self.cache.join(format!(".{hex}.tmp"));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(Fetched {
            digest,
            source: Source::Bytes(bytes),
            cached: false,
        })
    }

    /// Pull `image` from its registry (resolving its tag there every time), and keep the
    /// module under its digest and what the tag named.
    async fn pull_from_registry(&self, image: &str) -> Result<Fetched, FetchError> {
        let (digest, bytes) = self.registries.pull(image).await?;
        let path = self.blob_path(&digest);
        let cached = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file());
        if !cached {
            let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
            let tmp = self.cache.join(format!(".{hex}.tmp"));
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await?;
        }
        self.remember(image, &digest).await;
        Ok(Fetched {
            digest,
            source: Source::Bytes(bytes),
            cached,
        })
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

    /// What `reference` resolved to when this node last asked (memory, then disk).
    fn known_tag(&self, reference: &str) -> Option<String> {
        if let Some(d) = self.tags.lock().ok()?.get(reference) {
            return Some(d.clone());
        }
        let d = std::fs::read_to_string(self.tag_path(reference)).ok()?;
        let d = d.trim().to_string();
        skiff_common::image::validate_digest(&d).ok()?;
        self.tags.lock().ok()?.insert(reference.into(), d.clone());
        Some(d)
    }

    /// Remember that `reference` now names `digest` (written to disk only when it changed).
    /// Best effort: a node that cannot write it resolves the tag again after a restart.
    async fn remember(&self, reference: &str, digest: &str) {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let changed = self
            .tags
            .lock()
            .map(|mut t| t.insert(reference.into(), digest.into()).as_deref() != Some(digest))
            .unwrap_or(true);
        if !changed {
            return;
        }
        let path = self.tag_path(reference);
        // Pods starting together may write the same tag: each through its own file.
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{n}.tmp"));
        let written = async {
            tokio::fs::write(&tmp, digest).await?;
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
        self.remember(&reference, &d.digest).await;
        Ok(d.digest)
    }
}
