//! The audit log (`--audit-log PATH`): one JSON line per request, in kube-apiserver's
//! `audit.k8s.io/v1` Event shape at the `Metadata` level (who, what, where from, the answer's
//! code; never a body, so no Secret value is ever written), appended by one background task and
//! rotated by size (`PATH.1` … `PATH.N`, as kube-apiserver's `--audit-log-maxsize` and
//! `--audit-log-maxbackup`). The file is 0600.
//!
//! Invariants: a request never waits for the disk: records go through a bounded queue, and when
//! it is full the record is dropped and counted (`skiff_audit_dropped_total`), as
//! kube-apiserver's batch backend drops.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::auth::rbac::{Attributes, UserInfo};

/// Records waiting to be written, at most.
const QUEUE: usize = 16 * 1024;

/// Records dropped because the queue was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where and how much.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub max_backups: u32,
}

/// The sending side of the audit log.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Vec<u8>>,
}

/// What one request was, for its record.
pub struct Record<'a> {
    /// Who (after impersonation), if authenticated.
    pub user: Option<&'a UserInfo>,
    /// The authenticated user when it impersonated `user`.
    pub impersonator: Option<&'a UserInfo>,
    /// What it asked, if known.
    pub attrs: Option<&'a Attributes>,
    /// Method and URI as sent.
    pub method: &'a str,
    /// Path and query.
    pub uri: &'a str,
    /// The client's address.
    pub source: Option<std::net::IpAddr>,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// The answer's status code.
    pub code: u16,
    /// A watch (its record is written when the stream starts).
    pub long_running: bool,
    /// When the request arrived.
    pub received: jiff::Timestamp,
}

impl AuditLog {
    /// Open (or create) the log and start its writer.
    pub fn start(config: AuditConfig) -> std::io::Result<AuditLog> {
        Ok(AuditLog::spawn(config)?.0)
    }

    /// [`AuditLog::start`], with the writer thread, which ends once every `AuditLog` is dropped
    /// and the queue is written.
    fn spawn(config: AuditConfig) -> std::io::Result<(AuditLog, std::thread::JoinHandle<()>)> {
        let file = open(&config.path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(config, file, rx))?;
        Ok((AuditLog { tx }, writer))
    }

    /// Queue a request's record.
    pub fn record(&self, r: &Record) {
        let mut line = serde_json::to_vec(&event(r)).unwrap_or_default();
        line.push(b'\n');
        if self.tx.try_send(line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_loop(config: AuditConfig, mut file: std::fs::File, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    while let Some(line) = rx.blocking_recv() {
        if size > 0 && size + line.len() as u64 > config.max_bytes {
            match rotate(&config) {
                Ok(f) => {
                    file = f;
                    size = 0;
                }
                Err(e) => tracing::warn!(error = %e, "rotating the audit log failed"),
            }
        }
        match file.write_all(&line) {
            Ok(()) => size += line.len() as u64,
            Err(e) => tracing::warn!(error = %e, "writing the audit log failed"),
        }
    }
}

/// `PATH.N-1` → `PATH.N` … `PATH` → `PATH.1`, the oldest beyond `max_backups` removed; a new
/// empty `PATH`.
fn rotate(config: &AuditConfig) -> std::io::Result<std::fs::File> {
    let numbered = |n: u32| {
        let mut p = config.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if config.max_backups == 0 {
        std::fs::remove_file(&config.path)?;
    } else {
        let _ = std::fs::remove_file(numbered(config.max_backups));
        for n in (1..config.max_backups).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&config.path, numbered(1))?;
    }
    open(&config.path)
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    v
}

/// The `audit.k8s.io/v1` Event of a request.
fn event(r: &Record) -> Value {
    let now = jiff::Timestamp::now();
    let ts = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let (verb, object) = match r.attrs {
        Some(Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            namespace,
        }) => {
            let mut o = json!({"resource": resource});
            for (k, v) in [
                ("namespace", namespace),
                ("name", name),
                ("apiGroup", group),
                ("subresource", subresource),
            ] {
                if !v.is_empty() {
                    o[k] = json!(v);
                }
            }
            (verb.clone(), Some(o))
        }
        Some(Attributes::NonResource { verb, .. }) => (verb.clone(), None),
        None => (r.method.to_ascii_lowercase(), None),
    };
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": if r.long_running { "ResponseStarted" } else { "ResponseComplete" },
        "requestURI": r.uri,
        "verb": verb,
        "user": r.impersonator.or(r.user).map(user_json).unwrap_or(json!({})),
        "sourceIPs": r.source.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        "userAgent": r.user_agent,
        "responseStatus": {"metadata": {}, "code": r.code},
        "requestReceivedTimestamp": ts(r.received),
        "stageTimestamp": ts(now),
    });
    if let (Some(_), Some(u)) = (r.impersonator, r.user) {
        e["impersonatedUser"] = user_json(u);
    }
    if let Some(o) = object {
        e["objectRef"] = o;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kubernetes_audit_events_and_rotate() {
        let dir = std::env::temp_dir().join(format!("skiff-audit-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let config = AuditConfig {
            path: path.clone(),
            max_bytes: 2000,
            max_backups: 2,
        };
        let (log, writer) = AuditLog::spawn(config).unwrap();
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec!["devs".into()],
            ..Default::default()
        };
        let attrs = Attributes::Resource {
            verb: "get".into(),
            group: "".into(),
            resource: "secrets".into(),
            subresource: "".into(),
            name: "db".into(),
            namespace: "team-a".into(),
        };
        for _ in 0..20 {
            log.record(&Record {
                user: Some(&alice),
                impersonator: None,
                attrs: Some(&attrs),
                method: "GET",
                uri: "/api/v1/namespaces/team-a/secrets/db",
                source: Some([127, 0, 0, 1].into()),
                user_agent: "kubectl/v1.32.0",
                code: 403,
                long_running: false,
                received: jiff::Timestamp::now(),
            });
        }
        // The writer ends once the queue is written.
        drop(log);
        writer.join().unwrap();
        assert!(dir.join("audit.log.2").exists(), "rotated twice");
        assert!(!dir.join("audit.log.3").exists(), "at most two backups");
        let text = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(first["user"]["username"], "alice");
        assert_eq!(first["objectRef"]["resource"], "secrets");
        assert_eq!(first["objectRef"]["name"], "db");
        assert_eq!(first["responseStatus"]["code"], 403);
        assert!(std::fs::metadata(&path).unwrap().len() <= 2000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
