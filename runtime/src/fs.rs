//! Paths inside a root filesystem, resolved without ever leaving it.
//!
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to an
//! fd of the root, so `..` and absolute symlinks in an image are clamped to the root and
//! `/proc/self/...` magic links are refused. Mounts then target `/proc/self/fd/N` of the
//! resolved fd, never a path that could be swapped between check and use.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::Mode;

use crate::error::RuntimeError;
use crate::sys;

const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// An open root directory.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The path of `dest` relative to the root: absolute or not, `.` removed; `..` refused so that
/// a destination means the same thing before and after pivot_root.
pub fn relative(dest: &Path) -> Result<PathBuf, RuntimeError> {
    let mut out = PathBuf::new();
    for comp in dest.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "path {} must not contain ..",
                    dest.display()
                )))
            }
        }
    }
    Ok(out)
}

/// `path` (relative to the root, possibly with `..` and absolute parts from a symlink target)
/// folded lexically, clamped at the root, as RESOLVE_IN_ROOT treats it.
fn lexical_in_root(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::Prefix(_) => out.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

fn cstring(path: &Path) -> Result<CString, RuntimeError> {
    let bytes = path.as_os_str().as_bytes();
    let bytes = if bytes.is_empty() { b"." } else { bytes };
    CString::new(bytes).map_err(|_| {
        RuntimeError::InvalidSpec(format!("path {} contains a NUL byte", path.display()))
    })
}

impl Root {
    pub fn open(path: &Path) -> Result<Root, RuntimeError> {
        let c = cstring(path)?;
        let fd = sys::openat2(libc::AT_FDCWD, &c, libc::O_PATH | libc::O_DIRECTORY, 0, 0)
            .map_err(|e| RuntimeError::io("open root", path, e.into()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A root from a directory fd already open (`path` is for messages).
    pub fn from_fd(fd: OwnedFd, path: &Path) -> Root {
        Root {
            fd,
            path: path.to_path_buf(),
        }
    }

    /// Opens `rel` (relative to the root) with `flags`, resolving inside the root.
    pub fn open_in(&self, rel: &Path, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let c = CString::new(if rel.as_os_str().is_empty() {
            b".".to_vec()
        } else {
            rel.as_os_str().as_bytes().to_vec()
        })
        .map_err(|_| Errno::EINVAL)?;
        sys::openat2(self.fd.as_raw_fd(), &c, flags, mode, IN_ROOT)
    }

    /// Resolves `rel` to an O_PATH fd; `no_follow` refuses a symlink as the last component.
    pub fn resolve(&self, rel: &Path, no_follow: bool) -> Result<OwnedFd, Errno> {
        let flags = libc::O_PATH | if no_follow { libc::O_NOFOLLOW } else { 0 };
        let fd = self.open_in(rel, flags, 0)?;
        if no_follow {
            let st = nix::sys::stat::fstat(&fd)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(Errno::ELOOP);
            }
        }
        Ok(fd)
    }

    /// Creates the directory `rel` and its missing parents inside the root; returns an O_PATH
    /// fd of it. A dangling symlink on the way gets its target created, inside the root (as
    /// Docker makes a WORKDIR through one).
    pub fn mkdir_all(&self, rel: &Path) -> Result<OwnedFd, RuntimeError> {
        self.mkdir_all_following(rel, 0)
    }

    fn mkdir_all_following(&self, rel: &Path, links: u32) -> Result<OwnedFd, RuntimeError> {
        let err = |e: Errno| RuntimeError::io("create directory", self.path.join(rel), e.into());
        let mut prefix = PathBuf::new();
        let mut current = self
            .open_in(&prefix, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(err)?;
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            prefix.push(name);
            match self.open_in(&prefix, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(fd) => current = fd,
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EEXIST) => {
                            if let Some(target) = self.dangling_link_target(&prefix) {
                                if links >= 8 {
                                    return Err(err(Errno::ELOOP));
                                }
                                self.mkdir_all_following(&target, links + 1)?;
                            }
                        }
                        Err(e) => return Err(err(e)),
                    }
                    current = self
                        .open_in(&prefix, libc::O_PATH | libc::O_DIRECTORY, 0)
                        .map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(current)
    }

    /// Where the symlink `rel` points, as a path inside the root; None if it is no symlink.
    fn dangling_link_target(&self, rel: &Path) -> Option<PathBuf> {
        let link = self.open_in(rel, libc::O_PATH | libc::O_NOFOLLOW, 0).ok()?;
        let st = nix::sys::stat::fstat(&link).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return None;
        }
        let target = nix::fcntl::readlinkat(&link, "").ok()?;
        // A relative target counts from where the link really is: its parent as resolved
        // (through any links above it), not as written.
        let parent = self.resolved(rel.parent().unwrap_or(Path::new("")))?;
        Some(lexical_in_root(&parent.join(Path::new(&target))))
    }

    /// `rel` with every symlink on the way resolved, as a path relative to the root.
    fn resolved(&self, rel: &Path) -> Option<PathBuf> {
        let fd = self
            .open_in(rel, libc::O_PATH | libc::O_DIRECTORY, 0)
            .ok()?;
        let at = |fd: &OwnedFd| std::fs::read_link(sys::fd_path(fd)).ok();
        let (dir, root) = (at(&fd)?, at(&self.fd)?);
        dir.strip_prefix(&root).ok().map(Path::to_path_buf)
    }

    /// Resolves the file `rel`, creating it empty (and its parents) when missing; returns an
    /// O_PATH fd. Used as the target of file bind mounts. A dangling symlink as the last
    /// component (e.g. /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf) gets its
    /// target created, inside the root.
    pub fn ensure_file(&self, rel: &Path) -> Result<OwnedFd, RuntimeError> {
        let mut rel = rel.to_path_buf();
        for _ in 0..8 {
            let err = |e: Errno| RuntimeError::io("create file", self.path.join(&rel), e.into());
            match self.resolve(&rel, false) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(err(e)),
            }
            if let Ok(link) = self.open_in(&rel, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                let st = nix::sys::stat::fstat(&link).map_err(err)?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    let target = nix::fcntl::readlinkat(&link, "").map_err(err)?;
                    let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                    rel = lexical_in_root(&parent.join(Path::new(&target)));
                    continue;
                }
            }
            return self.create_file(&rel);
        }
        Err(RuntimeError::io(
            "create file",
            self.path.join(&rel),
            Errno::ELOOP.into(),
        ))
    }

    fn create_file(&self, rel: &Path) -> Result<OwnedFd, RuntimeError> {
        let err = |e: Errno| RuntimeError::io("create file", self.path.join(rel), e.into());
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or_else(|| err(Errno::EINVAL))?;
        let dir = self.mkdir_all(parent)?;
        let dir_rw = sys::openat2(
            dir.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            0,
        )
        .map_err(err)?;
        let cname = CString::new(name.as_bytes()).map_err(|_| err(Errno::EINVAL))?;
        // O_NOFOLLOW: a symlink that appeared here meanwhile is refused rather than followed.
        match nix::fcntl::openat(
            &dir_rw,
            cname.as_c_str(),
            nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
        self.resolve(rel, false).map_err(err)
    }

    /// Reads the regular file `rel` through the root, refusing FIFOs, devices and anything
    /// larger than `cap` bytes. `Ok(None)` when it does not exist.
    pub fn read_capped(&self, rel: &Path, cap: u64) -> Result<Option<Vec<u8>>, Errno> {
        use std::io::Read;
        let fd = match self.open_in(rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = nix::sys::stat::fstat(&fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EINVAL);
        }
        if st.st_size as u64 > cap {
            return Err(Errno::EFBIG);
        }
        let mut out = Vec::new();
        let file = std::fs::File::from(fd);
        file.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if out.len() as u64 > cap {
            return Err(Errno::EFBIG);
        }
        Ok(Some(out))
    }
}

/// Copies what is inside `from` into the existing directory `to` (which takes `from`'s owner
/// and mode): directories, regular
/// files, symlinks (as links, never followed) with their modes, owners and times; other file
/// types are skipped. For filling a new named volume from the image.
pub fn copy_tree_contents(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The volume's root takes the owner and mode of the image's directory too (as Docker's).
    let top = std::fs::metadata(from)?;
    std::os::unix::fs::chown(to, Some(top.uid()), Some(top.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(top.mode() & 0o7777))?;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in std::fs::read_dir(&src_dir)? {
            let entry = entry?;
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&src)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                std::fs::create_dir(&dst)?;
                stack.push((src, dst.clone()));
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else if kind.is_file() {
                std::fs::copy(&src, &dst)?;
            } else {
                continue;
            }
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
            if !kind.is_symlink() {
                std::fs::set_permissions(
                    &dst,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
            }
        }
    }
    Ok(())
}

/// Writes `content` to `path` through a temporary file beside it and a rename.
pub(crate) fn write_atomic(path: &Path, content: &str) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| RuntimeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_through_a_dangling_symlink_are_made_at_its_target_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(&root_path).unwrap();
        // /w -> /x/y (missing), and an absolute link that would leave the root if followed
        // on the host.
        std::os::unix::fs::symlink("/x/y", root_path.join("w")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("escaped"), root_path.join("out")).unwrap();
        let root = Root::open(&root_path).unwrap();
        root.mkdir_all(Path::new("w/z")).unwrap();
        assert!(root_path.join("x/y/z").is_dir());
        root.mkdir_all(Path::new("out/new")).unwrap();
        assert!(!dir.path().join("escaped").exists());
        assert!(root_path
            .join(dir.path().strip_prefix("/").unwrap())
            .join("escaped/new")
            .is_dir());
        // A relative target counts from the link's real place: /a -> /b/c, /b/c/d -> ../x.
        std::fs::create_dir_all(root_path.join("b/c")).unwrap();
        std::os::unix::fs::symlink("/b/c", root_path.join("al")).unwrap();
        std::os::unix::fs::symlink("../x", root_path.join("b/c/d")).unwrap();
        root.mkdir_all(Path::new("al/d/z")).unwrap();
        assert!(root_path.join("b/x/z").is_dir());
        // A loop of links ends in an error, not a hang.
        std::os::unix::fs::symlink("/l2", root_path.join("l1")).unwrap();
        std::os::unix::fs::symlink("/l1", root_path.join("l2")).unwrap();
        assert!(root.mkdir_all(Path::new("l1/c")).is_err());
    }

    #[test]
    fn dangling_symlinks_get_their_target_created_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            root_path.join("etc/resolv.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("hosts"), root_path.join("etc/hosts"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../../../x", root_path.join("etc/hostname")).unwrap();
        let root = Root::open(&root_path).unwrap();
        for f in ["etc/resolv.conf", "etc/hosts", "etc/hostname"] {
            root.ensure_file(Path::new(f)).unwrap();
        }
        assert!(root_path
            .join("run/systemd/resolve/stub-resolv.conf")
            .is_file());
        assert!(root_path
            .join(outside.path().strip_prefix("/").unwrap())
            .join("hosts")
            .is_file());
        assert!(root_path.join("x").is_file());
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "wrote outside the root"
        );
        std::os::unix::fs::symlink("loop", root_path.join("loop")).unwrap();
        assert!(root.ensure_file(Path::new("loop")).is_err());
    }
}
