//! Modules from OCI registries (an `image` with a registry host), with the maintained
//! `oci-client` crate: the distribution API, token auth and `WWW-Authenticate` challenges, HTTPS
//! with the system roots, plain HTTP only for the registries the node was started with as
//! `--insecure-registry HOST:PORT`. A multi-platform index selects `wasi/wasm`.
//!
//! Accepted: the CNCF wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one layer
//! `application/wasm`). Anything else is refused with what was found. The module's digest is its
//! layer's, checked against the bytes; a layer larger than `MAX_MODULE` is refused before it is
//! read, and reading stops at the size the manifest gave, whatever the registry sends.

use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::ImageIndexEntry;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::fetch::FetchError;

/// The media type of a wasm layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The media type of a wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The largest module taken from a registry.
pub const MAX_MODULE: i64 = 256 << 20;

/// The index entry of a wasm module (`wasi/wasm`; `wasip1`/`wasip2` as some tools write it).
fn wasm_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.platform.as_ref().is_some_and(|p| {
                let os = p.os.to_string();
                p.architecture.to_string() == "wasm"
                    && matches!(os.as_str(), "wasi" | "wasip1" | "wasip2")
            })
        })
        .map(|e| e.digest.clone())
}

/// The registries' client of a node.
pub struct Registries {
    client: Client,
}

impl Registries {
    /// A client that speaks plain HTTP to the `insecure` registries (`host:port`) only.
    pub fn new(insecure: &[String]) -> Registries {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            platform_resolver: Some(Box::new(wasm_platform)),
            connect_timeout: Some(std::time::Duration::from_secs(5)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        Registries {
            client: Client::new(config),
        }
    }

    /// Pull the module `image` names: its digest and bytes.
    pub async fn pull(&self, image: &str) -> Result<(String, Bytes), FetchError> {
        let reference: Reference = image
            .parse()
            .map_err(|e| FetchError::BadReference(format!("{image}: {e}")))?;
        let auth = RegistryAuth::Anonymous;
        let registry = |e: oci_client::errors::OciDistributionError| {
            FetchError::Registry(image.to_string(), e.to_string())
        };
        let (manifest, _, _) = self
            .client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(registry)?;
        let config = manifest.config.media_type.as_str();
        let layers: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        let [layer] = manifest.layers.as_slice() else {
            return Err(FetchError::NotWasm(
                image.to_string(),
                format!("{} layers ({})", layers.len(), layers.join(", ")),
            ));
        };
        if layer.media_type != WASM_LAYER || config != WASM_CONFIG {
            return Err(FetchError::NotWasm(
                image.to_string(),
                format!("config {config}, layer {}", layer.media_type),
            ));
        }
        if layer.size > MAX_MODULE || layer.size < 0 {
            return Err(FetchError::NotWasm(
                image.to_string(),
                format!("a layer of {} bytes (at most {MAX_MODULE})", layer.size),
            ));
        }
        skiff_common::image::validate_digest(&layer.digest)
            .map_err(|e| FetchError::BadReference(format!("{image}: {}: {e}", layer.digest)))?;
        // Read no more than the manifest said, whatever the registry sends.
        let mut blob = self
            .client
            .pull_blob_stream(&reference, layer)
            .await
            .map_err(registry)?;
        let mut out = Vec::with_capacity(layer.size as usize);
        while let Some(chunk) = futures::StreamExt::next(&mut blob.stream).await {
            let chunk =
                chunk.map_err(|e| FetchError::Registry(image.to_string(), e.to_string()))?;
            if (out.len() + chunk.len()) as i64 > layer.size {
                return Err(FetchError::Registry(
                    image.to_string(),
                    format!(
                        "the layer is larger than its manifest says ({} bytes)",
                        layer.size
                    ),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&out)));
        if actual != layer.digest {
            return Err(FetchError::DigestMismatch {
                reference: image.to_string(),
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok((layer.digest.clone(), Bytes::from(out)))
    }
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
}
