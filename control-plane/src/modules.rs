//! The built-in module store: WebAssembly modules as content-addressed blobs on disk
//! (`DIR/modules/blobs/sha256/<hex>`), tags as store objects (`skiff.dev/moduletags`), so tag
//! writes go through the one writer like every other write.
//!
//! With several API servers (on etcd), each keeps blobs on its own disk; a server asked for a
//! blob it lacks fetches it from the other live servers (their addresses from the identity
//! Leases of `crate::apiservers`, asking each for its local copy only), checks its digest and
//! keeps it.
//!
//! Invariants: a blob's file name is the sha256 of its bytes (a fetched blob whose bytes do not
//! hash to its name is dropped); blobs are written to a temporary file, synced, then renamed,
//! so a reader never sees a partial blob.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::store::{ObjectKey, Storage, StoreError, Write};

/// Storage key of module tags.
pub const TAGS_RESOURCE: &str = "skiff.dev/moduletags";

/// Errors of the module store.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The bytes are not a WebAssembly module or component.
    #[error("not a WebAssembly module or component (missing the \\0asm header)")]
    NotWasm,
    /// No such tag or blob.
    #[error("module {0} not found in the module store")]
    NotFound(String),
    /// Disk IO failed.
    #[error("module store IO: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error("module store: {0}")]
    Store(#[from] StoreError),
}

/// A resolved tag.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ModuleDescriptor {
    /// Module name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// How a server reaches the other API servers for the blobs it lacks.
#[derive(Clone)]
pub struct Peers {
    /// Verifies the peers against the cluster CA and presents this server's client certificate.
    pub http: reqwest::Client,
    /// This server's `host:port` (not asked).
    pub me: String,
}

/// The module store.
#[derive(Clone)]
pub struct ModuleStore {
    dir: PathBuf,
    store: Arc<dyn Storage>,
    peers: Option<Peers>,
}

/// Largest module accepted by `skiff push`, and taken from a peer.
pub const MAX_MODULE: usize = 256 * 1024 * 1024;

impl ModuleStore {
    /// A module store under `dir`, with tags kept in `store`.
    pub fn new(dir: &Path, store: Arc<dyn Storage>) -> Result<Self, ModuleError> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        Ok(ModuleStore {
            dir: dir.to_path_buf(),
            store,
            peers: None,
        })
    }

    /// Fetch missing blobs from the other API servers.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Write `bytes` as the blob `hex` (temporary file, sync, rename).
    async fn keep(&self, hex: &str, bytes: Bytes) -> Result<(), ModuleError> {
        let dest = self.blob_path(hex);
        let tmp = self
            .dir
            .join(format!("blobs/.upload-{}", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(())
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Store `bytes` and point `name:tag` at them.
    pub async fn push(
        &self,
        name: &str,
        tag: &str,
        bytes: Bytes,
    ) -> Result<ModuleDescriptor, ModuleError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(ModuleError::NotWasm);
        }
        let hex = hex::encode(Sha256::digest(&bytes));
        if !self.blob_path(&hex).exists() {
            self.keep(&hex, bytes.clone()).await?;
        }
        let desc = ModuleDescriptor {
            name: name.into(),
            tag: tag.into(),
            digest: format!("sha256:{hex}"),
            size: bytes.len() as u64,
        };
        let data = Bytes::from(
            serde_json::to_vec(&json!(desc)).map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        let key = ObjectKey::new(TAGS_RESOURCE, "", &format!("{name}:{tag}"));
        match self
            .store
            .write(Write::Create {
                key: key.clone(),
                data: data.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(StoreError::AlreadyExists) => {
                self.store
                    .write(Write::Update {
                        key,
                        data,
                        precondition: None,
                    })
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(desc)
    }

    /// Resolve `name:tag`.
    pub async fn resolve(&self, name: &str, tag: &str) -> Result<ModuleDescriptor, ModuleError> {
        let key = ObjectKey::new(TAGS_RESOURCE, "", &format!("{name}:{tag}"));
        match self.store.get(&key).await {
            Ok(o) => serde_json::from_slice(&o.data)
                .map_err(|e| ModuleError::Io(std::io::Error::other(e.to_string()))),
            Err(StoreError::NotFound) => Err(ModuleError::NotFound(format!("{name}:{tag}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of a blob by `sha256:<hex>` digest: from this server's disk, else (unless
    /// `local_only`) from another API server's.
    pub async fn blob(&self, digest: &str, local_only: bool) -> Result<Bytes, ModuleError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ModuleError::NotFound(digest.into()));
        }
        match tokio::fs::read(self.blob_path(hex)).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &self.peers {
                Some(peers) if !local_only => self.fetch_from_peers(peers, hex).await,
                _ => Err(ModuleError::NotFound(digest.into())),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The addresses of the other live API servers, from their identity Leases.
    async fn peer_addresses(&self, me: &str) -> Result<Vec<String>, ModuleError> {
        use crate::apiservers::{ADDRESS_ANNOTATION, IDENTITY_LABEL};
        let leases = self
            .store
            .list("coordination.k8s.io/leases", Some("kube-system"))
            .await?;
        Ok(leases
            .objects
            .iter()
            .filter_map(|o| serde_json::from_slice::<serde_json::Value>(&o.data).ok())
            .filter(|l| l["metadata"]["labels"][IDENTITY_LABEL] == "kube-apiserver")
            .filter_map(|l| {
                l["metadata"]["annotations"][ADDRESS_ANNOTATION]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|a| a != me)
            .collect())
    }

    /// Ask each other server for its own copy of blob `hex`; keep the first whose bytes hash to
    /// `hex`.
    async fn fetch_from_peers(&self, peers: &Peers, hex: &str) -> Result<Bytes, ModuleError> {
        for address in self.peer_addresses(&peers.me).await? {
            let url = format!("https://{address}/skiff/v1/blobs/sha256:{hex}?local=true");
            match fetch_bounded(&peers.http, &url).await {
                Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == hex => {
                    self.keep(hex, bytes.clone()).await?;
                    tracing::info!(digest = %hex, from = %address, "module blob fetched from a peer");
                    return Ok(bytes);
                }
                Ok(_) => tracing::warn!(from = %address, "a peer's blob does not match its digest"),
                Err(e) => tracing::debug!(from = %address, error = %e, "asking a peer for a blob"),
            }
        }
        Err(ModuleError::NotFound(format!("sha256:{hex}")))
    }
}

/// GET `url`, refusing an answer that is not 200 or larger than `MAX_MODULE`.
async fn fetch_bounded(http: &reqwest::Client, url: &str) -> Result<Bytes, String> {
    let mut resp = http
        .get(url)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_MODULE {
            return Err(format!("larger than {MAX_MODULE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}
