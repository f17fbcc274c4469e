//! `skiff push HOST[:PORT]/REPOSITORY[:TAG] FILE.wasm`: a module into an OCI registry as the
//! CNCF wasm artifact (config `application/vnd.wasm.config.v0+json` describing it, one layer
//! `application/wasm`), with the maintained `oci-client` crate. `--insecure` speaks plain HTTP
//! to that registry (a `registry:2` on loopback); otherwise HTTPS with the system roots and
//! `--ca-file`'s.
//!
//! Credentials come from Docker's credential file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), as `docker push` finds them: the registry's `credHelpers` entry,
//! else a matching `auths` entry, else the `credsStore` helper; none means anonymous.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
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

/// Docker's credential file, if there is one.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The credentials Docker's file gives for `repository` on `host`.
fn docker_auth(host: &str, repository: &str) -> Result<RegistryAuth> {
    let Some(path) = docker_config_path() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let helpers: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let key = skiff_common::dockerconfig::normalise_key(host);
    let helper = helpers
        .get("credHelpers")
        .and_then(serde_json::Value::as_object)
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| skiff_common::dockerconfig::normalise_key(k) == key)
        })
        .and_then(|(_, v)| v.as_str());
    if let Some(helper) = helper {
        return credential_helper(helper, host);
    }
    let creds = skiff_common::dockerconfig::parse_config_json(&bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if let Some(c) = skiff_common::dockerconfig::lookup(&creds, host, repository).first() {
        return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
    }
    match helpers
        .get("credsStore")
        .and_then(serde_json::Value::as_str)
    {
        Some(store) => credential_helper(store, host),
        None => Ok(RegistryAuth::Anonymous),
    }
}

/// Ask `docker-credential-<helper> get` for `host`'s credentials (none: anonymous).
fn credential_helper(helper: &str, host: &str) -> Result<RegistryAuth> {
    anyhow::ensure!(
        !helper.is_empty()
            && helper
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "credential helper {helper:?} is not a helper's name"
    );
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(host.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        // "credentials not found": push anonymously, as docker does.
        return Ok(RegistryAuth::Anonymous);
    }
    let a: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| anyhow::anyhow!("{program} answered something that is not JSON"))?;
    let field = |k: &str| {
        a.get(k)
            .and_then(serde_json::Value::as_str)
            .map(String::from)
    };
    let (Some(username), Some(secret)) = (field("Username"), field("Secret")) else {
        anyhow::bail!("{program} answered without Username and Secret");
    };
    Ok(if username == "<token>" {
        RegistryAuth::Bearer(secret)
    } else {
        RegistryAuth::Basic(username, secret)
    })
}

/// Push `file` to `reference`, trusting `ca_file` besides the system roots; the manifest's URL.
pub async fn push(
    reference: &str,
    file: &Path,
    insecure: bool,
    ca_file: Option<&Path>,
) -> Result<String> {
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
    let mut roots = Vec::new();
    if let Some(ca) = ca_file {
        roots.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
        });
    }
    let client = Client::new(ClientConfig {
        protocol,
        extra_root_certificates: roots,
        ..Default::default()
    });
    let auth = docker_auth(r.registry(), r.repository())?;
    let pushed = client
        .push(&r, &layers, config, &auth, Some(manifest))
        .await
        .with_context(|| format!("pushing to {}", r.registry()))?;
    Ok(pushed.manifest_url)
}
