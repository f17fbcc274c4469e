//! Test harness: builds the wasm examples once, starts real `skiff` processes on free loopback
//! ports with temporary data dirs, drives them with the machine's kubectl, and kills every
//! process it started when the test ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build `wasm-examples` once per test run (its rust-toolchain.toml brings the wasm targets).
pub fn examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = root().join("wasm-examples");
        for args in [
            &["build", "--release", "--target", "wasm32-wasip1"][..],
            &[
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "hello",
                "-p",
                "http-hello",
                "-p",
                "http-api",
                "-p",
                "http-caller",
            ][..],
        ] {
            let status = Command::new("cargo")
                .args(args)
                .current_dir(&dir)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "building wasm-examples with {args:?} failed"
            );
        }
        dir.join("target")
    })
}

/// Path of a built example: `wasm32-wasip1` module or, with `p2`, the component.
pub fn example(name: &str, p2: bool) -> PathBuf {
    let target = if p2 { "wasm32-wasip2" } else { "wasm32-wasip1" };
    examples()
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"))
}

/// A process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `skiff server`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub server: Option<Proc>,
    pub extra: Vec<Proc>,
}

/// Spawn `skiff server` on `data_dir` and wait for its ready line.
fn spawn_server(data_dir: &Path, args: &[&str]) -> (Proc, String) {
    spawn_server_on(data_dir, "127.0.0.1:0", args)
}

fn spawn_server_on(data_dir: &Path, listen: &str, args: &[&str]) -> (Proc, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .expect("server log");
    let mut child = Command::new(SKIFF)
        .args(["server", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen",
            listen,
            "--node-name",
            "testnode",
            "--gateway-port",
            "0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("skiff starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("skiff API server ready at ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches(';')
                        .to_string(),
                );
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server prints its ready line");
    (Proc(child), url)
}

impl Cluster {
    /// Start a server (with its embedded node unless `--no-node` is among `args`).
    pub fn start(args: &[&str]) -> Cluster {
        Cluster::start_prepared(|_| {}, args)
    }

    /// Start a server on a data dir that `prepare` fills first (another server's secrets, for a
    /// second API server of the same cluster).
    pub fn start_prepared(prepare: impl FnOnce(&Path), args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        prepare(&data);
        let (server, url) = spawn_server(&data, args);
        Cluster {
            kubeconfig: data.join("kubeconfig.yaml"),
            dir,
            url,
            server: Some(server),
            extra: Vec::new(),
        }
    }

    /// The server's data dir.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kill the server with SIGKILL and start it again on the same data dir.
    pub fn kill9_and_restart(&mut self, args: &[&str]) {
        self.kill9_and_restart_after(Duration::ZERO, args);
    }

    /// Kill the server with SIGKILL, leave it down for `down`, and start it again on the same
    /// data dir.
    pub fn kill9_and_restart_after(&mut self, down: Duration, args: &[&str]) {
        self.kill9();
        std::thread::sleep(down);
        self.start_again(args);
    }

    /// Kill the server with SIGKILL (it stays down).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.server.take() {
            p.0.kill().expect("kill -9");
            let _ = p.0.wait();
        }
    }

    /// Start the server again on the data dir (after `kill9`).
    pub fn start_again(&mut self, args: &[&str]) {
        let (server, url) = spawn_server(&self.data(), args);
        self.server = Some(server);
        self.url = url;
    }

    /// Start the server again on the data dir and the address it had (after `kill9`), so
    /// joined nodes find it where they left it.
    pub fn start_again_at_same_address(&mut self, args: &[&str]) {
        let addr = self
            .url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let (server, url) = spawn_server_on(&self.data(), &addr, args);
        self.server = Some(server);
        self.url = url;
    }

    /// Run `skiff` with `args` (output captured).
    pub fn skiff(&self, args: &[&str]) -> Output {
        Command::new(SKIFF).args(args).output().expect("skiff runs")
    }

    /// Run kubectl against this cluster.
    pub fn kubectl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs (it is on every machine here)")
    }

    /// A kubeconfig for this cluster whose user is `user` (the YAML of a kubeconfig `user:`
    /// map, e.g. `token: ...`), written to the test's directory.
    pub fn kubeconfig_for(&self, name: &str, user: &str) -> PathBuf {
        let admin: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("admin kubeconfig"),
        )
        .expect("kubeconfig is YAML");
        let cluster = &admin["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().expect("server");
        let ca = cluster["certificate-authority-data"]
            .as_str()
            .expect("CA data");
        let indented: String = user.lines().map(|l| format!("    {l}\n")).collect();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n{indented}contexts:\n- name: {name}\n  context: {{cluster: skiff, user: {name}}}\ncurrent-context: {name}\n"
        );
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Run kubectl with another kubeconfig (another user).
    pub fn kubectl_with<S: AsRef<std::ffi::OsStr>>(&self, kubeconfig: &Path, args: &[S]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    /// Run kubectl, require success, return stdout.
    pub fn kubectl_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Apply a manifest given as text.
    pub fn apply(&self, manifest: &str) -> String {
        let path = self
            .dir
            .path()
            .join(format!("manifest-{}.yaml", rand_suffix()));
        std::fs::write(&path, manifest).expect("write manifest");
        self.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// Push a module with `skiff push`.
    pub fn push(&self, reference: &str, file: &Path) -> Output {
        Command::new(SKIFF)
            .arg("push")
            .arg(reference)
            .arg(file)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .expect("skiff push runs")
    }

    /// Push and require success.
    pub fn push_ok(&self, reference: &str, file: &Path) {
        let out = self.push(reference, file);
        assert!(
            out.status.success(),
            "skiff push {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get <what> -o jsonpath=<path>`, required to succeed.
    pub fn jsonpath(&self, what: &[&str], jsonpath: &str) -> String {
        self.kubectl_ok(&self.jsonpath_args(what, jsonpath))
    }

    fn jsonpath_args<'a>(&self, what: &[&'a str], jsonpath: &'a str) -> Vec<String> {
        let mut args: Vec<String> = vec!["get".into()];
        args.extend(what.iter().map(|s| s.to_string()));
        args.extend(["-o".to_string(), format!("jsonpath={jsonpath}")]);
        args
    }

    /// Poll `kubectl get <what> -o jsonpath=<path>` until it equals `want` (deadline, not a sleep).
    pub fn wait_for(&self, what: &[&str], jsonpath: &str, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let args = self.jsonpath_args(what, jsonpath);
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.kubectl(&args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && last == want {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what:?} {jsonpath} == {want:?}; last value {last:?}\n{}",
            self.server_log()
        );
    }

    /// `GET path` on node `node`'s agent endpoint (HTTPS, verified against the cluster CA) with
    /// `token` as bearer (None: no credential): (status, body). Waits (with a deadline) for the
    /// node's serving certificate, which is issued after the node registers.
    pub fn node_get(&self, node: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let port = self.jsonpath(
            &["node", node],
            "{.status.daemonEndpoints.kubeletEndpoint.Port}",
        );
        let ip = self.jsonpath(
            &["node", node],
            "{.status.addresses[?(@.type==\"InternalIP\")].address}",
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-w", "\n%{http_code}", "--cacert"])
                .arg(self.data().join("tls/ca.crt"));
            if let Some(t) = token {
                cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
            }
            let out = cmd
                .arg(format!("https://{ip}:{port}{path}"))
                .output()
                .expect("curl runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            let code: u16 = code.trim().parse().unwrap_or(0);
            if code != 0 || Instant::now() > deadline {
                return (code, body.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        let text = std::fs::read_to_string(self.data().with_extension("log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[start..].to_string()
    }

    /// `ip:port` of a node's HTTP gateway (from its Node object), once it has registered.
    pub fn gateway(&self, node: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.kubectl(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}:{.metadata.annotations.skiff\\.dev/gateway-port}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !text.starts_with(':') && !text.ends_with(':') {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} never published its gateway"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Start `skiff node` joining this cluster.
    pub fn join_node(&mut self, name: &str) {
        let url = self.url.clone();
        self.join_node_to(name, &url);
    }

    /// Start `skiff node --server <servers>` (comma separated) with this cluster's join token.
    pub fn join_node_to(&mut self, name: &str, servers: &str) {
        let log =
            std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("node log");
        let child = Command::new(SKIFF)
            .args([
                "node",
                "--server",
                servers,
                "--name",
                name,
                "--gateway-port",
                "0",
                "--token-file",
            ])
            .arg(self.data().join("node-token"))
            .arg("--data-dir")
            .arg(self.dir.path().join(name))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("skiff node starts");
        self.extra.push(Proc(child));
    }
}

/// A short random suffix for file names.
pub fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// A pod manifest running `image` with `restartPolicy: Never`, plus extra spec lines.
pub fn pod(name: &str, image: &str, extra_container: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n{extra_spec}  containers:\n  - name: main\n    image: {image}\n{extra_container}"
    )
}

/// One HTTP/1.1 GET to `addr` with `Host: host`: (status, body), or why it failed.
pub fn http_get(addr: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    http_get_with(addr, host, path, &[])
}

/// `http_get` with extra request headers.
pub fn http_get_with(
    addr: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: skiff-e2e\r\n{extra}\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Poll `f` until it returns `Some` or `timeout` passes (then panic with `what`).
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
