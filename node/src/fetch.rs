//! Fetching modules named by a container's `image`: resolve the tag at the control plane's
//! module store, download the blob once per digest into the node's cache, verify its sha256.
//!
//! Invariants: a cached blob's name is its verified digest; a digest mismatch is an error,
//! never a cached file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use skiff_common::image::ImageRef;

/// Why a module could not be fetched (shown as `ErrImagePull` with this message).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The image reference does not parse.
    #[error("{0}")]
    BadReference(String),
    /// The module store has no such module.
    #[error("module {0} not found in the cluster's module store (push it with `skiff push {0} FILE.wasm`)")]
    NotFound(String),
    /// A registry pull was asked for, which this build does not do yet.
    #[error("pulling {0} from an OCI registry is not supported yet; push the module to the cluster with `skiff push`")]
    RegistryUnsupported(String),
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
}

/// A fetched module.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The bytes.
    pub bytes: Bytes,
    /// Whether it came from the local cache.
    pub cached: bool,
}

/// Fetches modules from the control plane with the node's credentials.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    server: String,
    token: String,
    cache: PathBuf,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    digest: String,
}

impl Fetcher {
    /// A fetcher against `server` with its own blob cache in `cache`.
    pub fn new(
        http: reqwest::Client,
        server: &str,
        token: &str,
        cache: &Path,
    ) -> Result<Self, FetchError> {
        std::fs::create_dir_all(cache)?;
        Ok(Fetcher {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            cache: cache.to_path_buf(),
        })
    }

    /// Resolve and fetch `image`. `always` re-resolves tags (imagePullPolicy Always); either way
    /// the blob is downloaded only when its digest is not cached.
    pub async fn fetch(&self, image: &str) -> Result<Fetched, FetchError> {
        let r = ImageRef::parse(image).map_err(|e| FetchError::BadReference(e.to_string()))?;
        let digest = match &r {
            ImageRef::Local { name, tag } => self.resolve(name, tag).await?,
            ImageRef::LocalDigest { digest, .. } => digest.clone(),
            ImageRef::Registry { .. } => {
                return Err(FetchError::RegistryUnsupported(image.to_string()))
            }
        };
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or(&digest)
            .to_string();
        let path = self.cache.join(&hex);
        if let Ok(b) = tokio::fs::read(&path).await {
            return Ok(Fetched {
                digest,
                bytes: Bytes::from(b),
                cached: true,
            });
        }
        let url = format!("{}{}/{digest}", self.server, skiff_common::BLOBS_PATH);
        let resp = self.get(&url, image).await?;
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
            bytes,
            cached: false,
        })
    }

    /// GET with the node's token; 404 means the module (`what`) is not there.
    async fn get(&self, url: &str, what: &str) -> Result<reqwest::Response, FetchError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| FetchError::Http(what.into(), e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound(what.to_string()));
        }
        if !resp.status().is_success() {
            return Err(FetchError::Http(
                what.into(),
                format!("HTTP {}", resp.status()),
            ));
        }
        Ok(resp)
    }

    async fn resolve(&self, name: &str, tag: &str) -> Result<String, FetchError> {
        let reference = format!("{name}:{tag}");
        let url = format!("{}{}/{reference}", self.server, skiff_common::MODULES_PATH);
        let resp = self.get(&url, &reference).await?;
        let d: Descriptor = resp
            .json()
            .await
            .map_err(|e| FetchError::Http(reference.clone(), e.to_string()))?;
        skiff_common::image::validate_digest(&d.digest)
            .map_err(|m| FetchError::Http(reference, m.to_string()))?;
        Ok(d.digest)
    }
}
