//! Modules from OCI registries (an `image` with a registry host): the distribution API's pull
//! side (`http`: bounded reads, token auth and `WWW-Authenticate` challenges), HTTPS with the
//! system roots plus the CAs the node was given (`--registry-ca`), plain HTTP only for the
//! registries the node was started with as `--insecure-registry HOST:PORT`; the maintained
//! `oci-client` crate for references and manifest types. A multi-platform index selects
//! `wasi/wasm`.
//!
//! Accepted: the CNCF wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one layer
//! `application/wasm`), whose module's digest is its layer's; and an image for `wasi/wasm` whose
//! one layer is a tar (plain or gzip) holding one `.wasm` file, as `docker buildx --platform
//! wasi/wasm` builds for runwasi, whose module's digest is the file's. Anything else is refused
//! with what was found. A layer larger than `MAX_MODULE` is refused before it is read, reading
//! stops at the size the manifest gave, whatever the registry sends, and the layer's digest is
//! checked; a tar is unpacked no further than `tarlayer::MAX_UNPACKED`.
//!
//! Bounds against a hostile registry (any pod author may name one): every answer is read with
//! a bound (`http`): a manifest at most `MAX_MANIFEST`, an index followed once, the config blob
//! (needed only for a tar image's platform) at most `MAX_CONFIG`, a layer no further than its
//! manifest's size; each checked against its digest. Blobs come from the registry only: a
//! layer's `urls` are never followed. A wasm artifact's layer the node has is not downloaded
//! again.
//!
//! Credentials: a pull uses the credentials that match the image (`skiff_common::dockerconfig`),
//! most specific first, else none. Each identity (anonymous, or one key/user/password) has its
//! own client and remembered headers, so a token one pod's credentials earned never serves
//! another's pull.

mod http;
mod tarlayer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::Reference;
use sha2::{Digest, Sha256};
use skiff_common::dockerconfig::{self, Credential};

use crate::fetch::FetchError;

/// The media type of a wasm layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The media type of a wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The largest module (or tar layer) taken from a registry.
pub const MAX_MODULE: i64 = 256 << 20;
/// The largest manifest taken (containerd's bound).
const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config taken.
const MAX_CONFIG: i64 = 1 << 20;
/// The manifest types asked for.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The most clients kept (one per identity that pulled); past it they are all dropped.
const MAX_CLIENTS: usize = 256;
/// The identity of a pull without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// The tar layer types an image may hold its module in, and whether each is gzipped.
const TAR_LAYERS: &[(&str, bool)] = &[
    ("application/vnd.oci.image.layer.v1.tar", false),
    ("application/vnd.oci.image.layer.v1.tar+gzip", true),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", true),
];
/// The config types of such an image.
const IMAGE_CONFIGS: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The index entry of a wasm module (`wasi/wasm`; `wasip1`/`wasip2` as some tools write it).
fn wasm_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| is_wasm(&p.os.to_string(), &p.architecture.to_string()))
        })
        .map(|e| e.digest.clone())
}

fn is_wasm(os: &str, architecture: &str) -> bool {
    architecture == "wasm" && matches!(os, "wasi" | "wasip1" | "wasip2")
}

/// Who pulled: the identity of a credential (a hash: never the secret itself).
pub fn identity(c: &Credential) -> String {
    let mut h = Sha256::new();
    for part in [&c.key, &c.username, &c.password] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// A module pulled from a registry.
pub struct Pulled {
    /// `sha256:<hex>` of the module's bytes.
    pub digest: String,
    /// Its bytes; `None` when the node has that digest already (the layer was not read).
    pub bytes: Option<Bytes>,
    /// Who pulled it: [`ANONYMOUS`] or an [`identity`].
    pub by: String,
}

/// How the module sits in the image.
enum Layout {
    /// The layer is the module.
    Artifact,
    /// The layer is a tar (gzipped or not) holding it.
    Tar { gzip: bool },
}

/// The registries' clients of a node.
pub struct Registries {
    insecure: Vec<String>,
    roots: Vec<Vec<u8>>,
    clients: Mutex<HashMap<String, Arc<http::Clients>>>,
}

impl Registries {
    /// Clients that speak plain HTTP to the `insecure` registries (`host:port`) only and trust
    /// the system roots and `roots` (PEM).
    pub fn new(insecure: &[String], roots: &[Vec<u8>]) -> Registries {
        Registries {
            insecure: insecure.to_vec(),
            roots: roots.to_vec(),
            clients: Mutex::default(),
        }
    }

    /// The client of one identity.
    fn client(&self, by: &str) -> Arc<http::Clients> {
        let make = || Arc::new(http::Clients::new(&self.roots));
        let Ok(mut clients) = self.clients.lock() else {
            return make();
        };
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(by) {
            clients.clear();
        }
        clients.entry(by.to_string()).or_insert_with(make).clone()
    }

    /// Pull the module `image` names, with the first of `creds` that matches it and works
    /// (none: anonymously). A wasm artifact's layer whose digest `have` says the node has is
    /// not read.
    pub async fn pull(
        &self,
        image: &str,
        creds: &[Credential],
        have: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Pulled, FetchError> {
        let reference: Reference = image
            .parse()
            .map_err(|e| FetchError::BadReference(format!("{image}: {e}")))?;
        let matching = dockerconfig::lookup(creds, reference.registry(), reference.repository());
        if matching.is_empty() {
            return self
                .pull_as(image, &reference, &None, ANONYMOUS, have)
                .await;
        }
        let mut last = None;
        for c in matching {
            let basic = Some((c.username.clone(), c.password.clone()));
            match self
                .pull_as(image, &reference, &basic, &identity(c), have)
                .await
            {
                Ok(p) => return Ok(p),
                Err(FetchError::Registry(i, e)) => {
                    last = Some(FetchError::Registry(
                        i,
                        format!("as {:?} (credentials for {}): {e}", c.username, c.key),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| FetchError::Registry(image.into(), "no credentials".into())))
    }

    async fn pull_as(
        &self,
        image: &str,
        reference: &Reference,
        basic: &http::Basic,
        by: &str,
        have: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Pulled, FetchError> {
        let clients = self.client(by);
        let host = reference.resolve_registry();
        let repo = http::Repo {
            clients: &clients,
            scheme: if self.insecure.iter().any(|h| h == host) {
                "http"
            } else {
                "https"
            },
            host,
            repository: reference.repository(),
            basic,
        };
        let not_wasm = |what: String| FetchError::NotWasm(image.to_string(), what);
        let manifest = manifest(&repo, image, reference).await?;
        let config_type = manifest.config.media_type.as_str();
        let layers: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        let [layer] = manifest.layers.as_slice() else {
            return Err(not_wasm(format!(
                "{} layers ({})",
                layers.len(),
                layers.join(", ")
            )));
        };
        // A wasm artifact's config says nothing the node needs; an image's says its platform.
        let config = if config_type == WASM_CONFIG {
            String::new()
        } else {
            if manifest.config.size > MAX_CONFIG || manifest.config.size < 0 {
                return Err(not_wasm(format!(
                    "a config of {} bytes (at most {MAX_CONFIG})",
                    manifest.config.size
                )));
            }
            skiff_common::image::validate_digest(&manifest.config.digest).map_err(|e| {
                FetchError::BadReference(format!("{image}: {}: {e}", manifest.config.digest))
            })?;
            let config = read_blob(&repo, image, &manifest.config).await?;
            String::from_utf8_lossy(&config).into_owned()
        };
        let layout = layout(config_type, &config, &layer.media_type).map_err(not_wasm)?;
        if layer.size > MAX_MODULE || layer.size < 0 {
            return Err(not_wasm(format!(
                "a layer of {} bytes (at most {MAX_MODULE})",
                layer.size
            )));
        }
        skiff_common::image::validate_digest(&layer.digest)
            .map_err(|e| FetchError::BadReference(format!("{image}: {}: {e}", layer.digest)))?;
        if matches!(layout, Layout::Artifact) && have(&layer.digest) {
            return Ok(Pulled {
                digest: layer.digest.clone(),
                bytes: None,
                by: by.to_string(),
            });
        }
        let blob = read_blob(&repo, image, layer).await?;
        let (digest, bytes) = match layout {
            Layout::Artifact => (layer.digest.clone(), blob),
            Layout::Tar { gzip } => {
                let module =
                    tokio::task::spawn_blocking(move || tarlayer::module_from_tar(&blob, gzip))
                        .await
                        .map_err(|e| FetchError::Registry(image.into(), e.to_string()))?
                        .map_err(not_wasm)?;
                let digest = crate::fetch::sha256(&module);
                (digest, Bytes::from(module))
            }
        };
        Ok(Pulled {
            digest,
            bytes: Some(bytes),
            by: by.to_string(),
        })
    }
}

/// The image manifest `reference` names (through an index, once, to its `wasi/wasm` entry),
/// read no further than `MAX_MANIFEST` and checked against a digest it is pinned to.
async fn manifest(
    repo: &http::Repo<'_>,
    image: &str,
    reference: &Reference,
) -> Result<OciImageManifest, FetchError> {
    let registry = |e: String| FetchError::Registry(image.to_string(), e);
    let mut wanted = reference
        .digest()
        .map(String::from)
        .unwrap_or_else(|| reference.tag().unwrap_or("latest").to_string());
    for _ in 0..2 {
        let resp = repo
            .get(&format!("manifests/{wanted}"), MANIFEST_TYPES)
            .await
            .map_err(registry)?;
        let status = resp.status();
        let body = http::read_bounded(resp, MAX_MANIFEST)
            .await
            .map_err(|e| registry(format!("the manifest: {e}")))?;
        if !status.is_success() {
            let said = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(registry(format!(
                "manifest {wanted}: HTTP {status}: {}",
                said.trim()
            )));
        }
        if wanted.starts_with("sha256:") {
            crate::fetch::verify(image, &wanted, &body)?;
        }
        let parsed: OciManifest = serde_json::from_slice(&body).map_err(|e| {
            FetchError::NotWasm(
                image.to_string(),
                format!("a manifest that does not parse ({e})"),
            )
        })?;
        match parsed {
            OciManifest::Image(m) => return Ok(m),
            OciManifest::ImageIndex(index) => {
                wanted = wasm_platform(&index.manifests).ok_or_else(|| {
                    let platforms: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|e| e.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    FetchError::NotWasm(
                        image.to_string(),
                        format!("an index without wasi/wasm ({})", platforms.join(", ")),
                    )
                })?;
                skiff_common::image::validate_digest(&wanted)
                    .map_err(|e| FetchError::BadReference(format!("{image}: {wanted}: {e}")))?;
            }
        }
    }
    Err(FetchError::NotWasm(
        image.to_string(),
        "an index that names another index".into(),
    ))
}

/// Where the module is, from the config's and the layer's media types and the config. Pure.
fn layout(config_type: &str, config: &str, layer_type: &str) -> Result<Layout, String> {
    if config_type == WASM_CONFIG && layer_type == WASM_LAYER {
        return Ok(Layout::Artifact);
    }
    let tar = TAR_LAYERS.iter().find(|(t, _)| *t == layer_type);
    match tar {
        Some((_, gzip)) if IMAGE_CONFIGS.contains(&config_type) => {
            #[derive(serde::Deserialize)]
            struct Platform {
                #[serde(default)]
                os: String,
                #[serde(default)]
                architecture: String,
            }
            let p: Platform = serde_json::from_str(config)
                .map_err(|e| format!("an image config that does not parse ({e})"))?;
            if is_wasm(&p.os, &p.architecture) {
                Ok(Layout::Tar { gzip: *gzip })
            } else {
                Err(format!(
                    "an image for {}/{} (config {config_type}, layer {layer_type})",
                    p.os, p.architecture
                ))
            }
        }
        _ => Err(format!("config {config_type}, layer {layer_type}")),
    }
}

/// A blob's bytes, from the registry only (a descriptor's `urls`, which would send the node to
/// any address a manifest's author names, are never followed): no more than the descriptor
/// says, whatever the registry sends, and only if they match its digest.
async fn read_blob(
    repo: &http::Repo<'_>,
    image: &str,
    blob: &OciDescriptor,
) -> Result<Bytes, FetchError> {
    let registry = |e: String| FetchError::Registry(image.to_string(), e);
    let resp = repo
        .get(&format!("blobs/{}", blob.digest), "*/*")
        .await
        .map_err(registry)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(registry(format!("blob {}: HTTP {status}", blob.digest)));
    }
    let size = u64::try_from(blob.size).unwrap_or(0);
    let out = http::read_bounded(resp, size)
        .await
        .map_err(|e| registry(format!("blob {}: {e} (its manifest's size)", blob.digest)))?;
    crate::fetch::verify(image, &blob.digest, &out)?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_resolves_to_its_wasm_entry() {
        let index = |platforms: &[(&str, &str)]| -> Vec<ImageIndexEntry> {
            serde_json::from_value(serde_json::Value::Array(
                platforms
                    .iter()
                    .enumerate()
                    .map(|(i, (os, arch))| {
                        serde_json::json!({
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": format!("sha256:{i:064}"),
                            "size": 1,
                            "platform": {"os": os, "architecture": arch},
                        })
                    })
                    .collect(),
            ))
            .expect("an index")
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<usize>);
        let cases: &[Case] = &[
            (&[("linux", "amd64"), ("wasi", "wasm")], Some(1)),
            (&[("wasip2", "wasm")], Some(0)),
            (&[("linux", "amd64"), ("linux", "arm64")], None),
            (&[("wasi", "amd64")], None),
        ];
        for (platforms, want) in cases {
            assert_eq!(
                wasm_platform(&index(platforms)),
                want.map(|i| format!("sha256:{i:064}")),
                "{platforms:?}"
            );
        }
    }

    #[test]
    fn layout_table() {
        let image = |os: &str, arch: &str| format!(r#"{{"os":"{os}","architecture":"{arch}"}}"#);
        let oci = IMAGE_CONFIGS[0];
        let tar = TAR_LAYERS[0].0;
        let gz = TAR_LAYERS[1].0;
        // (config type, config, layer type, Ok(gzip) for a tar / Ok(None) for the artifact / Err part)
        type Case<'a> = (&'a str, String, &'a str, Result<Option<bool>, &'a str>);
        let cases: Vec<Case> = vec![
            (WASM_CONFIG, "{}".into(), WASM_LAYER, Ok(None)),
            (oci, image("wasi", "wasm"), tar, Ok(Some(false))),
            (oci, image("wasip2", "wasm"), gz, Ok(Some(true))),
            (
                IMAGE_CONFIGS[1],
                image("wasi", "wasm"),
                TAR_LAYERS[2].0,
                Ok(Some(true)),
            ),
            (
                oci,
                image("linux", "amd64"),
                tar,
                Err("an image for linux/amd64"),
            ),
            (oci, "not json".into(), tar, Err("does not parse")),
            (
                oci,
                image("wasi", "wasm"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Err("layer application/vnd.oci.image.layer.v1.tar+zstd"),
            ),
            (
                WASM_CONFIG,
                "{}".into(),
                tar,
                Err("config application/vnd.wasm.config.v0+json"),
            ),
            (
                "application/x-other",
                "{}".into(),
                WASM_LAYER,
                Err("config application/x-other"),
            ),
        ];
        for (config_type, config, layer, want) in cases {
            let got = layout(config_type, &config, layer);
            match (got, want) {
                (Ok(Layout::Artifact), Ok(None)) => {}
                (Ok(Layout::Tar { gzip }), Ok(Some(g))) => assert_eq!(gzip, g),
                (Err(e), Err(part)) => assert!(e.contains(part), "{e} lacks {part}"),
                (got, want) => panic!(
                    "{config_type} {layer}: got {:?}, want {want:?}",
                    got.map(|l| matches!(l, Layout::Artifact))
                ),
            }
        }
    }
}
