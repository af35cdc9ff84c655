//! The container's mount namespace: rootfs (bind or overlay), the spec's mounts, /dev nodes,
//! the generated /etc files, pivot_root, masked and read-only paths, read-only root.
//!
//! Runs in the cloned child only, inside its own mount namespace, so nothing here is visible on
//! the host and everything disappears with the container. The rootfs itself (a bind or an
//! overlay) is mounted by [`rootfs`].

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::error::{mount_err, RuntimeError};
use crate::fs::{relative, Root};
use crate::plan::Plan;
use crate::sys;

mod rootfs;

pub(crate) use rootfs::mount_overlay_at;
use rootfs::mount_rootfs;

struct Options {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
    bind: bool,
    recursive: bool,
}

fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
        bind: false,
        recursive: false,
    };
    for opt in opts {
        match opt.as_str() {
            "ro" => o.flags |= MsFlags::MS_RDONLY,
            "rw" => o.flags &= !MsFlags::MS_RDONLY,
            "nosuid" => o.flags |= MsFlags::MS_NOSUID,
            "suid" => o.flags &= !MsFlags::MS_NOSUID,
            "nodev" => o.flags |= MsFlags::MS_NODEV,
            "dev" => o.flags &= !MsFlags::MS_NODEV,
            "noexec" => o.flags |= MsFlags::MS_NOEXEC,
            "exec" => o.flags &= !MsFlags::MS_NOEXEC,
            "sync" => o.flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => o.flags &= !MsFlags::MS_SYNCHRONOUS,
            "dirsync" => o.flags |= MsFlags::MS_DIRSYNC,
            "noatime" => o.flags |= MsFlags::MS_NOATIME,
            "nodiratime" => o.flags |= MsFlags::MS_NODIRATIME,
            "relatime" => o.flags |= MsFlags::MS_RELATIME,
            "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
            "atime" | "norelatime" | "defaults" => {}
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true
            }
            "private" => o.propagation = MsFlags::MS_PRIVATE,
            "rprivate" => o.propagation = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => o.propagation = MsFlags::MS_SLAVE,
            "rslave" => o.propagation = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => o.propagation = MsFlags::MS_SHARED,
            "rshared" => o.propagation = MsFlags::MS_SHARED | MsFlags::MS_REC,
            "unbindable" => o.propagation = MsFlags::MS_UNBINDABLE,
            "runbindable" => o.propagation = MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            other => o.data.push(other.to_string()),
        }
    }
    o
}

/// Flags a bind remount must keep: in a user namespace the kernel refuses to clear the
/// nosuid/nodev/noexec/atime flags it inherited from a more privileged mount.
fn locked_flags(fd: &OwnedFd) -> MsFlags {
    let mut out = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::fstatvfs(fd) {
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        for (from, to) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        ] {
            if f.contains(from) {
                out |= to;
            }
        }
    }
    out
}

/// Bind-remounts the mount at `rel` with `flags` added to its locked ones.
fn remount(root: &Root, rel: &Path, flags: MsFlags, dest: &Path) -> Result<(), RuntimeError> {
    let fd = root
        .resolve(rel, true)
        .map_err(|e| mount_err("remount", dest, e))?;
    let all = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked_flags(&fd);
    mount(
        None::<&str>,
        sys::fd_path(&fd).as_str(),
        None::<&str>,
        all,
        None::<&str>,
    )
    .map_err(|e| mount_err("remount", dest, e))
}

/// Remounts every mount strictly below `top` read-only (keeping their locked flags).
fn remount_submounts_readonly(top: &Path) -> Result<(), RuntimeError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
    for line in info.lines() {
        let Some(point) = line.split_whitespace().nth(4) else {
            continue;
        };
        // mountinfo escapes spaces and the like as \ooo; such paths are not ours to touch.
        let point = Path::new(point);
        if point == top || !point.starts_with(top) {
            continue;
        }
        let Ok(fd) = crate::sys::openat2(
            libc::AT_FDCWD,
            &std::ffi::CString::new(point.as_os_str().as_encoded_bytes()).unwrap_or_default(),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
            0,
        ) else {
            continue;
        };
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(&fd);
        // A mount we may not change stays as it is: the host's own permissions still apply.
        if let Err(e) = mount(
            None::<&str>,
            sys::fd_path(&fd).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        ) {
            tracing::debug!("cannot make {} read-only: {e}", point.display());
        }
    }
    Ok(())
}

fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR)
        .unwrap_or(false)
}

/// A mount point for a kernel filesystem: must be a real directory, never a symlink
/// (CVE-2019-16884: an image with /proc -> somewhere).
fn fs_target(root: &Root, rel: &Path, dest: &Path) -> Result<OwnedFd, RuntimeError> {
    match root.resolve(rel, true) {
        Ok(fd) if is_dir(&fd) => Ok(fd),
        Ok(_) => Err(RuntimeError::Setup(format!(
            "cannot mount on {}: it is not a directory in the rootfs",
            dest.display()
        ))),
        Err(Errno::ELOOP) => Err(RuntimeError::Setup(format!(
            "cannot mount on {}: it is a symlink in the rootfs",
            dest.display()
        ))),
        Err(Errno::ENOENT) => root.mkdir_all(rel),
        Err(e) => Err(mount_err("filesystem", dest, e)),
    }
}

fn mount_fs(
    root: &Root,
    m: &oci_spec::runtime::Mount,
    typ: &str,
    o: &Options,
    plan: &Plan,
) -> Result<(), RuntimeError> {
    let dest = m.destination();
    let rel = relative(dest)?;
    let target = fs_target(root, &rel, dest)?;
    let source = m
        .source()
        .as_ref()
        .map(|s| s.as_os_str().to_owned())
        .unwrap_or_else(|| OsStr::new(typ).to_owned());
    let data = o.data.join(",");
    let result = mount(
        Some(source.as_os_str()),
        sys::fd_path(&target).as_str(),
        Some(typ),
        o.flags,
        (!data.is_empty()).then_some(data.as_str()),
    );
    match (result, typ) {
        (Ok(()), _) => {}
        // Without a network namespace of our own (host network, rootless) sysfs cannot be
        // mounted: bind the host's, read-only, as runc does.
        (Err(Errno::EPERM), "sysfs") => {
            mount(
                Some("/sys"),
                sys::fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| mount_err("/sys", dest, e))?;
            remount(root, &rel, o.flags | MsFlags::MS_RDONLY, dest)?;
            // The rbind brought the host's submounts (cgroup hierarchies among them,
            // CVE-2023-25809): read-only too.
            let inside = std::fs::read_link(sys::fd_path(&target))
                .map_err(|e| RuntimeError::io("resolve", dest, e))?;
            remount_submounts_readonly(&inside)?;
        }
        // gid=5 is not mapped in a single-id user namespace.
        (Err(Errno::EINVAL), "devpts") if o.data.iter().any(|d| d.starts_with("gid=")) => {
            let data: Vec<&str> = o
                .data
                .iter()
                .filter(|d| !d.starts_with("gid="))
                .map(String::as_str)
                .collect();
            mount(
                Some("devpts"),
                sys::fd_path(&target).as_str(),
                Some("devpts"),
                o.flags,
                Some(data.join(",").as_str()),
            )
            .map_err(|e| mount_err("devpts", dest, e))?;
        }
        (Err(e), _) => return Err(mount_err(typ, dest, e)),
    }
    if typ == "tmpfs" && rel == Path::new("dev") {
        create_devices(root, plan)?;
    }
    Ok(())
}

/// A bind mount; `prepared` is its source already opened by the parent (see `Prepared`).
fn mount_bind(
    root: &Root,
    m: &oci_spec::runtime::Mount,
    o: &Options,
    prepared: Option<&OwnedFd>,
    copy_up: &[PathBuf],
) -> Result<(), RuntimeError> {
    let dest = m.destination();
    let rel = relative(dest)?;
    let source = m.source().as_ref().ok_or_else(|| {
        RuntimeError::InvalidSpec(format!("bind mount on {} has no source", dest.display()))
    })?;
    let source_is_dir = match prepared {
        Some(fd) => is_dir(fd),
        None => std::fs::metadata(source)
            .map_err(|e| RuntimeError::io("volume source", source, e))?
            .is_dir(),
    };
    let target = if source_is_dir {
        root.mkdir_all(&rel)?
    } else {
        root.ensure_file(&rel)?
    };
    if source_is_dir && prepared.is_none() && copy_up.iter().any(|d| d.as_path() == dest) {
        let empty = std::fs::read_dir(source)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if empty {
            // The image's content at the destination, read through the rootfs (resolved in
            // it above), never following a symlink out of it.
            crate::fs::copy_tree_contents(Path::new(&sys::fd_path(&target)), source).map_err(
                |e| RuntimeError::io("copy the image's files into the volume", source, e),
            )?;
        }
    }
    let mut flags = MsFlags::MS_BIND;
    if o.recursive {
        flags |= MsFlags::MS_REC;
    }
    match prepared {
        Some(fd) => sys::move_mount_onto(fd, &target),
        None => mount(
            Some(source.as_path()),
            sys::fd_path(&target).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        ),
    }
    .map_err(|e| mount_err(&source.display().to_string(), dest, e))?;
    let extra = o.flags & !MsFlags::MS_BIND;
    if !extra.is_empty() {
        remount(root, &rel, extra, dest)?;
    }
    Ok(())
}

/// The host's cgroup hierarchies under /sys/fs/cgroup: (name, fstype, super options).
fn host_cgroup_hierarchies() -> Vec<(String, String, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let name = mount_point.strip_prefix("/sys/fs/cgroup/")?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" || name.is_empty() || name.contains('/') {
                return None;
            }
            let options: Vec<&str> = right
                .nth(1)
                .unwrap_or("")
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro")
                .collect();
            Some((name.to_string(), fstype.to_string(), options.join(",")))
        })
        .collect()
}

/// /sys/fs/cgroup inside the container (Docker mounts it read-only): cgroup2 on a unified
/// host; on v1 and hybrid hosts a small tmpfs holding each hierarchy. The container's cgroup
/// namespace makes its own group the root. v1 cannot be mounted from a user namespace
/// (rootless): there /sys/fs/cgroup stays empty. A hierarchy that fails is skipped with a
/// warning rather than failing the container.
fn mount_cgroups(
    root: &Root,
    m: &oci_spec::runtime::Mount,
    o: &Options,
    plan: &Plan,
) -> Result<(), RuntimeError> {
    let dest = m.destination();
    let rel = relative(dest)?;
    let target = fs_target(root, &rel, dest)?;
    let flags = o.flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if unified {
        if let Err(e) = mount(
            Some("cgroup2"),
            sys::fd_path(&target).as_str(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        ) {
            tracing::warn!("cgroup2 not mounted on {}: {e}", dest.display());
        }
        return Ok(());
    }
    if plan.in_userns {
        tracing::debug!(
            "cgroup v1 cannot be mounted in a user namespace; {} left empty",
            dest.display()
        );
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        sys::fd_path(&target).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )
    .map_err(|e| mount_err("tmpfs", dest, e))?;
    // Without a cgroup namespace (an OCI spec may ask for none), a fresh mount would show
    // the host's whole hierarchy: bind the container's own group instead, as runc does.
    let own_groups = match &plan.cgroup {
        Some(cg)
            if !plan.unshare_cgroupns && plan.clone_flags & libc::CLONE_NEWCGROUP as u64 == 0 =>
        {
            cg.dirs.clone()
        }
        _ => Vec::new(),
    };
    for (name, fstype, options) in host_cgroup_hierarchies() {
        let sub = rel.join(&name);
        let fd = root.mkdir_all(&sub)?;
        let hierarchy = Path::new("/sys/fs/cgroup").join(&name);
        if let Some(own) = own_groups.iter().find(|d| d.starts_with(&hierarchy)) {
            if let Err(e) = mount(
                Some(own.as_path()),
                sys::fd_path(&fd).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ) {
                tracing::warn!("cgroup {} not bound in the container: {e}", own.display());
            }
            continue;
        }
        let data = (!options.is_empty()).then_some(options.as_str());
        if let Err(e) = mount(
            Some("cgroup"),
            sys::fd_path(&fd).as_str(),
            Some(fstype.as_str()),
            flags,
            data,
        ) {
            tracing::warn!("cgroup hierarchy {name} not mounted in the container: {e}");
        }
    }
    if o.flags.contains(MsFlags::MS_RDONLY) {
        remount(root, &rel, MsFlags::MS_RDONLY, dest)?;
    }
    Ok(())
}

const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The standard device nodes and symlinks in the container's fresh /dev tmpfs; where mknod is
/// not allowed (user namespaces), the host's node is bind-mounted onto an empty file instead.
fn create_devices(root: &Root, plan: &Plan) -> Result<(), RuntimeError> {
    let dev = root
        .open_in(Path::new("dev"), libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|e| RuntimeError::sys("open the container's /dev", e))?;
    for (name, major, minor) in DEVICES {
        let cname = CString::new(*name).map_err(|_| RuntimeError::Setup("device name".into()))?;
        let made = !plan.in_userns
            && sys::mknod_char(dev.as_raw_fd(), &cname, 0o666, *major, *minor).is_ok();
        if made {
            // mknod honours the umask; make the mode exact.
            let _ = nix::sys::stat::fchmodat(
                &dev,
                cname.as_c_str(),
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            );
            continue;
        }
        nix::fcntl::openat(
            &dev,
            cname.as_c_str(),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )
        .map_err(|e| RuntimeError::sys(format!("create /dev/{name}"), e))?;
        let target = root
            .resolve(&Path::new("dev").join(name), true)
            .map_err(|e| RuntimeError::sys(format!("resolve /dev/{name}"), e))?;
        let host = format!("/dev/{name}");
        mount(
            Some(host.as_str()),
            sys::fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_err(&host, Path::new(&host), e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(RuntimeError::sys(format!("create /dev/{name}"), e)),
        }
    }
    Ok(())
}

/// `linux.devices`: each node at its path in the rootfs (made with mknod, or where that is
/// not allowed the host's node bound onto an empty file), with its mode and owner.
fn create_spec_devices(root: &Root, plan: &Plan) -> Result<(), RuntimeError> {
    use oci_spec::runtime::LinuxDeviceType as T;
    for device in &plan.devices {
        let path = device.path();
        let rel = relative(path)?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(RuntimeError::InvalidSpec(format!(
                "device path {} names no file",
                path.display()
            )));
        };
        let dir = root.mkdir_all(parent)?;
        let cname = CString::new(name.as_encoded_bytes())
            .map_err(|_| RuntimeError::InvalidSpec(format!("device path {}", path.display())))?;
        let kind = match device.typ() {
            T::C | T::U => libc::S_IFCHR,
            T::B => libc::S_IFBLK,
            T::P => libc::S_IFIFO,
            T::A => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "device {}: type \"a\" is for cgroup rules, not a node",
                    path.display()
                )))
            }
        };
        let mode = device.file_mode().unwrap_or(0o666);
        let _ = nix::unistd::unlinkat(
            &dir,
            cname.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let made = !plan.in_userns
            && sys::mknod_node(
                dir.as_raw_fd(),
                &cname,
                kind,
                mode,
                device.major() as u32,
                device.minor() as u32,
            )
            .is_ok();
        if !made {
            nix::fcntl::openat(
                &dir,
                cname.as_c_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| RuntimeError::sys(format!("create {}", path.display()), e))?;
            let target = root
                .resolve(&rel, true)
                .map_err(|e| RuntimeError::sys(format!("resolve {}", path.display()), e))?;
            mount(
                Some(path.as_path()),
                sys::fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| mount_err(&path.display().to_string(), path, e))?;
            continue;
        }
        // mknod honours the umask; make the mode exact, then the owner.
        let _ = nix::sys::stat::fchmodat(
            &dir,
            cname.as_c_str(),
            Mode::from_bits_truncate(mode as libc::mode_t),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        );
        if device.uid().is_some() || device.gid().is_some() {
            nix::unistd::fchownat(
                &dir,
                cname.as_c_str(),
                device.uid().map(nix::unistd::Uid::from_raw),
                device.gid().map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| RuntimeError::sys(format!("chown {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// With a terminal, an OCI container's /dev/console is its pty (bound onto an empty file).
pub(crate) fn bind_console(root: &Root, slave: &OwnedFd) -> Result<(), RuntimeError> {
    let console = root.ensure_file(Path::new("dev/console"))?;
    mount(
        Some(sys::fd_path(slave).as_str()),
        sys::fd_path(&console).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err("the pty", Path::new("/dev/console"), e))
}

/// No mount namespace of its own: the rootfs is entered with chroot (the caller's root stays
/// where it is).
pub(crate) fn chroot_into(rootfs: &Path) -> Result<(), RuntimeError> {
    nix::unistd::chdir(rootfs).map_err(|e| RuntimeError::sys("chdir to the rootfs", e))?;
    nix::unistd::chroot(".").map_err(|e| RuntimeError::sys("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}

/// `--no-pivot`: moves the rootfs onto / and chroots into it (a rootfs on ramfs cannot be
/// pivoted; the old root stays reachable to a process that escapes the chroot, which is
/// why this is only an option).
pub(crate) fn move_root(rootfs: &Path) -> Result<(), RuntimeError> {
    nix::unistd::chdir(rootfs).map_err(|e| RuntimeError::sys("chdir to the rootfs", e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| RuntimeError::sys("move the rootfs onto /", e))?;
    nix::unistd::chroot(".").map_err(|e| RuntimeError::sys("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}

/// Everything before pivot_root: rootfs, mounts, devices, /etc files. Returns the rootfs path.
pub(crate) fn prepare_rootfs(plan: &Plan) -> Result<PathBuf, RuntimeError> {
    // Our mount namespace is a copy of the caller's: stop propagation back to it first.
    // Without a namespace of our own these are the caller's mounts: leave them be.
    if plan.own_mount_ns {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys("make / a slave mount", e))?;
    }
    let rootfs = match (&plan.opts.rootfs, plan.own_mount_ns) {
        (crate::plan::RootfsSource::Directory(dir), false) => dir.clone(),
        _ => mount_rootfs(plan)?,
    };
    let root = match &plan.prepared {
        // The rootfs path may be out of our reach: use the mount itself.
        Some(prepared) => Root::from_fd(
            prepared
                .rootfs
                .try_clone()
                .map_err(|e| RuntimeError::io("dup", &rootfs, e))?,
            &rootfs,
        ),
        None => Root::open(&rootfs)?,
    };
    for (i, m) in plan.mounts.iter().enumerate() {
        let o = parse_options(m.options().as_deref().unwrap_or(&[]));
        let typ = m
            .typ()
            .as_deref()
            .unwrap_or(if o.bind { "bind" } else { "none" });
        let source = plan
            .prepared
            .as_ref()
            .and_then(|p| p.binds.get(i))
            .and_then(Option::as_ref);
        match typ {
            "bind" => mount_bind(&root, m, &o, source, &plan.opts.copy_up)?,
            "cgroup" | "cgroup2" => mount_cgroups(&root, m, &o, plan)?,
            _ if o.bind => mount_bind(&root, m, &o, source, &plan.opts.copy_up)?,
            typ => mount_fs(&root, m, typ, &o, plan)?,
        }
    }
    if !plan.devices.is_empty() {
        create_spec_devices(&root, plan)?;
    }
    for (i, (host, dest)) in plan.etc_files.iter().enumerate() {
        let rel = relative(dest)?;
        let target = match root.ensure_file(&rel) {
            Ok(t) => t,
            Err(e) if plan.readonly_root => {
                tracing::warn!("not providing {}: {e}", dest.display());
                continue;
            }
            Err(e) => return Err(e),
        };
        if !is_regular(&target) {
            return Err(RuntimeError::Setup(format!(
                "cannot provide {}: it is not a regular file in the rootfs",
                dest.display()
            )));
        }
        match plan.prepared.as_ref().and_then(|p| p.etc_files.get(i)) {
            Some(source) => sys::move_mount_onto(source, &target),
            None => mount(
                Some(host.as_path()),
                sys::fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        }
        .map_err(|e| mount_err(&host.display().to_string(), dest, e))?;
    }
    Ok(rootfs)
}

fn is_regular(fd: &OwnedFd) -> bool {
    fstat(fd)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false)
}

/// pivot_root into `rootfs` and detach the old root.
pub(crate) fn pivot(plan: &Plan, rootfs: &Path) -> Result<(), RuntimeError> {
    match &plan.prepared {
        // The mount's own fd: its path may be out of our reach.
        Some(prepared) => nix::unistd::fchdir(&prepared.rootfs),
        None => nix::unistd::chdir(rootfs),
    }
    .map_err(|e| RuntimeError::sys("chdir to the rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| RuntimeError::sys("pivot_root", e))?;
    // The old root is now stacked on top of "/": keep unmount events from reaching the host
    // (rslave, as runc) and detach it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| RuntimeError::sys("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))?;
    Ok(())
}

/// After pivot_root: masked paths (a directory gets an empty read-only tmpfs, a file the
/// verified /dev/null), read-only paths, read-only root.
pub(crate) fn finish(plan: &Plan) -> Result<(), RuntimeError> {
    let root = Root::open(Path::new("/"))?;
    if !plan.masked_paths.is_empty() {
        let null = root
            .resolve(Path::new("dev/null"), true)
            .map_err(|e| RuntimeError::sys("open /dev/null", e))?;
        let st = fstat(&null).map_err(|e| RuntimeError::sys("stat /dev/null", e))?;
        // CVE-2025-31133: never bind something that only claims to be /dev/null.
        if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
            return Err(RuntimeError::Setup(
                "/dev/null in the container is not the null device".into(),
            ));
        }
        for path in &plan.masked_paths {
            let rel = relative(Path::new(path))?;
            let target = match root.resolve(&rel, true) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(mount_err("mask", Path::new(path), e)),
            };
            let result = if is_dir(&target) {
                mount(
                    Some("tmpfs"),
                    sys::fd_path(&target).as_str(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=0k"),
                )
            } else {
                mount(
                    Some(sys::fd_path(&null).as_str()),
                    sys::fd_path(&target).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            };
            result.map_err(|e| mount_err("mask", Path::new(path), e))?;
        }
    }
    // Before the read-only paths: /proc/sys is one of them.
    for (key, value) in &plan.sysctl {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&file, value).map_err(|e| RuntimeError::io("set sysctl", file, e))?;
    }
    for path in &plan.readonly_paths {
        let rel = relative(Path::new(path))?;
        let target = match root.resolve(&rel, true) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
            Err(e) => return Err(mount_err("read-only", Path::new(path), e)),
        };
        mount(
            Some(sys::fd_path(&target).as_str()),
            sys::fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| mount_err("read-only", Path::new(path), e))?;
        remount(&root, &rel, MsFlags::MS_RDONLY, Path::new(path))?;
    }
    if plan.readonly_root {
        let fd = root
            .resolve(Path::new(""), false)
            .map_err(|e| RuntimeError::sys("open /", e))?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(&fd);
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(|e| RuntimeError::sys("remount the rootfs read-only", e))?;
    }
    Ok(())
}
