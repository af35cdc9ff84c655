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

mod entries;
mod metadata;
mod resolve;

use std::cell::Cell;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;

/// Most bytes the tar reader may consume between two entries (headers, GNU long names, PAX
/// records): 4 MiB.
pub const MAX_METADATA_BYTES: u64 = 4 * 1024 * 1024;

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
                self.symlink(parent, last, &target, &meta, &name)
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
}

fn file_type(st: FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
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
