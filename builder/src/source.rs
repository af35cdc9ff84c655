//! COPY and ADD: finding the sources (build context through its ignore file, or another
//! stage's root), hashing them for the cache, and writing them into an image root.

use gcr_storage::compression::ArchiveCompression;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gcr_grammar::IgnoreMatcher;
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, Confine, ResolveError};

/// Where COPY sources are read from.
pub(crate) struct SourceTree {
    pub root: PathBuf,
    pub confine: Confine,
    pub ignore: Option<IgnoreMatcher>,
    /// "build context" or "stage NAME", for messages.
    pub label: String,
    /// Keep the sources' owners (another stage) or use 0:0 (the context).
    pub preserve_owner: bool,
    /// `COPY --exclude` patterns, matched against paths relative to each source.
    pub exclude: Option<IgnoreMatcher>,
    /// `COPY --parents`: keep each source's path below the destination.
    pub parents: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Fifo,
}

/// One thing to write, relative to the destination.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Host path to read from (None for inline content).
    pub src: Option<PathBuf>,
    pub data: Option<Vec<u8>>,
    /// Path below the destination; empty means the destination itself.
    pub rel: PathBuf,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    /// (device, inode) of a source file with several links: copies keep them linked.
    pub link_key: Option<(u64, u64)>,
}

/// The sources of one COPY, resolved.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub entries: Vec<Entry>,
    /// Number of top-level sources (a match of a file or a directory).
    pub tops: usize,
    /// Some source was a glob or there were several.
    pub multiple: bool,
    /// Top-level sources that are directories.
    pub top_dirs: usize,
}

fn entry_from_meta(
    src: &Path,
    rel: PathBuf,
    meta: &Metadata,
    preserve_owner: bool,
) -> Option<Entry> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(src).ok()?)
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        // Devices, sockets and overlay whiteouts are not copied.
        return None;
    };
    let (uid, gid) = if preserve_owner {
        let (u, g) = crate::commit::owner_of(src, meta);
        (u as u32, g as u32)
    } else {
        (0, 0)
    };
    Some(Entry {
        src: Some(src.to_path_buf()),
        data: None,
        rel,
        size: if kind == Kind::File { meta.len() } else { 0 },
        kind,
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        mtime: meta.mtime(),
        link_key: (ft.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
    })
}

impl SourceTree {
    fn excluded(&self, below: &Path) -> bool {
        match &self.exclude {
            Some(m) => m.matches(&below.to_string_lossy()),
            None => false,
        }
    }

    fn ignored(&self, rel: &Path) -> bool {
        match &self.ignore {
            Some(m) => m.matches(&rel.to_string_lossy()),
            None => false,
        }
    }

    /// Resolve one source as written (may hold globs) to (relative path, host path) pairs.
    fn expand(&self, source: &str) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        let rel = fsutil::clean_relative(source)
            .ok_or_else(|| format!("source {source:?} is outside the {}", self.label))?;
        let mut current: Vec<(PathBuf, PathBuf)> = vec![(PathBuf::new(), self.root.clone())];
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        for part in &parts {
            let mut next = Vec::new();
            for (rel_so_far, _) in &current {
                if fsutil::has_glob(part) {
                    let dir = self.resolve_rel(rel_so_far, source)?;
                    let Ok(list) = fs::read_dir(&dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = list
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| fsutil::glob_match(part, n))
                        .collect();
                    names.sort();
                    for n in names {
                        let r = rel_so_far.join(&n);
                        if self.ignored(&r) {
                            continue;
                        }
                        let host = self.resolve_rel(&r, source)?;
                        next.push((r, host));
                    }
                } else {
                    let r = rel_so_far.join(part);
                    match fsutil::resolve(&self.root, &r, self.confine) {
                        Ok(host) => next.push((r, host)),
                        Err(ResolveError::NotFound) => {}
                        Err(ResolveError::Escapes) => {
                            return Err(format!(
                                "source {source:?} leads outside the {} through a symlink",
                                self.label
                            ))
                        }
                        Err(e) => return Err(format!("cannot resolve {source:?}: {e}")),
                    }
                }
            }
            current = next;
        }
        current.retain(|(r, _)| r.as_os_str().is_empty() || !self.ignored(r));
        Ok(current)
    }

    fn resolve_rel(&self, rel: &Path, source: &str) -> Result<PathBuf, String> {
        fsutil::resolve(&self.root, rel, self.confine).map_err(|e| match e {
            ResolveError::Escapes => format!(
                "source {source:?} leads outside the {} through a symlink",
                self.label
            ),
            e => format!("cannot resolve {source:?}: {e}"),
        })
    }

    /// Everything below the directory `host` (context-relative `rel`), in walk order, with
    /// paths relative to `host`. Ignored entries are left out.
    fn walk(&self, host: &Path, rel: &Path, below: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(host)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let child_rel = rel.join(&name);
            let child_host = host.join(&name);
            let child_below = below.join(&name);
            let meta = fs::symlink_metadata(&child_host)?;
            if self.excluded(&child_below) {
                continue;
            }
            if self.ignored(&child_rel) {
                let reinclude = self.ignore.as_ref().is_some_and(|m| m.has_exclusions());
                if meta.is_dir() && reinclude {
                    let mut inner = Vec::new();
                    self.walk(&child_host, &child_rel, &child_below, &mut inner)?;
                    if !inner.is_empty() {
                        if let Some(e) = entry_from_meta(
                            &child_host,
                            child_below.clone(),
                            &meta,
                            self.preserve_owner,
                        ) {
                            out.push(e);
                        }
                        out.extend(inner);
                    }
                }
                continue;
            }
            let Some(entry) =
                entry_from_meta(&child_host, child_below.clone(), &meta, self.preserve_owner)
            else {
                continue;
            };
            let is_dir = entry.kind == Kind::Dir;
            out.push(entry);
            if is_dir {
                self.walk(&child_host, &child_rel, &child_below, out)?;
            }
        }
        Ok(())
    }

    /// Collect the entries of all `sources`. A directory contributes its contents; a file
    /// itself (named by its base name).
    pub(crate) fn collect(&self, sources: &[String]) -> Result<Collected, String> {
        let mut out = Collected {
            multiple: sources.len() > 1 || sources.iter().any(|s| fsutil::has_glob(s)),
            ..Default::default()
        };
        for source in sources {
            let matches = self.expand(source)?;
            if matches.is_empty() {
                return Err(if fsutil::has_glob(source) {
                    format!("no files in the {} match {source:?}", self.label)
                } else {
                    format!("{source:?} not found in the {}", self.label)
                });
            }
            for (rel, host) in matches {
                let meta =
                    fs::metadata(&host).map_err(|e| format!("cannot read {source:?}: {e}"))?;
                out.tops += 1;
                if meta.is_dir() {
                    out.top_dirs += 1;
                    let below = if self.parents {
                        if let Some(e) =
                            entry_from_meta(&host, rel.clone(), &meta, self.preserve_owner)
                        {
                            out.entries.push(e);
                        }
                        rel.clone()
                    } else {
                        PathBuf::new()
                    };
                    self.walk(&host, &rel, &below, &mut out.entries)
                        .map_err(|e| format!("cannot read {source:?}: {e}"))?;
                } else {
                    let base = if self.parents {
                        rel.clone()
                    } else {
                        rel.file_name().map(PathBuf::from).unwrap_or_default()
                    };
                    if self.excluded(Path::new(rel.file_name().unwrap_or_default())) {
                        continue;
                    }
                    if let Some(mut e) = entry_from_meta(&host, base, &meta, self.preserve_owner) {
                        // `fs::metadata` followed a top-level link: record the file itself.
                        e.src = Some(host.clone());
                        out.entries.push(e);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A hash of what would be written: names, types, modes, owners, sizes, link targets and
/// contents (not mtimes).
pub(crate) fn content_hash(entries: &[Entry]) -> Result<String, String> {
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        let kind = match &e.kind {
            Kind::Dir => "d".to_string(),
            Kind::File => "f".to_string(),
            Kind::Fifo => "p".to_string(),
            Kind::Symlink(t) => format!("l{}", t.display()),
        };
        h.update(format!("{kind}\0{:o}\0{}:{}\0{}\0", e.mode, e.uid, e.gid, e.size).as_bytes());
        if e.kind == Kind::File {
            if let Some(data) = &e.data {
                h.update(Sha256::digest(data));
            } else if let Some(src) = &e.src {
                let mut file = open_nofollow(src)
                    .map_err(|err| format!("cannot read {}: {err}", src.display()))?;
                let mut fh = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file
                        .read(&mut buf)
                        .map_err(|err| format!("cannot read {}: {err}", src.display()))?;
                    if n == 0 {
                        break;
                    }
                    fh.update(&buf[..n]);
                }
                h.update(fh.finalize());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// How the entries are written.
pub(crate) struct WriteOptions {
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
}

/// A `--chmod` value: octal, or symbolic as chmod(1) writes it (BuildKit's Dockerfile 1.14
/// takes both), e.g. `u=rwX,go=rX` or `+x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<SymbolicClause>),
}

/// `[ugoa]*` followed by operations `[+-=]` with permissions `[rwxXst]*` or a class `[ugo]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SymbolicClause {
    /// Mode bits of the classes named (all of them when none is).
    who: u32,
    ops: Vec<(char, SymbolicPerms)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SymbolicPerms {
    Bits {
        bits: u32,
        conditional_x: bool,
    },
    /// Copy the permissions another class has now (`g=u`).
    Class(char),
}

impl Chmod {
    pub(crate) fn parse(text: &str) -> Result<Chmod, String> {
        let bad = || {
            format!(
                "--chmod={text}: use an octal mode such as 0755 or a symbolic one such as u=rwx,go=rx"
            )
        };
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(bad);
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let mut chars = clause.chars().peekable();
            let mut who = 0;
            while let Some(c) = chars.next_if(|c| "ugoa".contains(*c)) {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next_if(|c| "+-=".contains(*c)) {
                let perms = match chars.next_if(|c| "ugo".contains(*c)) {
                    Some(class) => SymbolicPerms::Class(class),
                    None => {
                        let (mut bits, mut conditional_x) = (0, false);
                        while let Some(p) = chars.next_if(|c| "rwxXst".contains(*c)) {
                            match p {
                                'r' => bits |= 0o444,
                                'w' => bits |= 0o222,
                                'x' => bits |= 0o111,
                                'X' => conditional_x = true,
                                's' => bits |= 0o6000,
                                _ => bits |= 0o1000,
                            }
                        }
                        SymbolicPerms::Bits {
                            bits,
                            conditional_x,
                        }
                    }
                };
                ops.push((op, perms));
            }
            if ops.is_empty() || chars.next().is_some() {
                return Err(bad());
            }
            clauses.push(SymbolicClause { who, ops });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode an entry with `mode` gets (no umask, so the result is reproducible).
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perms) in &clause.ops {
                let bits = match perms {
                    SymbolicPerms::Bits {
                        bits,
                        conditional_x,
                    } => {
                        let x = *conditional_x && (is_dir || mode & 0o111 != 0);
                        bits | if x { 0o111 } else { 0 }
                    }
                    SymbolicPerms::Class(c) => {
                        let shift = match c {
                            'u' => 6,
                            'g' => 3,
                            _ => 0,
                        };
                        ((mode >> shift) & 0o7) * 0o111
                    }
                };
                let affected = bits & clause.who;
                mode = match op {
                    '+' => mode | affected,
                    '-' => mode & !affected,
                    _ => {
                        // As chmod(1): `=` keeps a directory's set-id bits it does not name.
                        let cleared = if is_dir {
                            clause.who & !0o6000
                        } else {
                            clause.who
                        };
                        (mode & !cleared) | affected
                    }
                };
            }
        }
        mode
    }
}

/// Write `entries` into the image root `root` at `dest` (absolute in the image). `dest_is_dir`
/// says whether the destination is a directory receiving entries by name.
pub(crate) fn write_entries(
    root: &Path,
    dest: &Path,
    dest_is_dir: bool,
    entries: &[Entry],
    opts: &WriteOptions,
) -> Result<(), String> {
    let dest_rel = fsutil::clean_relative(&dest.to_string_lossy()).unwrap_or_default();
    let dir_owner = opts.chown.unwrap_or((0, 0));
    let mut created = Vec::new();
    let base_dir_rel = if dest_is_dir {
        dest_rel.clone()
    } else {
        dest_rel.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    fsutil::mkdir_in_root(root, &base_dir_rel, dir_owner, &mut created)
        .map_err(|e| format!("cannot create /{}: {e}", base_dir_rel.display()))?;
    let mut linked: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for e in entries {
        // Without a directory destination there is exactly one file: it becomes `dest`.
        let target_rel = if dest_is_dir {
            dest_rel.join(&e.rel)
        } else {
            dest_rel.clone()
        };
        let first = e.link_key.and_then(|k| linked.get(&k)).cloned();
        let written = write_one(root, &target_rel, e, opts, first.as_deref())
            .map_err(|err| format!("cannot write /{}: {err}", target_rel.display()))?;
        if let Some(k) = e.link_key {
            linked.entry(k).or_insert(written);
        }
    }
    Ok(())
}

/// Write one entry at `target_rel`; a file whose source is linked to one already written
/// (`link_to`) becomes a hard link to it. Returns the host path written.
fn write_one(
    root: &Path,
    target_rel: &Path,
    e: &Entry,
    opts: &WriteOptions,
    link_to: Option<&Path>,
) -> io::Result<PathBuf> {
    let host = match fsutil::resolve_parent(root, target_rel, Confine::InRoot) {
        Ok(p) => p,
        Err(ResolveError::NotFound) => {
            let parent = target_rel.parent().unwrap_or(Path::new(""));
            let mut created = Vec::new();
            let dir =
                fsutil::mkdir_in_root(root, parent, opts.chown.unwrap_or((0, 0)), &mut created)?;
            dir.join(target_rel.file_name().unwrap_or_default())
        }
        Err(err) => return Err(io::Error::other(err.to_string())),
    };
    let (uid, gid) = opts.chown.unwrap_or((e.uid, e.gid));
    let mode = match &opts.chmod {
        Some(chmod) => chmod.apply(e.mode, matches!(e.kind, Kind::Dir)),
        None => e.mode,
    };
    let existing = fs::symlink_metadata(&host).ok();
    match &e.kind {
        Kind::Dir => {
            let dir = match existing {
                Some(m) if m.is_dir() => host.clone(),
                Some(m) if m.file_type().is_symlink() => {
                    // A link to a directory in the image: write through it, inside the root.
                    match fsutil::resolve(root, target_rel, Confine::InRoot) {
                        Ok(p) if p.is_dir() => p,
                        _ => {
                            fs::remove_file(&host)?;
                            fs::create_dir(&host)?;
                            host.clone()
                        }
                    }
                }
                Some(_) => {
                    fs::remove_file(&host)?;
                    fs::create_dir(&host)?;
                    host.clone()
                }
                None => {
                    fs::create_dir(&host)?;
                    host.clone()
                }
            };
            set_owner(&dir, uid, gid)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
            set_mtime(&dir, e.mtime)?;
        }
        Kind::File if link_to.is_some() => {
            remove_non_dir(&host, existing.as_ref())?;
            if let Some(first) = link_to {
                fs::hard_link(first, &host)?;
            }
        }
        Kind::File => {
            remove_non_dir(&host, existing.as_ref())?;
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&host)?;
            if let Some(data) = &e.data {
                io::Write::write_all(&mut out, data)?;
            } else if let Some(src) = &e.src {
                let mut input = open_nofollow(src)?;
                io::copy(&mut input, &mut out)?;
            }
            set_owner(&host, uid, gid)?;
            out.set_permissions(fs::Permissions::from_mode(mode))?;
            out.set_modified(system_time(e.mtime))?;
        }
        Kind::Symlink(target) => {
            remove_non_dir(&host, existing.as_ref())?;
            std::os::unix::fs::symlink(target, &host)?;
            set_owner(&host, uid, gid)?;
            set_mtime(&host, e.mtime)?;
        }
        Kind::Fifo => {
            remove_non_dir(&host, existing.as_ref())?;
            nix::unistd::mkfifo(&host, nix::sys::stat::Mode::from_bits_truncate(mode))?;
            set_owner(&host, uid, gid)?;
        }
    }
    Ok(host)
}

/// Give `path` (not followed) the owner `uid:gid`. An owner outside the rootless namespace's
/// mapping is recorded in the store's owner xattr instead, which the layer commit writes
/// into the tar (symlinks cannot carry it and keep the mapped owner).
pub(crate) fn set_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) => {
            if fs::symlink_metadata(path)?.file_type().is_symlink() {
                return Ok(());
            }
            xattr::set(
                path,
                gcr_storage::unpack::OWNER_XATTR,
                format!("{uid}:{gid}").as_bytes(),
            )
        }
        Err(e) => Err(e),
    }
}

/// Open a source file without following a symlink in its last component (the walk saw a
/// regular file there; a swapped-in link must not redirect the read).
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn remove_non_dir(host: &Path, existing: Option<&Metadata>) -> io::Result<()> {
    match existing {
        Some(m) if m.is_dir() => Err(io::Error::other(
            "a directory is in the way; cannot replace it with a file",
        )),
        Some(_) => fs::remove_file(host),
        None => Ok(()),
    }
}

fn system_time(secs: i64) -> std::time::SystemTime {
    if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Whether `bytes` start like an archive ADD unpacks: tar (possibly gzip/zstd/bzip2/xz
/// compressed). Only gzip, zstd and plain tar are unpacked; others are reported.
pub(crate) fn archive_kind(head: &[u8]) -> Option<ArchiveCompression> {
    match ArchiveCompression::sniff(head) {
        ArchiveCompression::None if head.len() >= 262 && &head[257..262] == b"ustar" => {
            Some(ArchiveCompression::None)
        }
        ArchiveCompression::None => None,
        compressed => Some(compressed),
    }
}

/// The first 512 bytes of a file.
pub(crate) fn file_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    buf.truncate(n);
    Ok(buf)
}

/// For gzip/zstd, check that the decompressed stream is a tar before unpacking it (ADD copies
/// a compressed non-tar file as is).
pub(crate) fn decompressed_is_tar(path: &Path, kind: ArchiveCompression) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(mut reader) = kind.decoder(file) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(_) => return false,
        }
    }
    n >= 262 && &head[257..262] == b"ustar"
}

/// Unpack a (possibly compressed) tar safely into the empty directory `into`.
pub(crate) fn unpack_archive(
    path: &Path,
    kind: ArchiveCompression,
    into: &Path,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = kind
        .decoder(file)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    gcr_storage::unpack::unpack(
        &mut reader,
        into,
        &gcr_storage::unpack::UnpackOptions::detect(),
    )
    .map(|_| ())
    .map_err(|e| format!("cannot unpack {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic_as_chmod_1_does() {
        let apply = |spec: &str, mode: u32, dir: bool| Chmod::parse(spec).unwrap().apply(mode, dir);
        assert_eq!(apply("0755", 0o600, false), 0o755);
        assert_eq!(apply("4755", 0o600, false), 0o4755);
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("a=r", 0o777, false), 0o444);
        assert_eq!(apply("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(apply("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(apply("g=u", 0o740, false), 0o770);
        assert_eq!(apply("o=", 0o777, false), 0o770);
        assert_eq!(apply("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(apply("g+s", 0o755, true), 0o2755);
        // `=` keeps a directory's set-id bits, not a file's.
        assert_eq!(apply("u=rwx", 0o4755, false), 0o755);
        assert_eq!(apply("u=rwx", 0o2755, true), 0o2755);
        assert_eq!(apply("u+w-x", 0o555, false), 0o755 & !0o100);
        for bad in ["", "x", "u", "u+q", "0999", "77777", "u+x,", "+x y"] {
            let err = Chmod::parse(bad).unwrap_err();
            assert!(err.contains("--chmod="), "{bad}: {err}");
        }
    }

    fn context(dir: &Path, ignore: &str) -> SourceTree {
        SourceTree {
            root: dir.to_path_buf(),
            confine: Confine::Beneath,
            ignore: Some(IgnoreMatcher::from_file_contents(ignore).unwrap()),
            label: "build context".into(),
            preserve_owner: false,
            exclude: None,
            parents: false,
        }
    }

    #[test]
    fn sources_glob_ignore_and_refuse_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("src/sub")).unwrap();
        fs::write(d.join("src/a.txt"), "a").unwrap();
        fs::write(d.join("src/b.log"), "b").unwrap();
        fs::write(d.join("src/sub/c.txt"), "c").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("out")).unwrap();
        let tree = context(d, "*/b.log\n");
        let c = tree.collect(&["src".into()]).unwrap();
        let rels: Vec<String> = c
            .entries
            .iter()
            .map(|e| e.rel.display().to_string())
            .collect();
        assert_eq!(rels, ["a.txt", "sub", "sub/c.txt"]);
        assert_eq!(c.top_dirs, 1);
        let c = tree.collect(&["src/*.txt".into()]).unwrap();
        assert_eq!(c.entries.len(), 1);
        assert!(c.multiple);
        assert!(tree
            .collect(&["src/b.log".into()])
            .unwrap_err()
            .contains("not found"));
        assert!(tree
            .collect(&["../x".into()])
            .unwrap_err()
            .contains("outside"));
        assert!(tree
            .collect(&["out/passwd".into()])
            .unwrap_err()
            .contains("outside"));
        assert!(tree
            .collect(&["nomatch*".into()])
            .unwrap_err()
            .contains("no files"));
    }

    #[test]
    fn content_hash_ignores_mtime_but_not_content_or_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "one").unwrap();
        let tree = context(tmp.path(), "");
        let hash =
            |t: &SourceTree| content_hash(&t.collect(&["f".into()]).unwrap().entries).unwrap();
        let h1 = hash(&tree);
        set_mtime(&f, 12345).unwrap();
        assert_eq!(h1, hash(&tree));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let h2 = hash(&tree);
        assert_ne!(h1, h2);
        fs::write(&f, "two").unwrap();
        assert_ne!(h2, hash(&tree));
    }
}
