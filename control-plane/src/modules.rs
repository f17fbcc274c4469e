//! The built-in module store: WebAssembly modules as content-addressed blobs on disk
//! (`DIR/modules/blobs/sha256/<hex>`), tags as store objects (`skiff.dev/moduletags`), so tag
//! writes go through the one writer like every other write.
//!
//! Invariants: a blob's file name is the sha256 of its bytes; blobs are written to a temporary
//! file, synced, then renamed, so a reader never sees a partial blob.

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

/// The module store.
#[derive(Clone)]
pub struct ModuleStore {
    dir: PathBuf,
    store: Arc<dyn Storage>,
}

impl ModuleStore {
    /// A module store under `dir`, with tags kept in `store`.
    pub fn new(dir: &Path, store: Arc<dyn Storage>) -> Result<Self, ModuleError> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        Ok(ModuleStore {
            dir: dir.to_path_buf(),
            store,
        })
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
        let path = self.blob_path(&hex);
        if !path.exists() {
            let tmp = self
                .dir
                .join(format!("blobs/.upload-{}", uuid::Uuid::new_v4()));
            let data = bytes.clone();
            let dest = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &dest)?;
                Ok(())
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
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

    /// The bytes of a blob by `sha256:<hex>` digest.
    pub async fn blob(&self, digest: &str) -> Result<Bytes, ModuleError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ModuleError::NotFound(digest.into()));
        }
        match tokio::fs::read(self.blob_path(hex)).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ModuleError::NotFound(digest.into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
