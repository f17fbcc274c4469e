//! Modules from an OCI registry: Debian's docker-registry (the distribution project's
//! `registry:2`) on a loopback port.
//!
//! Open, over plain HTTP (`--insecure-registry`): `skiff push` puts a module there as the CNCF
//! wasm artifact and pods run it by tag and by digest; a wasi/wasm image whose layer is a tar
//! holding the module runs; an artifact pushed by ORAS runs; a missing tag and a container
//! image are clear `ErrImagePull`s; the Node lists its modules; a module the node has starts
//! without the registry.
//!
//! With TLS (a CA of the test's, `--registry-ca`) and htpasswd: `skiff push` with Docker's
//! credential file; pods pull with their `imagePullSecrets` or their ServiceAccount's; a wrong
//! password is a clear `ErrImagePull`; no password reaches an event or a log; and a pod
//! without credentials never starts the private module from the node's cache.

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
    /// An open registry over plain HTTP.
    fn start() -> Registry {
        Registry::start_with(|_| String::new(), "http")
    }

    /// A registry whose config ends with what `extra` (given the registry's directory) adds
    /// under `http:` and after it, asked over `scheme`.
    fn start_with(extra: impl FnOnce(&std::path::Path) -> String, scheme: &str) -> Registry {
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
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: \"{host}\"\n{}",
                dir.path().join("data").display(),
                extra(dir.path()),
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
        let ca = r._dir.path().join("ca.pem");
        let deadline = std::time::Instant::now() + T;
        loop {
            let mut curl = Command::new("curl");
            curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
            if scheme == "https" {
                curl.arg("--cacert").arg(&ca);
            }
            let answered = curl
                .arg(format!("{scheme}://{}/v2/", r.host))
                .output()
                .is_ok_and(|o| matches!(&o.stdout[..], b"200" | b"401"));
            if answered {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the registry does not answer: {}",
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
    let push_file = |image: &str, file: &std::path::Path| {
        let out = c.skiff(&["push", image, file.to_str().expect("utf-8"), "--insecure"]);
        assert!(out.status.success(), "{out:?}");
    };
    let push = |image: &str| push_file(image, &example("hello", false));
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
    // Pods starting together from a new module share one pull: the registry serves its
    // manifest and blob once. (A module of its own digest: the node has hello's.)
    let many = format!("{}/team/many:v1", registry.host);
    let own = tempfile::NamedTempFile::new().expect("temp file");
    let own_bytes = skiff_common::wasm::with_custom_section(
        &std::fs::read(example("hello", false)).expect("hello"),
        "many",
        b"1",
    );
    std::fs::write(own.path(), &own_bytes).expect("write");
    push_file(&many, own.path());
    let many_digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&own_bytes)))
    };
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
    // Successful GETs of `path` the registry has logged so far.
    let gets = |path: &str| {
        let log = std::fs::read_to_string(&registry.log).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("response completed")
                    && l.contains("http.request.method=GET")
                    && l.contains(path)
            })
            .count()
    };
    let blob_gets = gets(&format!("/v2/team/many/blobs/{many_digest}"));
    assert_eq!(
        blob_gets, 1,
        "the module's blob was fetched {blob_gets} times"
    );
    let manifest_gets = gets("/v2/team/many/manifests/v1");
    assert_eq!(
        manifest_gets, 1,
        "the manifest was fetched {manifest_gets} times"
    );
    // A new tag of a module the node has: the manifest only, not the blob again.
    let again = format!("{}/team/many:again", registry.host);
    push_file(&again, own.path());
    c.apply(&pod("many-again", &again));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/many-again",
        "--timeout=60s",
    ]);
    let blob_gets = gets(&format!("/v2/team/many/blobs/{many_digest}"));
    assert_eq!(blob_gets, 1, "the blob was fetched again for a new tag");

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
    // Something that is not a wasm module (a container image for linux/amd64): refused,
    // saying what was found.
    upload_image(
        &registry.host,
        "team/tarball",
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        b"not a wasm module, a tarball",
        "application/vnd.oci.image.layer.v1.tar",
    );
    let why = refused("tarball", &format!("{}/team/tarball:v1", registry.host));
    assert!(
        why.contains("is not a WebAssembly image") && why.contains("an image for linux/amd64"),
        "{why}"
    );

    // A wasi/wasm image whose one layer is a gzipped tar holding the module, as
    // `docker buildx --platform wasi/wasm` builds for runwasi: it runs, as the file's digest.
    let work = tempfile::tempdir().expect("temp dir");
    let hello = example("hello", false);
    std::fs::copy(&hello, work.path().join("app.wasm")).expect("copy");
    let layer = work.path().join("layer.tar.gz");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(work.path())
        .arg("-czf")
        .arg(&layer)
        .arg("app.wasm")
        .status()
        .expect("tar");
    assert!(tar.success());
    upload_image(
        &registry.host,
        "team/runwasi",
        br#"{"architecture":"wasm","os":"wasi","config":{"Entrypoint":["/app.wasm"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        &std::fs::read(&layer).expect("layer"),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // An artifact pushed by another tool: ORAS (its Python SDK, which scripts/setup.sh
    // installs), with the CNCF wasm media types.
    std::fs::write(
        work.path().join("config.json"),
        r#"{"architecture":"wasm","os":"wasip1"}"#,
    )
    .expect("config");
    let oras = Command::new("python3")
        .current_dir(work.path())
        .args([
            "-c",
            "import sys, oras.client\n\
             c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)\n\
             c.push(target=sys.argv[1] + '/team/oras:v1', files=['app.wasm:application/wasm'],\n\
                    manifest_config='config.json:application/vnd.wasm.config.v0+json')\n",
            &registry.host,
        ])
        .output()
        .expect("python3 runs");
    assert!(oras.status.success(), "oras push: {oras:?}");
    for (name, repo) in [("runwasi", "team/runwasi"), ("oras", "team/oras")] {
        c.apply(&pod(name, &format!("{}/{repo}:v1", registry.host)));
    }
    let module = {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(std::fs::read(&hello).expect("hello")))
        )
    };
    for name in ["runwasi", "oras"] {
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/{name}"),
            "--timeout=60s",
        ]);
        assert!(c.kubectl_ok(&["logs", name]).contains("Hello from skiff!"));
        let id = c.jsonpath(&["pod", name], "{.status.containerStatuses[0].imageID}");
        assert!(id.ends_with(&module), "{name}: {id}");
    }

    // The Node lists its modules, each by its references and digest.
    eventually("the Node lists the pulled modules", T, || {
        let images = c.jsonpath(&["nodes"], "{.items[0].status.images[*].names}");
        [
            format!("{}/team/hello:v1", registry.host),
            format!("{}/team/runwasi:v1", registry.host),
            digest.clone(),
        ]
        .iter()
        .all(|n| images.contains(n.as_str()))
        .then_some(())
    });

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

/// Put an image with `config` (an OCI image config) and one layer of `layer_type` holding
/// `data` into `repository` at tag v1, through the distribution API.
fn upload_image(host: &str, repository: &str, config: &[u8], data: &[u8], layer_type: &str) {
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
    let config_digest = put_blob(config);
    let layer_digest = put_blob(data);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": data.len()}],
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

/// A CA, a certificate of it for 127.0.0.1 (made with openssl, as the Kubernetes docs do), and
/// an htpasswd file with `alice`:`s3cret-pw` in `dir`; the registry config's `tls` and `auth`
/// parts.
fn tls_and_htpasswd(dir: &std::path::Path) -> String {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=skiff-test-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "key.pem",
                "-out",
                "req.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    let hash = bcrypt::hash("s3cret-pw", 5).expect("bcrypt");
    std::fs::write(dir.join("htpasswd"), format!("alice:{hash}\n")).expect("write");
    format!(
        "  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: skiff-test, path: {}}}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display(),
        dir.join("htpasswd").display(),
    )
}

/// Docker's `config.json` with `user`:`password` for `host`, in a directory of its own.
fn docker_config(host: &str, user: &str, password: &str) -> tempfile::TempDir {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .expect("write");
    dir
}

#[test]
fn a_private_registry_over_tls_serves_pods_with_pull_secrets() {
    let registry = Registry::start_with(tls_and_htpasswd, "https");
    let ca = registry._dir.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let c = Cluster::start(&["--registry-ca", ca]);
    let image = format!("{}/private/hello:v1", registry.host);
    let hello = example("hello", false);
    // `skiff push` over HTTPS (trusting the test's CA) with Docker's credential file: refused
    // without credentials and with a wrong password, taken with the right one, and with one
    // a credential helper gives (`credsStore`: `docker-credential-<name> get`, on PATH).
    let helpers = tempfile::tempdir().expect("temp dir");
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let push = |config: &tempfile::TempDir| {
        Command::new(crate::harness::SKIFF)
            .args(["push", &image])
            .arg(&hello)
            .args(["--ca-file", ca])
            .env("DOCKER_CONFIG", config.path())
            .env("PATH", &path)
            .output()
            .expect("skiff runs")
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let helper = helpers.path().join("docker-credential-skifftest");
        // It answers only for the registry it is asked about.
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\n[ \"$host\" = \"{}\" ] || exit 1\necho '{{\"Username\": \"alice\", \"Secret\": \"s3cret-pw\"}}'\n",
                registry.host
            ),
        )
        .expect("write");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            store.path().join("config.json"),
            r#"{"auths": {}, "credsStore": "skifftest"}"#,
        )
        .expect("write");
        let helped = push(&store);
        assert!(helped.status.success(), "{helped:?}");
    }
    let none = tempfile::tempdir().expect("temp dir");
    assert!(!push(&none).status.success());
    let wrong = push(&docker_config(&registry.host, "alice", "wrong-pw"));
    assert!(!wrong.status.success(), "{wrong:?}");
    let right = push(&docker_config(&registry.host, "alice", "s3cret-pw"));
    assert!(right.status.success(), "{right:?}");

    let pod = |name: &str, extra_spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n{extra_spec}  containers: [{{name: main, image: \"{image}\"}}]\n"
        )
    };
    let secret = |name: &str, password: &str| {
        c.kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            name,
            &format!("--docker-server={}", registry.host),
            "--docker-username=alice",
            &format!("--docker-password={password}"),
        ]);
    };
    let pull_error = |name: &str| {
        eventually("a pull error", T, || {
            let m = c.jsonpath(
                &["pod", name],
                "{.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}",
            );
            (m.starts_with("ErrImagePull") || m.starts_with("ImagePullBackOff")).then_some(m)
        })
    };
    // A pod without credentials: refused by the registry.
    c.apply(&pod("anonymous-first", ""));
    let why = pull_error("anonymous-first");
    assert!(why.contains(&image), "{why}");

    // With the pod's own imagePullSecrets: it runs.
    secret("regcred", "s3cret-pw");
    c.apply(&pod(
        "with-secret",
        "  imagePullSecrets: [{name: regcred}]\n",
    ));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/with-secret",
        "--timeout=60s",
    ]);
    assert!(c
        .kubectl_ok(&["logs", "with-secret"])
        .contains("Hello from skiff!"));

    // The attack: a pod without credentials names the module the node now has (IfNotPresent).
    // It is not started from the cache, and no token the other pod's pull earned serves it.
    c.apply(&pod("no-secret", ""));
    let why = pull_error("no-secret");
    assert!(why.contains(&image), "{why}");
    assert_ne!(
        c.jsonpath(&["pod", "no-secret"], "{.status.phase}"),
        "Succeeded"
    );

    // Through its ServiceAccount: admission copies the account's imagePullSecrets.
    c.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder}\nimagePullSecrets: [{name: regcred}]\n",
    );
    c.apply(&pod("by-account", "  serviceAccountName: builder\n"));
    assert_eq!(
        c.jsonpath(&["pod", "by-account"], "{.spec.imagePullSecrets[0].name}"),
        "regcred"
    );
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/by-account",
        "--timeout=60s",
    ]);

    // A wrong password: a clear ErrImagePull that names who was refused, never the password.
    secret("badcred", "not-the-pw");
    c.apply(&pod(
        "wrong-secret",
        "  imagePullSecrets: [{name: badcred}]\n",
    ));
    let why = pull_error("wrong-secret");
    assert!(why.contains("\"alice\""), "{why}");
    // A missing Secret: the kubelet's warning, and the pull goes on without it.
    c.apply(&pod(
        "missing-secret",
        "  imagePullSecrets: [{name: nosuch}]\n",
    ));
    eventually("the missing Secret's event", T, || {
        let events = c.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=missing-secret,reason=FailedToRetrieveImagePullSecret",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        events.contains("nosuch: not found").then_some(())
    });
    let events = c.kubectl_ok(&["get", "events", "-o", "json"]);
    let log = std::fs::read_to_string(c.data().with_extension("log")).unwrap_or_default();
    for password in ["s3cret-pw", "not-the-pw"] {
        assert!(!events.contains(password), "an event holds a password");
        assert!(!log.contains(password), "the log holds a password");
    }
}

#[test]
fn the_module_cache_stays_within_its_bound() {
    let c = Cluster::start(&[
        "--module-cache-max-size",
        "1Mi",
        "--module-minimum-gc-age",
        "0s",
    ]);
    let hello = std::fs::read(example("hello", false)).expect("hello");
    let work = tempfile::tempdir().expect("temp dir");
    let mut digests = Vec::new();
    for (i, fill) in [(1, b'a'), (2, b'b')] {
        let bytes = skiff_common::wasm::with_custom_section(&hello, "pad", &vec![fill; 400 << 10]);
        let file = work.path().join(format!("big-{i}.wasm"));
        std::fs::write(&file, &bytes).expect("write");
        c.push_ok(&format!("big-{i}:v1"), &file);
        use sha2::Digest;
        digests.push(hex::encode(sha2::Sha256::digest(&bytes)));
    }
    let run = |name: &str, image: &str| {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: main, image: \"{image}\"}}]\n"
        ));
        c.kubectl_ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/{name}"),
            "--timeout=60s",
        ]);
    };
    let blob = |i: usize| c.data().join("node/modules").join(&digests[i]);
    run("first", "big-1:v1");
    assert!(blob(0).is_file(), "{:?}", blob(0));
    // A second module takes the cache past its bound: the first, which no pod runs any more,
    // is removed, and the Node lists only the second.
    run("second", "big-2:v1");
    eventually("the first module is collected", T, || {
        let images = c.jsonpath(&["nodes"], "{.items[0].status.images[*].names}");
        (!blob(0).exists() && images.contains("big-2:v1") && !images.contains("big-1:v1"))
            .then_some(())
    });
    assert!(blob(1).is_file());
    // A pod of the first module pulls it again.
    run("again", "big-1:v1");
    let pulled = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=again,reason=Pulled",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(pulled.contains("Successfully pulled"), "{pulled}");
}

/// A registry of the pod author's, written here: token auth that works (a Bearer challenge,
/// a token from its realm, the module served only with it), and the attacks: a manifest with
/// an endless body and a token service with an endless answer (the node reads no more than its
/// bounds and says so), and a manifest whose layer names other `urls` (the node never fetches
/// from them: they could be any address it can reach).
#[test]
fn a_hostile_registry_cannot_make_the_node_read_without_bound_or_go_elsewhere() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Where the foreign URL points: it records whether anyone came.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let elsewhere_addr = elsewhere.local_addr().expect("addr");
    let visited = Arc::new(AtomicBool::new(false));
    {
        let visited = visited.clone();
        std::thread::spawn(move || {
            for conn in elsewhere.incoming() {
                visited.store(true, Ordering::SeqCst);
                drop(conn);
            }
        });
    }
    let foreign = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
            "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": format!("sha256:{}", "1".repeat(64)),
            "size": 100, "urls": [format!("http://{elsewhere_addr}/metadata")]}],
    })
    .to_string();
    let hello = std::fs::read(example("hello", false)).expect("hello");
    let hello_digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&hello)))
    };
    let bearer_manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
            "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": hello_digest, "size": hello.len()}],
    })
    .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let me = host.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (foreign, bearer_manifest, hello, me) = (
                foreign.clone(),
                bearer_manifest.clone(),
                hello.clone(),
                me.clone(),
            );
            let hello_path = format!("/blobs/{hello_digest}");
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let reply = |conn: &mut std::net::TcpStream,
                             status: &str,
                             extra: &str,
                             body: &[u8]| {
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    let _ = conn.write_all(body);
                };
                let challenge = |realm: &str| {
                    format!("WWW-Authenticate: Bearer realm=\"http://{me}{realm}\",service=\"fake\",scope=\"repository:evil/app:pull\"\r\n")
                };
                let authorized = head
                    .to_ascii_lowercase()
                    .contains("authorization: bearer t0k3n");
                if head.starts_with("GET /v2/ ") {
                    reply(&mut conn, "200 OK", "", b"{}");
                } else if head.starts_with("GET /token?") {
                    reply(&mut conn, "200 OK", "", br#"{"token": "t0k3n"}"#);
                } else if head.contains("/manifests/bearer") && authorized {
                    reply(&mut conn, "200 OK", "", bearer_manifest.as_bytes());
                } else if head.contains(&hello_path) && authorized {
                    reply(&mut conn, "200 OK", "", &hello);
                } else if head.contains("/manifests/bearer") || head.contains(&hello_path) {
                    reply(&mut conn, "401 Unauthorized", &challenge("/token"), b"{}");
                } else if head.contains("/manifests/tokenbomb") {
                    reply(&mut conn, "401 Unauthorized", &challenge("/bomb"), b"{}");
                } else if head.contains("/manifests/foreign") {
                    reply(&mut conn, "200 OK", "", foreign.as_bytes());
                } else if head.contains("/blobs/") {
                    reply(&mut conn, "404 Not Found", "", b"{}");
                } else {
                    // No length, then 64 MiB of one JSON string, until the client hangs up.
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{\"x\": \"",
                    );
                    let chunk = vec![b'a'; 64 << 10];
                    for _ in 0..1024 {
                        if conn.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let c = Cluster::start(&["--insecure-registry", &host]);
    let waiting = |name: &str, tag: &str| {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: main, image: \"{host}/evil/app:{tag}\"}}]\n"
        ));
        eventually("a pull error", T, || {
            let m = c.jsonpath(
                &["pod", name],
                "{.status.containerStatuses[0].state.waiting.message}",
            );
            (!m.is_empty()).then_some(m)
        })
    };
    // Token auth as Docker Hub's: the module runs.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bearer}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: main, image: \"{host}/evil/app:bearer\"}}]\n"
    ));
    c.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/bearer",
        "--timeout=60s",
    ]);
    let why = waiting("endless", "endless");
    assert!(why.contains("larger than 4194304 bytes"), "{why}");
    let why = waiting("tokenbomb", "tokenbomb");
    assert!(
        why.contains("token service's answer: larger than 65536 bytes"),
        "{why}"
    );
    let why = waiting("foreign", "foreign");
    assert!(why.contains("404"), "{why}");
    assert!(
        !visited.load(Ordering::SeqCst),
        "the node fetched from a layer's foreign URL"
    );
}
