//! Safe extraction of one layer tar into an empty directory, in OverlayFS on-disk form.
//!
//! The `tar` crate only parses; every filesystem change is made here, relative to directory
//! file descriptors, never by joining path strings:
//!
//! - Entry names are split into components. A leading `/` is dropped (the name is taken relative
//!   to the layer root), `.` and empty components are ignored, and any `..` component makes the
//!   whole layer fail: real layers never contain one and there is no safe meaning for it.
//! - The parent directory of an entry is resolved inside the layer root: first with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, else (missing parents, very long paths,
//!   old kernels) by a component-by-component walk with `O_NOFOLLOW` opens that expands symlinks
//!   itself as if the layer root were `/`, creating missing directories. A symlink in the layer
//!   can therefore redirect an entry only to somewhere else inside the layer root.
//! - The final component is never followed: files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//!   directories are opened with `O_NOFOLLOW|O_DIRECTORY` before chown/chmod/xattr/utimes are
//!   applied to the open descriptor; symlinks get `fchownat`/`utimensat` with
//!   `AT_SYMLINK_NOFOLLOW`.
//! - An existing entry of the same name is removed before the new one is made, except that a
//!   directory entry merges into an existing directory.
//! - Hardlink targets resolve like entry names and must already exist in this layer; the link is
//!   made with `linkat` without `AT_SYMLINK_FOLLOW`, so a hardlink to a symlink links the symlink.
//! - `.wh.NAME` becomes an OverlayFS whiteout (character device 0/0 named NAME) unless this layer
//!   itself already has NAME; `.wh..wh..opq` marks its directory opaque with
//!   `trusted.overlay.opaque=y` (when settable) and `user.overlay.opaque=y` (for `userxattr`
//!   mounts). `.wh.`, `.wh..` and `.wh...` are refused; other `.wh..wh.` names (AUFS metadata)
//!   are skipped.
//! - Image-supplied `trusted.overlay.*`, `user.overlay.*`, `user.gcr.*` and `security.selinux`
//!   xattrs are dropped; other xattrs are applied, ignoring ENOTSUP/EPERM.
//! - Devices are created only when really root (not in a user namespace); otherwise skipped.
//! - Ownership: when `chown` fails with EPERM or EINVAL (an ID outside the user namespace's
//!   mapping), the wanted owner is recorded in the xattr `user.gcr.owner` = "uid:gid".
//! - Metadata-only tar entries (GNU long names, PAX headers) may use at most
//!   [`MAX_METADATA_BYTES`] between two entries, so a hostile header cannot exhaust memory.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, FchmodatFlags, FileStat, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, linkat, mkfifoat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags,
};
use xattr::FileExt;

/// Most bytes the tar reader may consume between two entries (headers, GNU long names, PAX
/// records): 4 MiB.
pub const MAX_METADATA_BYTES: u64 = 4 * 1024 * 1024;

/// Symlinks followed while resolving one path (as the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// The xattr recording an owner that could not be set.
pub const OWNER_XATTR: &str = "user.gcr.owner";

/// Why a layer tar was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream could not be read (corrupt compression, truncation, bad header, I/O).
    #[error("reading the tar stream: {source}")]
    Read {
        #[source]
        source: io::Error,
    },
    /// An entry is hostile or malformed.
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    /// A filesystem operation on an entry failed.
    #[error("{op} {entry:?}: {source}")]
    Io {
        op: &'static str,
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create block and character devices (only sensible when really root).
    pub create_devices: bool,
    /// Most bytes of file content one layer may put on disk (runs of zeros become holes and
    /// do not count). Whatever the value, a layer also stops before it leaves the file system
    /// less than [`DISK_RESERVE`] free: a decompression bomb fails instead of filling the disk.
    pub max_written: Option<u64>,
}

/// Free space an unpack never takes.
pub const DISK_RESERVE: u64 = 64 << 20;

/// The environment variable that caps what one layer may write (bytes, or with a K, M, G or T
/// suffix).
pub const MAX_LAYER_SIZE_ENV: &str = "GCR_MAX_LAYER_SIZE";

impl UnpackOptions {
    /// Options for this process: devices only when running as root in the initial user
    /// namespace; the cap from `GCR_MAX_LAYER_SIZE` when set (an unreadable value is ignored
    /// with a warning, the free-space cap still applies).
    pub fn detect() -> UnpackOptions {
        let max_written = std::env::var(MAX_LAYER_SIZE_ENV).ok().and_then(|v| {
            let parsed = parse_size(&v);
            if parsed.is_none() {
                tracing::warn!(
                    "ignoring {MAX_LAYER_SIZE_ENV}={v:?}: use bytes or a K/M/G/T suffix"
                );
            }
            parsed
        });
        UnpackOptions {
            create_devices: nix::unistd::geteuid().is_root() && in_initial_user_namespace(),
            max_written,
        }
    }
}

/// `123`, `64K`, `10M`, `2G`, `1T` (powers of 1024; `KB`/`KiB` spellings too).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// True when `/proc/self/uid_map` maps the whole ID range identically (the initial user
/// namespace).
pub fn in_initial_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        }),
        Err(_) => false,
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    /// Entries applied.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Device entries skipped because devices may not be created.
    pub skipped_devices: u64,
}

/// Limits what the tar parser may read on its own between two entries.
struct BudgetReader<'a> {
    inner: &'a mut dyn Read,
    /// Bytes still allowed; `None` while an entry's data is being read.
    budget: Rc<Cell<Option<u64>>>,
}

impl Read for BudgetReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.budget.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar headers between two entries exceed {MAX_METADATA_BYTES} bytes"),
            ));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.set(Some(left - n as u64));
        Ok(n)
    }
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// A tar name normalised to `a/b/c` relative to the layer root (empty for the root itself):
/// leading `/`, `.` and empty components dropped, `..` folded lexically as Go's Clean does
/// (`a/../b` is `b`; nothing is looked up, so no link is followed); a `..` that would climb
/// above the root and NUL are refused.
fn normalize(name: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(name.len());
    let mut folded = false;
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err("the name climbs out of the root with \"..\"".to_string());
                }
                let keep = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(keep);
                folded = true;
            }
            c if c.contains(&0) => return Err("the name contains a NUL byte".to_string()),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if folded && out.is_empty() {
        // `a/..` names the root itself: no entry may replace it.
        return Err("the name climbs to the root with \"..\"".to_string());
    }
    Ok(out)
}

/// Split a normalised path into (parent, last component); None for the root.
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    })
}

/// A normalised path as a syscall argument ("." for the root).
fn arg(path: &[u8]) -> &OsStr {
    if path.is_empty() {
        OsStr::new(".")
    } else {
        os(path)
    }
}

fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// Is `e` the errno of a missing permission to chown (a single-ID user namespace, an unmapped
/// ID)?
fn chown_refused(e: Errno) -> bool {
    matches!(e, Errno::EPERM | Errno::EINVAL)
}

fn xattr_ignorable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOTSUP) | Some(Errno::EPERM) | Some(Errno::EACCES)
    )
}

/// Xattrs an image may not set: overlay's own (they would change what the mount shows), gcr's
/// owner record, and SELinux labels (the host's policy decides those).
fn xattr_allowed(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.gcr.")
        || name == b"security.selinux")
}

/// Metadata of one entry.
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'o> {
    root: OwnedFd,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    /// Bytes of content this layer may still write.
    budget: u64,
    /// Why the budget is what it is, for the error.
    budget_reason: String,
    /// Directory mtimes, applied at the end (adding entries changes them).
    dir_times: Vec<(Vec<u8>, TimeSpec)>,
    /// Recently resolved directories (joined path, O_PATH descriptor), newest first. Cleared
    /// whenever a directory is removed, since paths through it change meaning.
    cache: Vec<(Vec<u8>, OwnedFd)>,
}

/// Unpack the tar read from `tar` into the existing empty directory `dest`.
///
/// Reads until the end-of-archive marker; whatever follows it is left unread (the caller drains
/// and hashes it).
pub fn unpack(
    tar: &mut dyn Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        op: "opening layer directory",
        entry: dest.display().to_string(),
        source: e.into(),
    })?;
    let free = nix::sys::statvfs::fstatvfs(&root)
        .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
        .unwrap_or(u64::MAX);
    let room = free.saturating_sub(DISK_RESERVE);
    let (budget, budget_reason) = match opts.max_written {
        Some(max) if max <= room => (max, format!("{MAX_LAYER_SIZE_ENV}={max}")),
        _ => (
            room,
            format!(
                "the free space of {} ({free} bytes, of which {DISK_RESERVE} stay free)",
                dest.display()
            ),
        ),
    };
    let mut unpacker = Unpacker {
        root,
        opts,
        budget,
        budget_reason,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        cache: Vec::new(),
    };
    let budget = Rc::new(Cell::new(Some(MAX_METADATA_BYTES)));
    let reader = BudgetReader {
        inner: tar,
        budget: budget.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|source| UnpackError::Read { source })?;
    loop {
        budget.set(Some(MAX_METADATA_BYTES));
        let Some(entry) = entries.next() else { break };
        budget.set(None);
        let mut entry = entry.map_err(|source| UnpackError::Read { source })?;
        unpacker.apply(&mut entry)?;
        // Whatever the entry carries beyond what was used (data on a directory, a skipped
        // device...) is read here so the parser's budget only covers headers.
        io::copy(&mut entry, &mut io::sink()).map_err(|source| UnpackError::Read { source })?;
    }
    budget.set(None);
    unpacker.finish();
    Ok(unpacker.stats)
}

impl Unpacker<'_> {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let name = entry.path_bytes().into_owned();
        let entry_err = |reason: String| UnpackError::Entry {
            entry: lossy(&name),
            reason,
        };
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let path = normalize(&name).map_err(entry_err)?;
        let meta = self.meta(entry, &name)?;
        self.stats.entries += 1;

        let Some((parent, last)) = split_last(&path) else {
            // The layer root itself ("./" or "/").
            if kind == T::Directory {
                let fd = self.reopen_dir(
                    &self
                        .root
                        .try_clone()
                        .map_err(|e| io_err_io("dup", &name, e))?,
                    &name,
                )?;
                self.set_metadata(&fd, &meta, &name)?;
                self.dir_times.push((Vec::new(), meta.mtime));
                return Ok(());
            }
            return Err(entry_err("the entry has an empty name".to_string()));
        };

        if let Some(hidden) = last.strip_prefix(b".wh.") {
            return self.whiteout(parent, hidden, &name);
        }

        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let dir = self.resolve_parent(parent, &name)?;
                self.make_room(&dir, last, &name, false)?;
                self.regular(&dir, last, entry, &meta, &name)
            }
            T::Directory => {
                let dir = self.resolve_parent(parent, &name)?;
                self.directory(&dir, &path, &meta, &name)?;
                self.dir_times.push((path.clone(), meta.mtime));
                Ok(())
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(entry_err("symlink with an empty target".to_string()));
                }
                let dir = self.resolve_parent(parent, &name)?;
                self.make_room(&dir, last, &name, false)?;
                symlinkat(os(&target), &dir, os(last)).map_err(|e| io_err("symlink", &name, e))?;
                self.lchown(&dir, last, &meta, &name)?;
                let _ = nix::sys::stat::utimensat(
                    &dir,
                    os(last),
                    &meta.mtime,
                    &meta.mtime,
                    UtimensatFlags::NoFollowSymlink,
                );
                Ok(())
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(parent, last, &target, &name)
            }
            T::Char | T::Block | T::Fifo => self.special(kind, parent, last, entry, &meta, &name),
            other => {
                tracing::debug!(entry = %lossy(&name), kind = ?other, "skipping tar entry of unsupported type");
                Ok(())
            }
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |what: &str, e: io::Error| UnpackError::Entry {
            entry: lossy(name),
            reason: format!("bad {what} field: {e}"),
        };
        let uid = header.uid().map_err(|e| bad("uid", e))?;
        let gid = header.gid().map_err(|e| bad("gid", e))?;
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut mtime = TimeSpec::new(
            i64::try_from(header.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(0),
            0,
        );
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|source| UnpackError::Read { source })?
        {
            for ext in pax {
                let ext = ext.map_err(|source| UnpackError::Read { source })?;
                let key = ext.key_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr_allowed(xname) {
                        xattrs.push((xname.to_vec(), ext.value_bytes().to_vec()));
                    } else {
                        tracing::debug!(entry = %lossy(name), xattr = %lossy(xname), "dropping reserved xattr from image");
                    }
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    // ---- resolution ----

    /// The directory holding entry `parent/...`, created as needed, resolved inside the root.
    fn resolve_parent(&mut self, parent: &[u8], name: &[u8]) -> Result<OwnedFd, UnpackError> {
        self.resolve_cached(parent, true, name)
    }

    fn resolve_cached(
        &mut self,
        comps: &[u8],
        create: bool,
        name: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        let key = comps.to_vec();
        if let Some((_, fd)) = self.cache.iter().find(|(k, _)| *k == key) {
            return fd.try_clone().map_err(|e| io_err_io("dup", name, e));
        }
        let fd = self.resolve_dir(comps, create, name)?;
        self.remember(key, &fd, name)?;
        Ok(fd)
    }

    fn remember(&mut self, key: Vec<u8>, fd: &OwnedFd, name: &[u8]) -> Result<(), UnpackError> {
        const CACHE_SIZE: usize = 16;
        let copy = fd.try_clone().map_err(|e| io_err_io("dup", name, e))?;
        self.cache.insert(0, (key, copy));
        self.cache.truncate(CACHE_SIZE);
        Ok(())
    }

    /// Resolve `comps` inside the root to a directory (O_PATH descriptor). With `create`,
    /// missing directories are made (mode 0755), through symlinks as the kernel would, but never
    /// leaving the root.
    fn resolve_dir(&self, comps: &[u8], create: bool, name: &[u8]) -> Result<OwnedFd, UnpackError> {
        if comps.len() < 4000 {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2(&self.root, arg(comps), how) {
                Ok(fd) => return Ok(fd),
                // Missing parts, or no openat2 (old kernel, seccomp): walk by hand.
                Err(
                    Errno::ENOENT | Errno::ENOSYS | Errno::EPERM | Errno::EAGAIN | Errno::EXDEV,
                ) => {}
                Err(e) => return Err(resolve_err(name, comps, e)),
            }
        }
        self.walk(comps, create, name)
    }

    /// Component-by-component resolution with `O_NOFOLLOW`, expanding symlinks ourselves
    /// relative to the root.
    fn walk(&self, comps: &[u8], create: bool, name: &[u8]) -> Result<OwnedFd, UnpackError> {
        let path_fd = |fd: &OwnedFd, c: &[u8]| {
            openat(
                fd,
                os(c),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let root = path_fd(&self.root, b".").map_err(|e| io_err("opening layer root", name, e))?;
        let mut stack: Vec<OwnedFd> = vec![root];
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            comps.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut links = 0u32;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().ok_or_else(|| UnpackError::Entry {
                entry: lossy(name),
                reason: "internal: empty resolution stack".to_string(),
            })?;
            let st = match fstatat(cur, os(&c), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(io_err("stat", name, e)),
            };
            match st.map(file_type) {
                None if create => {
                    mkdirat(cur, os(&c), Mode::from_bits_truncate(0o755))
                        .map_err(|e| io_err("creating parent directory of", name, e))?;
                    let fd = path_fd(cur, &c).map_err(|e| io_err("opening parent of", name, e))?;
                    stack.push(fd);
                }
                None => {
                    return Err(UnpackError::Entry {
                        entry: lossy(name),
                        reason: format!("{:?} does not exist in this layer", lossy(&c)),
                    })
                }
                Some(SFlag::S_IFDIR) => {
                    let fd = path_fd(cur, &c).map_err(|e| io_err("opening parent of", name, e))?;
                    stack.push(fd);
                }
                Some(SFlag::S_IFLNK) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(UnpackError::Entry {
                            entry: lossy(name),
                            reason: "too many levels of symbolic links".to_string(),
                        });
                    }
                    let target = nix::fcntl::readlinkat(cur, os(&c))
                        .map_err(|e| io_err("reading symlink in", name, e))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                Some(_) => {
                    return Err(UnpackError::Entry {
                        entry: lossy(name),
                        reason: format!("parent {:?} is not a directory", lossy(&c)),
                    })
                }
            }
        }
        stack.pop().ok_or_else(|| UnpackError::Entry {
            entry: lossy(name),
            reason: "internal: empty resolution stack".to_string(),
        })
    }

    /// Open a real (not O_PATH) descriptor for the directory `fd` refers to.
    fn reopen_dir(&self, fd: &OwnedFd, name: &[u8]) -> Result<File, UnpackError> {
        let fd = openat(
            fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        Ok(File::from(fd))
    }

    /// Remove whatever is at `dir/last` (keeping a directory when `keep_dir`). Returns whether a
    /// directory is there afterwards.
    fn make_room(
        &mut self,
        dir: &OwnedFd,
        last: &[u8],
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let st = match fstatat(dir, os(last), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(io_err("stat", name, e)),
        };
        if file_type(st) == SFlag::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            // Paths through the removed directory are no longer valid.
            self.cache.clear();
            remove_tree_at(dir, last).map_err(|e| io_err_io("replacing directory", name, e))?;
        } else {
            unlinkat(dir, os(last), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("replacing", name, e))?;
        }
        Ok(false)
    }

    // ---- entry kinds ----

    fn regular<R: Read>(
        &mut self,
        dir: &OwnedFd,
        last: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let fd = openat(
            dir,
            os(last),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err("creating", name, e))?;
        let mut file = File::from(fd);
        let budget = self.budget;
        let (written, on_disk) = copy_sparse(entry, &mut file, budget).map_err(|e| match e {
            CopyError::Read(source) => UnpackError::Read { source },
            CopyError::Write(e) => io_err_io("writing", name, e),
            CopyError::Budget => UnpackError::Entry {
                entry: lossy(name),
                reason: format!(
                    "the layer writes more than {budget} bytes, the cap set by {}: refused as a possible decompression bomb (raise {MAX_LAYER_SIZE_ENV} or free disk space)",
                    self.budget_reason
                ),
            },
        })?;
        self.budget -= on_disk;
        self.stats.bytes = self.stats.bytes.saturating_add(written);
        self.set_metadata(&file, meta, name)?;
        futimens(&file, &meta.mtime, &meta.mtime)
            .map_err(|e| io_err("setting times of", name, e))?;
        Ok(())
    }

    fn directory(
        &mut self,
        dir: &OwnedFd,
        comps: &[u8],
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let Some((_, last)) = split_last(comps) else {
            return Ok(());
        };
        let exists = self.make_room(dir, last, name, true)?;
        if !exists {
            mkdirat(dir, os(last), Mode::from_bits_truncate(0o700))
                .map_err(|e| io_err("creating directory", name, e))?;
        }
        // O_NOFOLLOW: if something swapped a symlink in, this fails instead of following it.
        let fd = openat(
            dir,
            os(last),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        let file = File::from(fd);
        self.set_metadata(&file, meta, name)?;
        // Children usually follow their directory: remember it.
        let path_fd = openat(
            &file,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("opening directory", name, e))?;
        self.remember(comps.to_vec(), &path_fd, name)
    }

    fn hardlink(
        &mut self,
        parent: &[u8],
        last: &[u8],
        target: &[u8],
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |reason: String| UnpackError::Entry {
            entry: lossy(name),
            reason,
        };
        let tpath = normalize(target)
            .map_err(|r| bad(format!("hardlink target {:?}: {r}", lossy(target))))?;
        let Some((tparent, tlast)) = split_last(&tpath) else {
            return Err(bad("hardlink with an empty target".to_string()));
        };
        let tdir = self.resolve_dir(tparent, false, name).map_err(|_| {
            bad(format!(
                "hardlink target {:?} is not in this layer",
                lossy(target)
            ))
        })?;
        let tst = match fstatat(&tdir, os(tlast), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                return Err(bad(format!(
                    "hardlink target {:?} is not in this layer",
                    lossy(target)
                )))
            }
            Err(e) => return Err(io_err("stat hardlink target of", name, e)),
        };
        if file_type(tst) == SFlag::S_IFDIR {
            return Err(bad(format!(
                "hardlink target {:?} is a directory",
                lossy(target)
            )));
        }
        let dir = self.resolve_parent(parent, name)?;
        if let Ok(st) = fstatat(&dir, os(last), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                return Ok(());
            }
        }
        self.make_room(&dir, last, name, false)?;
        linkat(
            &tdir,
            os(tlast),
            &dir,
            os(last),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| io_err("hardlinking", name, e))
    }

    fn special<R: Read>(
        &mut self,
        kind: tar::EntryType,
        parent: &[u8],
        last: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let is_device = kind != tar::EntryType::Fifo;
        if is_device && !self.opts.create_devices {
            tracing::debug!(entry = %lossy(name), "skipping device node: not root in the initial user namespace");
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let dir = self.resolve_parent(parent, name)?;
        self.make_room(&dir, last, name, false)?;
        let perm = Mode::from_bits_truncate(0o600);
        if is_device {
            let header = entry.header();
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let sflag = if kind == tar::EntryType::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknodat(
                &dir,
                os(last),
                sflag,
                perm,
                makedev(major.into(), minor.into()),
            )
            .map_err(|e| io_err("creating device", name, e))?;
        } else {
            mkfifoat(&dir, os(last), perm).map_err(|e| io_err("creating fifo", name, e))?;
        }
        self.lchown(&dir, last, meta, name)?;
        // Just created in our private directory and checked not to be a symlink by O_EXCL-like
        // mknod semantics, so following is safe here (fchmodat cannot skip symlinks portably).
        fchmodat(
            &dir,
            os(last),
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| io_err("chmod", name, e))?;
        let _ = nix::sys::stat::utimensat(
            &dir,
            os(last),
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        );
        Ok(())
    }

    fn whiteout(&mut self, parent: &[u8], hidden: &[u8], name: &[u8]) -> Result<(), UnpackError> {
        let bad = |reason: &str| UnpackError::Entry {
            entry: lossy(name),
            reason: reason.to_string(),
        };
        if hidden == b".wh..opq" {
            let dir = self.resolve_parent(parent, name)?;
            let file = self.reopen_dir(&dir, name)?;
            let mut marked = false;
            for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
                match file.set_xattr(key, b"y") {
                    Ok(()) => marked = true,
                    Err(e) if xattr_ignorable(&e) => {
                        tracing::debug!(entry = %lossy(name), xattr = key, error = %e, "cannot set opaque marker")
                    }
                    Err(e) => return Err(io_err_io("marking opaque", name, e)),
                }
            }
            if !marked {
                return Err(bad("the filesystem supports neither trusted.* nor user.* xattrs, so an opaque directory cannot be marked"));
            }
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            tracing::debug!(entry = %lossy(name), "skipping AUFS metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(bad("malformed whiteout"));
        }
        let dir = self.resolve_parent(parent, name)?;
        match fstatat(&dir, os(hidden), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            // The layer itself has this name: a whiteout only hides lower layers, and the
            // layer's own entry already does that.
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err("stat", name, e)),
        }
        mknodat(
            &dir,
            os(hidden),
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|e| io_err("creating whiteout", name, e))
    }

    // ---- metadata ----

    /// chown (or record the owner), then chmod (chown clears setuid bits), then xattrs.
    fn set_metadata(&self, file: &File, meta: &Meta, name: &[u8]) -> Result<(), UnpackError> {
        match fchown(
            file,
            Some(Uid::from_raw(id32(meta.uid))),
            Some(Gid::from_raw(id32(meta.gid))),
        ) {
            Ok(()) => {}
            Err(e) if chown_refused(e) => {
                let owner = format!("{}:{}", meta.uid, meta.gid);
                if let Err(e) = file.set_xattr(OWNER_XATTR, owner.as_bytes()) {
                    tracing::debug!(entry = %lossy(name), error = %e, "cannot record owner");
                }
            }
            Err(e) => return Err(io_err("chown", name, e)),
        }
        fchmod(file, Mode::from_bits_truncate(meta.mode)).map_err(|e| io_err("chmod", name, e))?;
        for (key, value) in &meta.xattrs {
            if let Err(e) = file.set_xattr(os(key), value) {
                if xattr_ignorable(&e) {
                    tracing::debug!(entry = %lossy(name), xattr = %lossy(key), error = %e, "xattr not applied");
                } else {
                    return Err(io_err_io("setting xattr on", name, e));
                }
            }
        }
        Ok(())
    }

    fn lchown(
        &self,
        dir: &OwnedFd,
        last: &[u8],
        meta: &Meta,
        name: &[u8],
    ) -> Result<(), UnpackError> {
        match fchownat(
            dir,
            os(last),
            Some(Uid::from_raw(id32(meta.uid))),
            Some(Gid::from_raw(id32(meta.gid))),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(e) if chown_refused(e) => {
                // user.* xattrs are not allowed on symlinks and device nodes.
                tracing::debug!(entry = %lossy(name), uid = meta.uid, gid = meta.gid, "owner cannot be set or recorded");
                Ok(())
            }
            Err(e) => Err(io_err("chown", name, e)),
        }
    }

    /// Apply the deferred directory mtimes, in entry order so that the cache finds each
    /// directory's parent.
    fn finish(&mut self) {
        self.cache.clear();
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in &times {
            let result = match split_last(path) {
                None => futimens(&self.root, mtime, mtime),
                Some((parent, last)) => {
                    let Ok(dir) = self.resolve_cached(parent, false, b"") else {
                        continue;
                    };
                    if let Ok(fd) = openat(
                        &dir,
                        os(last),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        let _ = self.remember(path.clone(), &fd, b"");
                    }
                    nix::sys::stat::utimensat(
                        &dir,
                        os(last),
                        mtime,
                        mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                }
            };
            if let Err(e) = result {
                tracing::debug!(dir = %lossy(path), error = %e, "cannot set directory mtime");
            }
        }
    }
}

/// Tar IDs are 64-bit; anything beyond u32 cannot exist on Linux and is clamped to
/// "nobody"-like u32::MAX - 1, which chown will refuse (then it is recorded).
fn id32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX - 1)
}

fn file_type(st: FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let padded = format!("{digits:0<9}");
        nanos = padded.parse().ok()?;
        if secs < 0 && nanos > 0 {
            return Some(TimeSpec::new(secs.checked_sub(1)?, 1_000_000_000 - nanos));
        }
    }
    Some(TimeSpec::new(secs, nanos))
}

fn io_err(op: &'static str, name: &[u8], e: Errno) -> UnpackError {
    UnpackError::Io {
        op,
        entry: lossy(name),
        source: e.into(),
    }
}

fn io_err_io(op: &'static str, name: &[u8], e: io::Error) -> UnpackError {
    UnpackError::Io {
        op,
        entry: lossy(name),
        source: e,
    }
}

fn resolve_err(name: &[u8], path: &[u8], e: Errno) -> UnpackError {
    UnpackError::Entry {
        entry: lossy(name),
        reason: format!(
            "cannot resolve parent {:?} inside the layer: {e}",
            lossy(path)
        ),
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// More than the budget of bytes on disk.
    Budget,
}

/// Copy an entry's data, turning runs of zero blocks into holes, writing at most `budget`
/// bytes. Returns the logical size and the bytes written (holes excluded).
fn copy_sparse(src: &mut dyn Read, dst: &mut File, budget: u64) -> Result<(u64, u64), CopyError> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    let mut on_disk: u64 = 0;
    let mut pending_hole = false;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if filled == CHUNK && chunk.iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(CHUNK as i64))
                .map_err(CopyError::Write)?;
            pending_hole = true;
        } else {
            on_disk += filled as u64;
            if on_disk > budget {
                return Err(CopyError::Budget);
            }
            dst.write_all(chunk).map_err(CopyError::Write)?;
            pending_hole = false;
        }
        total += filled as u64;
        if filled < CHUNK {
            break;
        }
    }
    if pending_hole {
        dst.set_len(total).map_err(CopyError::Write)?;
    }
    Ok((total, on_disk))
}

/// Remove the directory `dir/name` and everything in it, never following symlinks.
fn remove_tree_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    // An explicit stack instead of recursion: layer trees can be thousands of levels deep.
    let open_dir = |parent: &OwnedFd, n: &[u8]| {
        openat(
            parent,
            os(n),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    // Only the first subdirectory found is descended into; the parent is listed again when it
    // is done. That keeps one descriptor per level.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(dir.try_clone()?, name.to_vec())];
    while let Some((parent, n)) = stack.last() {
        let fd = open_dir(parent, n)?;
        let mut subdir = None;
        let mut listing = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for ent in listing.iter() {
            let ent = ent?;
            let child = ent.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            let st = fstatat(&fd, child, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if file_type(st) == SFlag::S_IFDIR {
                if subdir.is_none() {
                    subdir = Some(child.to_vec());
                }
            } else {
                unlinkat(&fd, child, UnlinkatFlags::NoRemoveDir)?;
            }
        }
        match subdir {
            None => {
                unlinkat(parent, os(n), UnlinkatFlags::RemoveDir)?;
                stack.pop();
            }
            Some(s) => stack.push((fd, s)),
        }
    }
    Ok(())
}
