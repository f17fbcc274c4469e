//! Container logs: one file per container run in the CRI format Kubernetes uses
//! (`<RFC3339Nano> <stdout|stderr> <F|P> <text>`), under
//! `DIR/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`, written by the sandbox's stdout/stderr,
//! and the reading side that serves `kubectl logs` (tail, since, timestamps, previous, follow).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Errors of writing or reading logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// File IO failed.
    #[error("log file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// No log for that container (yet).
    #[error("{0}")]
    NotFound(String),
}

/// Log files still being written, so `follow` knows when to stop.
#[derive(Clone, Default)]
pub struct ActiveLogs(Arc<Mutex<HashSet<PathBuf>>>);

impl ActiveLogs {
    fn set(&self, p: &Path, active: bool) {
        if let Ok(mut s) = self.0.lock() {
            if active {
                s.insert(p.to_path_buf());
            } else {
                s.remove(p);
            }
        }
    }

    /// Is this file still being written?
    pub fn is_active(&self, p: &Path) -> bool {
        self.0.lock().map(|s| s.contains(p)).unwrap_or(false)
    }
}

/// The directory of a pod's logs, volumes and termination files; `None` unless namespace, name
/// and uid are names Kubernetes allows, so no string from the API can make it point elsewhere.
pub fn pod_dir(root: &Path, ns: &str, pod: &str, uid: &str) -> Option<PathBuf> {
    use skiff_common::names::{is_dns1123_label, is_dns1123_subdomain, is_uid};
    (is_dns1123_label(ns) && is_dns1123_subdomain(pod) && is_uid(uid))
        .then(|| root.join(format!("{ns}_{pod}_{uid}")))
}

/// The log file of one run of a container.
pub fn log_path(pod_dir: &Path, container: &str, restart: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{restart}.log"))
}

struct SinkInner {
    file: std::fs::File,
    partial: [Vec<u8>; 2],
    /// Bytes in the current file.
    bytes: u64,
    path: PathBuf,
    rotation: Rotation,
}

/// Size-based rotation, as the kubelet's `containerLogMaxSize`/`containerLogMaxFiles`.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Rotate when the current file grows past this.
    pub max_bytes: u64,
    /// Files kept per run, the current one included (`N.log`, `N.log.1`, ...).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// `path` with a rotation suffix (`N.log.1`...).
pub fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Where one container run writes; cheap to clone, shared by its stdout and stderr.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<SinkInner>>,
    path: PathBuf,
    active: ActiveLogs,
}

fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        .to_string()
}

impl LogSink {
    /// Create (truncate) the log file of one run, with the default rotation. The files of runs
    /// before the previous one are removed (`--previous` needs only the last).
    pub fn create(path: &Path, active: ActiveLogs) -> Result<Self, LogError> {
        Self::with_rotation(path, active, Rotation::default())
    }

    /// [`LogSink::create`] with a given rotation.
    pub fn with_rotation(
        path: &Path,
        active: ActiveLogs,
        rotation: Rotation,
    ) -> Result<Self, LogError> {
        let io = |e| LogError::Io(path.to_path_buf(), e);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
            let run: Option<u32> = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok());
            if let Some(old) = run.and_then(|r| r.checked_sub(2)) {
                let old = d.join(format!("{old}.log"));
                let _ = std::fs::remove_file(&old);
                for i in 1..rotation.max_files {
                    let _ = std::fs::remove_file(rotated(&old, i));
                }
            }
        }
        let file = std::fs::File::create(path).map_err(io)?;
        active.set(path, true);
        Ok(LogSink {
            inner: Arc::new(Mutex::new(SinkInner {
                file,
                partial: [Vec::new(), Vec::new()],
                bytes: 0,
                path: path.to_path_buf(),
                rotation,
            })),
            path: path.to_path_buf(),
            active,
        })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, stream: usize, buf: &[u8]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        inner.partial[stream].extend_from_slice(buf);
        while let Some(pos) = inner.partial[stream].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = inner.partial[stream].drain(..=pos).collect();
            write_line(inner, stream, &line[..line.len() - 1], "F");
        }
        // Very long lines are split, as CRI runtimes do (tag P).
        if inner.partial[stream].len() >= 16 * 1024 {
            let line = std::mem::take(&mut inner.partial[stream]);
            write_line(inner, stream, &line, "P");
        }
    }

    /// A line of the node's own on the container's stderr (a failed HTTP request, say).
    pub fn note(&self, line: &str) {
        self.write(1, format!("{line}\n").as_bytes());
    }

    /// Flush partial lines and mark the file finished.
    pub fn finish(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            let inner = &mut *inner;
            for s in 0..2 {
                if !inner.partial[s].is_empty() {
                    let line = std::mem::take(&mut inner.partial[s]);
                    write_line(inner, s, &line, "F");
                }
            }
            let _ = inner.file.flush();
        }
        self.active.set(&self.path, false);
    }

    /// The text of the last `max` bytes written, for `FallbackToLogsOnError`-style messages.
    pub fn tail_text(&self, max_lines: usize) -> String {
        read_lines(
            &self.path,
            &ReadOptions {
                tail: Some(max_lines),
                ..Default::default()
            },
        )
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default()
    }

    /// A stdout or stderr stream for the sandbox.
    pub fn stream(&self, stderr: bool) -> LogStream {
        LogStream {
            sink: self.clone(),
            stream: usize::from(stderr),
        }
    }
}

fn write_line(inner: &mut SinkInner, stream: usize, text: &[u8], tag: &str) {
    let name = if stream == 1 { "stderr" } else { "stdout" };
    let mut out = format!("{} {name} {tag} ", timestamp()).into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    if inner.bytes > 0 && inner.bytes + out.len() as u64 > inner.rotation.max_bytes {
        if let Err(e) = rotate(inner) {
            tracing::warn!(error = %e, path = %inner.path.display(), "could not rotate a log file");
        }
    }
    inner.bytes += out.len() as u64;
    if let Err(e) = inner.file.write_all(&out) {
        tracing::warn!(error = %e, "could not write a log line");
    }
}

/// `N.log` becomes `N.log.1` (older ones shift up, the oldest goes) and a fresh `N.log` starts.
fn rotate(inner: &mut SinkInner) -> std::io::Result<()> {
    inner.file.flush()?;
    let keep = inner.rotation.max_files.max(1) - 1;
    if keep == 0 {
        inner.file = std::fs::File::create(&inner.path)?;
    } else {
        let _ = std::fs::remove_file(rotated(&inner.path, keep));
        for i in (1..keep).rev() {
            let from = rotated(&inner.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&inner.path, i + 1))?;
            }
        }
        std::fs::rename(&inner.path, rotated(&inner.path, 1))?;
        inner.file = std::fs::File::create(&inner.path)?;
    }
    inner.bytes = 0;
    Ok(())
}

/// One of a container's output streams; implements wasmtime-wasi's `StdoutStream`.
#[derive(Clone)]
pub struct LogStream {
    sink: LogSink,
    stream: usize,
}

impl wasmtime_wasi::cli::IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sink.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What part of a log to return.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Start reading at this byte offset (for follow).
    pub offset: u64,
}

/// Decode one CRI line into (timestamp, text-with-newline-if-full).
fn decode_line(line: &[u8]) -> Option<(&str, &[u8], bool)> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    Some((ts, text, tag == b"F"))
}

/// Render the log lines of a file from `opts.offset` on.
pub fn read_lines(path: &Path, opts: &ReadOptions) -> Result<Vec<u8>, LogError> {
    let data = std::fs::read(path).map_err(|e| LogError::Io(path.to_path_buf(), e))?;
    Ok(render(
        &data[(opts.offset as usize).min(data.len())..],
        opts,
    ))
}

/// Render CRI lines as `kubectl logs` prints them. Pure.
pub fn render(data: &[u8], opts: &ReadOptions) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(since) = opts.since {
        lines.retain(|l| {
            decode_line(l)
                .and_then(|(ts, _, _)| ts.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t >= since)
        });
    }
    if let Some(n) = opts.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for l in lines {
        let Some((ts, text, full)) = decode_line(l) else {
            continue;
        };
        if opts.timestamps {
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(text);
        if full {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs_are_built_from_valid_names_only() {
        let root = Path::new("/var/lib/skiff/pods");
        let uid = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc";
        assert_eq!(
            pod_dir(root, "default", "web-1.a", uid),
            Some(root.join(format!("default_web-1.a_{uid}")))
        );
        // Strings a compromised or buggy API could send: none becomes a path.
        for (ns, pod, uid) in [
            ("a", "../../../etc", "x"),
            ("../..", "p", "x"),
            ("a", "p", "../x"),
            ("a", "p", ""),
            ("", "p", "x"),
            ("a", "p/q", "x"),
            ("a", "p", "x/y"),
        ] {
            assert_eq!(pod_dir(root, ns, pod, uid), None, "{ns} {pod} {uid}");
        }
    }

    #[test]
    fn render_table() {
        let data = b"2026-01-01T00:00:01.000000000Z stdout F one\n2026-01-01T00:00:02.000000000Z stderr F two\n2026-01-01T00:00:03.000000000Z stdout P thr\n2026-01-01T00:00:03.000000000Z stdout F ee\n";
        let cases: Vec<(ReadOptions, &str)> = vec![
            (ReadOptions::default(), "one\ntwo\nthree\n"),
            (
                ReadOptions {
                    tail: Some(1),
                    ..Default::default()
                },
                "ee\n",
            ),
            (
                ReadOptions {
                    tail: Some(2),
                    timestamps: true,
                    ..Default::default()
                },
                "2026-01-01T00:00:03.000000000Z thr2026-01-01T00:00:03.000000000Z ee\n",
            ),
            (
                ReadOptions {
                    since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
                    ..Default::default()
                },
                "two\nthree\n",
            ),
        ];
        for (opts, want) in cases {
            assert_eq!(
                String::from_utf8(render(data, &opts)).unwrap(),
                want,
                "{opts:?}"
            );
        }
    }

    #[test]
    fn sink_writes_cri_lines() {
        let dir = std::env::temp_dir().join(format!("skiff-logs-{}", std::process::id()));
        let path = dir.join("c/0.log");
        let active = ActiveLogs::default();
        let sink = LogSink::create(&path, active.clone()).unwrap();
        sink.write(0, b"hel");
        sink.write(0, b"lo\nwor");
        sink.write(1, b"err\n");
        assert!(active.is_active(&path));
        sink.finish();
        assert!(!active.is_active(&path));
        let text = String::from_utf8(read_lines(&path, &ReadOptions::default()).unwrap()).unwrap();
        assert_eq!(text, "hello\nerr\nwor\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sink_rotates_by_size_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("skiff-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c/3.log");
        // Runs before the previous one are removed when a run starts.
        std::fs::create_dir_all(dir.join("c")).unwrap();
        for old in ["1.log", "1.log.1", "2.log"] {
            std::fs::write(dir.join("c").join(old), b"").unwrap();
        }
        let rotation = Rotation {
            max_bytes: 200,
            max_files: 3,
        };
        let sink = LogSink::with_rotation(&path, ActiveLogs::default(), rotation).unwrap();
        assert!(!dir.join("c/1.log").exists() && !dir.join("c/1.log.1").exists());
        assert!(
            dir.join("c/2.log").exists(),
            "the previous run stays for --previous"
        );
        for i in 0..20 {
            sink.write(0, format!("line {i:02}\n").as_bytes());
        }
        sink.finish();
        let files: Vec<u64> = [path.clone(), rotated(&path, 1), rotated(&path, 2)]
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap())
            .collect();
        assert!(files.iter().all(|&n| n > 0 && n <= 200), "{files:?}");
        assert!(!rotated(&path, 3).exists());
        let text = String::from_utf8(read_lines(&path, &ReadOptions::default()).unwrap()).unwrap();
        assert!(text.ends_with("line 19\n"), "{text}");
        assert!(
            !text.contains("line 00"),
            "the current file holds only the newest lines: {text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
