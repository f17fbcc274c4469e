//! `skiff push HOST[:PORT]/REPOSITORY[:TAG] FILE.wasm`: a module into an OCI registry as the
//! CNCF wasm artifact (config `application/vnd.wasm.config.v0+json` describing it, one layer
//! `application/wasm`), with the maintained `oci-client` crate. `--insecure` speaks plain HTTP
//! to that registry (a `registry:2` on loopback); otherwise HTTPS with the system roots.

use std::path::Path;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// The wasm artifact config of a module or component (`wasip1`, `wasip2`).
fn wasm_config(bytes: &[u8]) -> serde_json::Value {
    // A component's version field is 0x0d (layer 1); a core module's is 1.
    let component = bytes.len() >= 8 && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00];
    serde_json::json!({
        "created": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "architecture": "wasm",
        "os": if component { "wasip2" } else { "wasip1" },
        "layerDigests": [],
    })
}

/// Push `file` to `reference`; the manifest's URL.
pub async fn push(reference: &str, file: &Path, insecure: bool) -> Result<String> {
    let r: Reference = reference
        .parse()
        .with_context(|| format!("{reference} is not an OCI reference"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(
        bytes.len() >= 8 && bytes[..4] == *b"\0asm",
        "{} is not a WebAssembly module or component (no \\0asm header)",
        file.display()
    );
    let mut config = wasm_config(&bytes);
    let layer = ImageLayer::new(bytes, "application/wasm".to_string(), None);
    config["layerDigests"] = serde_json::json!([layer.sha256_digest()]);
    let config = Config {
        data: serde_json::to_vec(&config)?.into(),
        media_type: "application/vnd.wasm.config.v0+json".to_string(),
        annotations: None,
    };
    let layers = vec![layer];
    let manifest = OciImageManifest::build(&layers, &config, None);
    let protocol = if insecure {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let pushed = client
        .push(
            &r,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .with_context(|| format!("pushing to {}", r.registry()))?;
    Ok(pushed.manifest_url)
}
