//! Modules from an OCI registry: Debian's docker-registry (the distribution project's
//! `registry:2`) on a loopback port, plain HTTP (`--insecure-registry`); `skiff push` puts a
//! module there as the CNCF wasm artifact and pods run it by tag and by digest; a missing tag
//! and a container image are clear `ErrImagePull`s; a module the node has starts without the
//! registry.

use std::process::{Child, Command, Stdio};

use crate::harness::{eventually, example, Cluster};
use crate::T;

/// A registry of the test's own, killed when dropped.
struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Its log (one line per request).
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: \"{host}\"}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("registry log"),
            ))
            .spawn()
            .expect("docker-registry runs (scripts/setup.sh installs it)");
        let r = Registry {
            child,
            host,
            log,
            _dir: dir,
        };
        eventually("the registry answers", T, || {
            Command::new("curl")
                .args(["-sf", &format!("http://{}/v2/", r.host)])
                .output()
                .is_ok_and(|o| o.status.success())
                .then_some(())
        });
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pods_run_modules_from_an_oci_registry() {
    let registry = Registry::start();
    let c = Cluster::start(&["--insecure-registry", &registry.host]);
    // `skiff push` of the hello module to `image` in the registry.
    let push = |image: &str| {
        let hello = example("hello", false);
        let out = c.skiff(&["push", image, hello.to_str().expect("utf-8"), "--insecure"]);
        assert!(out.status.success(), "{out:?}");
    };
    let image = format!("{}/team/hello:v1", registry.host);
    push(&image);
    // The registry holds the CNCF wasm artifact.
    let manifest = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/team/hello/manifests/v1", registry.host),
        ])
        .output()
        .expect("curl");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).expect("a manifest");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    let pod = |name: &str, image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: main, image: \"{image}\"}}]\n"
        )
    };
    // By tag, and pinned by the manifest's digest.
    let manifest_digest = {
        let out = Command::new("curl")
            .args([
                "-sfI",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
                &format!("http://{}/v2/team/hello/manifests/v1", registry.host),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("docker-content-digest:")
                    .then(|| l.split_once(':').map(|(_, v)| v.trim().to_string()))
                    .flatten()
            })
            .expect("the manifest's digest")
    };
    c.apply(&pod("by-tag", &image));
    c.apply(&pod(
        "by-digest",
        &format!("{}/team/hello@{manifest_digest}", registry.host),
    ));
    for p in ["by-tag", "by-digest"] {
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
        let logs = c.kubectl_ok(&["logs", p]);
        assert!(logs.contains("Hello from skiff!"), "{logs}");
    }
    let id = c.jsonpath(&["pod", "by-tag"], "{.status.containerStatuses[0].imageID}");
    assert!(
        id.ends_with(&digest),
        "the module's digest is the layer's: {id}"
    );
    // Pods starting together from a new tag share one pull: the registry serves the blob once.
    let many = format!("{}/team/many:v1", registry.host);
    push(&many);
    let together: String = (0..4)
        .map(|i| pod(&format!("many-{i}"), &many) + "---\n")
        .collect();
    c.apply(&together);
    for i in 0..4 {
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/many-{i}"),
            "--timeout=60s",
        ]);
    }
    let log = std::fs::read_to_string(&registry.log).unwrap_or_default();
    let blob_gets = log
        .lines()
        .filter(|l| {
            l.contains("response completed")
                && l.contains("http.request.method=GET")
                && l.contains(&format!("/v2/team/many/blobs/{digest}"))
        })
        .count();
    assert_eq!(
        blob_gets, 1,
        "the module's blob was fetched {blob_gets} times"
    );

    // A pod that cannot pull: the reason and message it waits with, once it has one.
    let refused = |name: &str, image: &str| {
        c.apply(&pod(name, image));
        eventually("a pull error", T, || {
            let m = c.jsonpath(
                &["pod", name],
                "{.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}",
            );
            (m.starts_with("ErrImagePull") || m.starts_with("ImagePullBackOff")).then_some(m)
        })
    };
    // A tag the registry does not have: ErrImagePull with the registry's words.
    let why = refused("missing", &format!("{}/team/hello:nope", registry.host));
    assert!(why.contains("team/hello:nope"), "{why}");
    // Something that is not a wasm module (a container image's tar layer): refused, saying
    // what was found.
    upload_image(
        &registry.host,
        "team/tarball",
        b"not a wasm module, a tarball",
    );
    let why = refused("tarball", &format!("{}/team/tarball:v1", registry.host));
    assert!(
        why.contains("not a WebAssembly OCI artifact")
            && why.contains("application/vnd.oci.image.layer.v1.tar"),
        "{why}"
    );

    // The registry goes away: a pod of a module the node has (IfNotPresent, the default for a
    // tag other than latest) still starts.
    drop(registry);
    c.apply(&pod("after", &image));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/after",
        "--timeout=60s",
    ]);
}

/// Put an image with one tar layer holding `data` into `repository` at tag v1, through the
/// distribution API.
fn upload_image(host: &str, repository: &str, data: &[u8]) {
    use sha2::Digest;
    let put_blob = |bytes: &[u8]| -> String {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("write");
        // Open an upload session, then finish it with the bytes (registry 2 has no one-request
        // upload).
        let session = Command::new("curl")
            .args(["-sf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
            .arg(format!("http://{host}/v2/{repository}/blobs/uploads/"))
            .output()
            .expect("curl");
        let location = String::from_utf8_lossy(&session.stdout)
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .expect("an upload location");
        let location = if location.starts_with('/') {
            format!("http://{host}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let out = Command::new("curl")
            .args(["-sf", "-X", "PUT", "--data-binary"])
            .arg(format!("@{}", file.path().display()))
            .args(["-H", "Content-Type: application/octet-stream"])
            .arg(format!("{location}{sep}digest={digest}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "{out:?}");
        digest
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put_blob(config);
    let layer_digest = put_blob(data);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": data.len()}],
    });
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
        ])
        .arg(manifest.to_string())
        .arg(format!("http://{host}/v2/{repository}/manifests/v1"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
}
