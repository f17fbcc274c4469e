//! Paths inside a pod's directories, opened the way the kubelet opens subPaths since
//! CVE-2017-1002101: component by component with `openat(O_NOFOLLOW)`, never through a
//! symbolic link and never above the directory they start from. A guest can create links in
//! any volume it may write; nothing here follows one. The directory found is kept as an open
//! handle ([`DirHandle`]): what the runtime preopens is that directory (through its
//! `/proc/self/fd` entry), so renaming or replacing names on the way afterwards changes nothing.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path inside a pod's directories was refused or could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    /// Not a relative path of plain names (absolute, `..`, empty).
    #[error("{0:?} must be a relative path without '..'")]
    NotRelative(String),
    /// A component is a symbolic link: refused, whatever it points at.
    #[error("{0:?} leads through a symbolic link, which is not followed")]
    Link(String),
    /// A component that must be a directory is something else.
    #[error("{0:?} is not a directory")]
    NotDir(String),
    /// The file to read is not a regular file (a FIFO, a device, a directory).
    #[error("{0:?} is not a regular file")]
    NotFile(String),
    /// Any other failure of the system call (the path as shown to users, not the host's).
    #[error("{path}: {source}")]
    Io {
        /// The path, relative to the directory it was opened in.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// An open directory. Cheap to clone (the descriptor is shared); the directory stays the one
/// that was checked however its names change later.
#[derive(Clone, Debug)]
pub struct DirHandle {
    fd: Arc<OwnedFd>,
    shown: PathBuf,
}

impl PartialEq for DirHandle {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}

impl Eq for DirHandle {}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

/// The plain names of a relative path (`.` dropped); an error for anything else.
fn names(rel: &Path) -> Result<Vec<&std::ffi::OsStr>, SafeFsError> {
    let shown = || SafeFsError::NotRelative(rel.display().to_string());
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(shown()),
        }
    }
    Ok(out)
}

/// `openat(O_DIRECTORY | O_NOFOLLOW)` of `name` in `dir`, telling a link (which Linux reports
/// as ENOTDIR there) from a file.
fn open_dir_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::NOTDIR) => {
            let is_link = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            Err(if is_link { Errno::LOOP } else { Errno::NOTDIR })
        }
        other => other,
    }
}

fn errno(path: &Path, e: Errno) -> SafeFsError {
    let shown = path.display().to_string();
    match e {
        Errno::LOOP => SafeFsError::Link(shown),
        Errno::NOTDIR => SafeFsError::NotDir(shown),
        e => SafeFsError::Io {
            path: shown,
            source: e.into(),
        },
    }
}

impl DirHandle {
    /// Open a directory of the node's own (the pod directory, an allowed host path, the claims
    /// root): its path is trusted, but its last component must not be a link.
    pub fn open(path: &Path) -> Result<DirHandle, SafeFsError> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| errno(path, e))?;
        Ok(DirHandle {
            fd: Arc::new(fd),
            shown: path.to_path_buf(),
        })
    }

    /// Open (with `create`, making what is missing, mode 0755) the directory `rel` beneath this
    /// one: plain names only, no component a symbolic link.
    pub fn open_dir(&self, rel: &Path, create: bool) -> Result<DirHandle, SafeFsError> {
        let mut cur: Arc<OwnedFd> = self.fd.clone();
        let mut walked = PathBuf::new();
        for name in names(rel)? {
            walked.push(name);
            let opened = match open_dir_at(&cur, name) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&*cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(&walked, e)),
                    }
                    open_dir_at(&cur, name)
                }
                other => other,
            };
            cur = Arc::new(opened.map_err(|e| errno(&walked, e))?);
        }
        Ok(DirHandle {
            fd: cur,
            shown: self.shown.join(rel),
        })
    }

    /// Read at most `max` bytes of the regular file `rel` beneath this directory, following no
    /// link and never blocking on a FIFO; `Ok(None)` when it does not exist.
    pub fn read_file(&self, rel: &Path, max: u64) -> Result<Option<Vec<u8>>, SafeFsError> {
        let parts = names(rel)?;
        let Some((file, dirs)) = parts.split_last() else {
            return Err(SafeFsError::NotRelative(rel.display().to_string()));
        };
        let dir = match self.open_dir(&dirs.iter().collect::<PathBuf>(), false) {
            Ok(d) => d,
            Err(SafeFsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&*dir.fd, *file, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(errno(rel, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| errno(rel, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(SafeFsError::NotFile(rel.display().to_string()));
        }
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(max)
            .read_to_end(&mut buf)
            .map_err(|source| SafeFsError::Io {
                path: rel.display().to_string(),
                source,
            })?;
        Ok(Some(buf))
    }

    /// Create (or truncate) the empty regular file `name` in this directory, not through a link.
    pub fn create_file(&self, name: &str) -> Result<(), SafeFsError> {
        names(Path::new(name))?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::TRUNC
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC;
        rustix::fs::openat(&*self.fd, name, flags, Mode::from_raw_mode(0o644))
            .map(drop)
            .map_err(|e| errno(Path::new(name), e))
    }

    /// Replace the regular file `rel` beneath this directory with `bytes` (mode 0600): written
    /// to a new file beside it and renamed over it, so a reader sees the old or the new content,
    /// never a mix; no component is followed through a link.
    pub fn replace_file(&self, rel: &Path, bytes: &[u8]) -> Result<(), SafeFsError> {
        use std::io::Write;
        let parts = names(rel)?;
        let Some((file, dirs)) = parts.split_last() else {
            return Err(SafeFsError::NotRelative(rel.display().to_string()));
        };
        let dir = self.open_dir(&dirs.iter().collect::<PathBuf>(), false)?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(file);
        tmp.push(".new");
        let _ = rustix::fs::unlinkat(&*dir.fd, &tmp, rustix::fs::AtFlags::empty());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*dir.fd, &tmp, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| errno(rel, e))?;
        std::fs::File::from(fd)
            .write_all(bytes)
            .map_err(|source| SafeFsError::Io {
                path: rel.display().to_string(),
                source,
            })?;
        rustix::fs::renameat(&*dir.fd, &tmp, &*dir.fd, *file).map_err(|e| errno(rel, e))
    }

    /// A path that names exactly this open directory (its `/proc/self/fd` entry), for APIs that
    /// open directories by path (wasmtime's preopens).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The path this directory was opened as, for messages and tests.
    pub fn shown(&self) -> &Path {
        &self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-safefs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn links_are_never_followed() {
        let d = scratch("links");
        let vol = d.join("vol");
        std::fs::create_dir_all(vol.join("real/inner")).unwrap();
        std::fs::write(vol.join("real/msg"), b"hello").unwrap();
        std::fs::write(d.join("secret"), b"host secret").unwrap();
        // The attacks a guest can plant inside its volume.
        symlink("../../..", vol.join("up")).unwrap();
        symlink("/", vol.join("root")).unwrap();
        symlink("real", vol.join("inside")).unwrap();
        symlink("../secret", vol.join("msg-link")).unwrap();
        std::fs::create_dir_all(vol.join("real/dir")).unwrap();
        symlink("/etc", vol.join("real/etc")).unwrap();
        let h = DirHandle::open(&vol).unwrap();

        assert!(h.open_dir(Path::new("real/inner"), false).is_ok());
        for bad in [
            "up",
            "root",
            "inside",
            "inside/inner",
            "real/etc",
            "real/etc/x",
        ] {
            for create in [false, true] {
                let r = h.open_dir(Path::new(bad), create);
                assert!(matches!(r, Err(SafeFsError::Link(_))), "{bad}: {r:?}");
            }
        }
        for bad in ["../x", "/etc", "a/../../b"] {
            assert!(matches!(
                h.open_dir(Path::new(bad), true),
                Err(SafeFsError::NotRelative(_))
            ));
        }
        // Nothing was created outside the volume through a link.
        assert!(!Path::new("/etc/x").exists());
        // create makes the missing directories, inside only.
        let made = h.open_dir(Path::new("new/deeper"), true).unwrap();
        assert!(vol.join("new/deeper").is_dir());
        assert_eq!(made.shown(), vol.join("new/deeper"));
        // The handle keeps naming the checked directory, even after the name is swapped for a link.
        std::fs::write(vol.join("new/deeper/f"), b"kept").unwrap();
        std::fs::rename(vol.join("new/deeper"), vol.join("new/moved")).unwrap();
        symlink("/", vol.join("new/deeper")).unwrap();
        assert_eq!(std::fs::read(made.proc_path().join("f")).unwrap(), b"kept");

        assert_eq!(
            h.read_file(Path::new("real/msg"), 100).unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(
            h.read_file(Path::new("real/msg"), 3).unwrap().unwrap(),
            b"hel"
        );
        assert!(h.read_file(Path::new("nothing"), 100).unwrap().is_none());
        assert!(matches!(
            h.read_file(Path::new("msg-link"), 100),
            Err(SafeFsError::Link(_))
        ));
        assert!(matches!(
            h.read_file(Path::new("root/etc/passwd"), 100),
            Err(SafeFsError::Link(_))
        ));
        assert!(matches!(
            h.read_file(Path::new("real"), 100),
            Err(SafeFsError::NotFile(_))
        ));

        symlink("../secret", vol.join("real/created")).unwrap();
        assert!(h
            .open_dir(Path::new("real"), false)
            .unwrap()
            .create_file("created")
            .is_err());
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"host secret");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn files_are_replaced_whole_and_never_through_a_link() {
        let d = scratch("replace");
        let vol = d.join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(d.join("secret"), b"host secret").unwrap();
        let h = DirHandle::open(&vol).unwrap();
        h.replace_file(Path::new("token"), b"one").unwrap();
        h.replace_file(Path::new("token"), b"two").unwrap();
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"two");
        h.replace_file(Path::new("sub/token"), b"three").unwrap();
        assert_eq!(std::fs::read(vol.join("sub/token")).unwrap(), b"three");
        // A link where the file (or its temporary name) goes is replaced, not written through.
        symlink("../secret", vol.join("planted")).unwrap();
        symlink("../secret", vol.join(".again.new")).unwrap();
        h.replace_file(Path::new("planted"), b"four").unwrap();
        h.replace_file(Path::new("again"), b"five").unwrap();
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"host secret");
        assert_eq!(std::fs::read(vol.join("planted")).unwrap(), b"four");
        // A link on the way is refused.
        symlink("..", vol.join("up")).unwrap();
        assert!(matches!(
            h.replace_file(Path::new("up/secret"), b"x"),
            Err(SafeFsError::Link(_))
        ));
        assert!(h.replace_file(Path::new("../secret"), b"x").is_err());
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"host secret");
        let _ = std::fs::remove_dir_all(&d);
    }
}
