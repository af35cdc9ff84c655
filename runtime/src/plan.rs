//! The plan of a container: [`RunOptions`] (how to run it, beyond the spec) and the [`Plan`]
//! computed from them and the spec in the parent before the clone, so that the child has
//! little to do and errors before the clone are plain 125s. Rootful with a user namespace of
//! its own, the plan also holds the mounts the parent opens for the child ([`Prepared`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::caps::CapMasks;
use crate::cgroups::Cgroup;
use crate::error::RuntimeError;
use crate::etc_files::DnsOptions;
use crate::fs::write_atomic;
use crate::{seccomp, sys};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone)]
pub enum RootfsSource {
    /// A plain directory used as is (`--rootfs DIR`); it is bind-mounted, never modified except
    /// for the mount points of /etc/hosts and friends when they are missing.
    Directory(PathBuf),
    /// An OverlayFS of image layers, mounted inside the container's own mount namespace.
    Overlay {
        /// Top layer first.
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        /// Use `userxattr` (required when gcr runs in a user namespace, i.e. rootless).
        userxattr: bool,
    },
}

/// How to run the container, beyond what the spec says.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub rootfs: RootfsSource,
    /// 64 hex digits; the default hostname is its first 12.
    pub container_id: String,
    /// A directory owned by this container (e.g. the store's containers/<id>/): the generated
    /// hostname/hosts/resolv.conf files and the overlay mount point go here.
    pub state_dir: PathBuf,
    /// Allocate a pty (`-t`); the host terminal goes to raw mode while the container runs.
    pub tty: bool,
    /// Keep stdin attached (`-i`); otherwise the container's stdin is /dev/null.
    pub stdin: bool,
    /// Run gcr's small init as PID 1 (`--init`): it reaps zombies and forwards signals.
    pub init: bool,
    /// `-u user[:group]` resolved against the container's own /etc/passwd and /etc/group; when
    /// set it replaces the spec's `process.user`.
    pub user: Option<String>,
    /// Generate and bind /etc/hostname, /etc/hosts and /etc/resolv.conf (default true).
    pub etc_files: bool,
    /// Mount the overlay `volatile` (default true): its unmount at exit then skips the sync of
    /// the whole upper filesystem, which costs tens of milliseconds on ext4. The price: after a
    /// host crash the upper dir is not trusted (the kernel refuses to remount it). Set false
    /// when the upper dir must survive a crash as is.
    pub overlay_volatile: bool,
    /// Written with the container's PID 1 (as the host sees it) once it exists, as runc's
    /// `--pid-file`: what `gcr stop`, `kill` and `exec` act on.
    pub pid_file: Option<PathBuf>,
    /// Gets one byte (`S`) once the command has been executed: a detached `gcr run` reports
    /// the start to its caller through it.
    pub started_fd: Option<RawFd>,
    /// Destinations of bind mounts whose (empty) source directory first gets a copy of what
    /// the image has there: Docker's copy into a new named volume.
    pub copy_up: Vec<PathBuf>,
    /// A private network for the container's network namespace, and published ports.
    pub network: crate::network::NetworkOptions,
    /// `--add-host NAME:IP`: lines added to the generated /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// `--dns`, `--dns-search`, `--dns-option`: they replace the generated resolv.conf's
    /// nameservers, search domains and options.
    pub dns: DnsOptions,
    /// `--group-add`: supplementary groups (names from the container's /etc/group, or
    /// numbers) added to the user's.
    pub group_add: Vec<String>,
    /// An OCI runtime's `create` (gcr-oci): the spec alone decides what the container gets,
    /// and the command waits at a start gate instead of running at once.
    pub oci: Option<OciLaunch>,
}

/// What an OCI runtime's `create` adds to a launch (see [`crate::create_container`]).
#[derive(Debug, Clone)]
pub struct OciLaunch {
    /// The start gate: a FIFO the command waits on just before its exec; `start` writes the
    /// state JSON (one line) into it.
    pub exec_fifo: PathBuf,
    /// `--console-socket`: with `process.terminal`, the pty master goes there (SCM_RIGHTS).
    pub console_socket: Option<PathBuf>,
    /// The state the hooks get on stdin; the runtime fills in the pid and status.
    pub state: oci_spec::runtime::State,
    /// `--preserve-fds N`: fds 3..3+N stay open in the container.
    pub preserve_fds: u32,
    /// `--no-pivot`: move the rootfs onto / and chroot instead of pivot_root (a rootfs on
    /// ramfs cannot be pivoted).
    pub no_pivot: bool,
}

impl RunOptions {
    pub fn new(
        rootfs: RootfsSource,
        container_id: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        RunOptions {
            rootfs,
            container_id: container_id.into(),
            state_dir: state_dir.into(),
            tty: false,
            stdin: false,
            init: false,
            user: None,
            etc_files: true,
            overlay_volatile: true,
            pid_file: None,
            started_fd: None,
            copy_up: Vec::new(),
            network: Default::default(),
            extra_hosts: Vec::new(),
            dns: DnsOptions::default(),
            group_add: Vec::new(),
            oci: None,
        }
    }
}

/// Everything the child needs, computed in the parent before the clone.
pub(crate) struct Plan<'a> {
    pub opts: &'a RunOptions,
    pub clone_flags: u64,
    pub new_userns: bool,
    /// The child runs in a user namespace other than the initial one (new, or rootless gcr):
    /// mknod is not allowed, device nodes are bind-mounted.
    pub in_userns: bool,
    pub new_netns: bool,
    /// The private network joined after the clone (none: only a loopback).
    pub network: Option<crate::network::NetworkPlan>,
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    pub etc_files: Vec<(PathBuf, PathBuf)>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub readonly_root: bool,
    pub rootfs_mountpoint: PathBuf,
    pub args: Vec<CString>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub caps: CapMasks,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub no_new_privileges: bool,
    /// The process's resource limits (`--ulimit`), set before the exec.
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    pub uid_map: String,
    pub gid_map: String,
    /// Rootful with a new user namespace: mounts the parent made for the child.
    pub prepared: Option<Prepared>,
    /// Set when the spec limits resources; the parent moves the child into it before the
    /// child unshares its cgroup ns.
    pub cgroup: Option<Cgroup>,
    pub unshare_cgroupns: bool,
    /// Namespaces joined by path (OCI `linux.namespaces[].path`), opened by the parent; the
    /// user namespace first. A pid namespace is joined by the parent (it applies to children).
    pub joins: Vec<(nix::sched::CloneFlags, OwnedFd)>,
    /// With namespaces to join, the new ones are made by the child with unshare after the
    /// joins (a namespace joined by path must be entered from the caller's user namespace).
    pub unshare_flags: u64,
    /// `linux.sysctl`, written after the mounts, before the read-only paths.
    pub sysctl: Vec<(String, String)>,
    /// `linux.devices`: nodes made in /dev beside the default ones.
    pub devices: Vec<oci_spec::runtime::LinuxDevice>,
    /// `linux.rootfsPropagation`, applied to / after pivot_root.
    pub rootfs_propagation: Option<nix::mount::MsFlags>,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `process.user.umask`.
    pub umask: Option<u32>,
    /// The spec's hooks (OCI launches only).
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The start gate's FIFO, opened read-write by the parent (OCI launches only).
    pub gate: Option<OwnedFd>,
    /// The process keeps the stdio its caller gave (OCI), instead of /dev/null for stdin.
    pub pass_stdio: bool,
    /// The process outlives the gcr process that made it (OCI create, exec --detach): no
    /// parent-death signal.
    pub outlives_parent: bool,
    /// False only for an OCI spec without a mount namespace: no propagation change of the
    /// caller's mounts, no self-bind of the rootfs, chroot instead of pivot_root.
    pub own_mount_ns: bool,
}

/// What the parent (real root) prepares for a child in a user namespace of its own, which may
/// not look up host paths that only root can reach (the store is 0700): every mount source is
/// opened here as a detached mount, and the child attaches it by fd.
pub(crate) struct Prepared {
    /// The rootfs, idmapped to the container's ids.
    pub rootfs: OwnedFd,
    /// For each entry of `Plan::mounts`: its source as a detached bind mount, for bind mounts.
    pub binds: Vec<Option<OwnedFd>>,
    /// For each entry of `Plan::etc_files`: the generated file as a detached bind mount.
    pub etc_files: Vec<OwnedFd>,
}

fn namespace_flag(t: LinuxNamespaceType) -> Result<u64, RuntimeError> {
    Ok(match t {
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        other => {
            return Err(RuntimeError::InvalidSpec(format!(
                "namespace {other:?} is not supported"
            )))
        }
    } as u64)
}

/// True when this process is in a user namespace other than the initial one.
pub(crate) fn in_non_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

fn id_map(maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> String {
    maps.map(|m| {
        m.iter()
            .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
            .collect()
    })
    .unwrap_or_default()
}

/// The host id that container id 0 maps to in a /proc `uid_map`/`gid_map` text.
fn host_id_of_root(map: &str) -> Option<u32> {
    map.lines().find_map(|line| {
        let f: Vec<u32> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        match f[..] {
            [0, host, size] if size > 0 => Some(host),
            _ => None,
        }
    })
}

fn cpath(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| RuntimeError::InvalidSpec(format!("path {} contains NUL", path.display())))
}

fn prepare_for_userns(
    opts: &RunOptions,
    idmap: bool,
    mountpoint: &Path,
    mounts: &[Mount],
    etc_files: &[(PathBuf, PathBuf)],
    uid_map: &str,
    gid_map: &str,
) -> Result<Prepared, RuntimeError> {
    let clone = |source: &Path, recursive: bool| {
        sys::clone_tree(&cpath(source)?, recursive)
            .map_err(|e| RuntimeError::io("open the mount source", source, e.into()))
    };
    // An OCI bundle's rootfs is used as the caller made it (already owned by the
    // container's ids); gcr's image layers are idmapped.
    let rootfs = match (&opts.rootfs, idmap) {
        (RootfsSource::Directory(dir), false) => clone(dir, true)?,
        _ => idmapped_rootfs(opts, mountpoint, uid_map, gid_map)?,
    };
    let mut binds = Vec::new();
    for m in mounts {
        let options = m.options().clone().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        binds.push(match (bind, m.source()) {
            (true, Some(source)) => Some(clone(source, options.iter().any(|o| o == "rbind"))?),
            _ => None,
        });
    }
    let etc_files = etc_files
        .iter()
        .map(|(host, _)| clone(host, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        rootfs,
        binds,
        etc_files,
    })
}

/// Rootful gcr giving the container its own user namespace: the image's files are owned by
/// ids 0..N on disk, which the container's namespace does not map to themselves. Each layer
/// (and the upper/work dirs) is cloned as an idmapped mount, so the container sees its own
/// ids and what it writes lands on disk in the same container terms as the layers; the
/// overlay is made from those clones here, by real root, as a detached mount.
fn idmapped_rootfs(
    opts: &RunOptions,
    mountpoint: &Path,
    uid_map: &str,
    gid_map: &str,
) -> Result<OwnedFd, RuntimeError> {
    let fail = |what: String, e: Errno| {
        RuntimeError::sys(
            format!("{what} for the user namespace (idmapped mounts need Linux 5.19, detached overlay layers 6.15)"),
            e,
        )
    };
    // run_container checked that this process is single-threaded.
    let userns = sys::user_namespace_fd(uid_map, gid_map).map_err(|(w, e)| fail(w, e))?;
    let idmapped = |path: &Path| {
        sys::idmapped_tree(&cpath(path)?, &userns)
            .map_err(|(w, e)| fail(format!("{w} {}", path.display()), e))
    };
    match &opts.rootfs {
        RootfsSource::Directory(dir) => idmapped(dir),
        RootfsSource::Overlay {
            lower,
            upper,
            work,
            userxattr,
        } => {
            // Only the layers are idmapped. Overlay works in the upper and work dirs as its
            // mounter, real root, whose id an idmapped upper could not store (EOVERFLOW); so
            // what the container writes is stored under the host ids of its range, and the
            // upper dir (the root directory the container sees) belongs to its root.
            if let (Some(uid), Some(gid)) = (host_id_of_root(uid_map), host_id_of_root(gid_map)) {
                std::os::unix::fs::chown(upper, Some(uid), Some(gid))
                    .map_err(|e| RuntimeError::io("chown", upper, e))?;
            }
            let layers = lower
                .iter()
                .map(|l| idmapped(l))
                .collect::<Result<Vec<_>, _>>()?;
            let lowers = layers
                .iter()
                .map(|fd| cpath(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd()))))
                .collect::<Result<Vec<_>, _>>()?;
            let mut flags: Vec<&std::ffi::CStr> = Vec::new();
            if *userxattr {
                flags.push(c"userxattr");
            }
            if opts.overlay_volatile {
                flags.push(c"volatile");
            }
            let strings: Vec<(&std::ffi::CStr, &std::ffi::CStr)> =
                vec![(c"redirect_dir", c"off"), (c"metacopy", c"off")];
            sys::overlay_fsmount(&lowers, &cpath(upper)?, &cpath(work)?, &flags, &strings).map_err(
                |(w, e)| {
                    fail(
                        format!(
                            "{w} ({} idmapped layers at {})",
                            lower.len(),
                            mountpoint.display()
                        ),
                        e,
                    )
                },
            )
        }
    }
}

/// The spec's process, its command as C strings and its environment, checked.
fn command_and_env(
    spec: &Spec,
) -> Result<(&oci_spec::runtime::Process, Vec<CString>, Vec<String>), RuntimeError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::InvalidSpec("no process".into()))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "no command given and the image has no entrypoint or cmd".into(),
        ));
    }
    let args = args
        .into_iter()
        .map(|a| {
            CString::new(a.clone()).map_err(|_| {
                RuntimeError::InvalidSpec(format!("argument {a:?} contains a NUL byte"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let env = process.env().clone().unwrap_or_default();
    if let Some(bad) = env.iter().find(|e| e.contains('\0')) {
        return Err(RuntimeError::InvalidSpec(format!(
            "environment entry {bad:?} contains a NUL byte"
        )));
    }
    Ok((process, args, env))
}

impl<'a> Plan<'a> {
    /// The plan of a process joining a running container (`gcr exec`): only the process part
    /// of `spec` (command, environment, user, cwd, capabilities, seccomp); the namespaces,
    /// mounts and cgroups are the container's already.
    pub(crate) fn for_exec(
        spec: &Spec,
        opts: &'a RunOptions,
        in_userns: bool,
    ) -> Result<Plan<'a>, RuntimeError> {
        let (process, args, env) = command_and_env(spec)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let user = process.user();
        Ok(Plan {
            opts,
            clone_flags: 0,
            new_userns: false,
            in_userns,
            new_netns: false,
            network: None,
            hostname: None,
            mounts: Vec::new(),
            etc_files: Vec::new(),
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            readonly_root: true,
            rootfs_mountpoint: PathBuf::new(),
            args,
            env,
            cwd: process.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps: CapMasks::from_spec(process.capabilities().as_ref()),
            seccomp: match linux.seccomp() {
                Some(profile) => Some(seccomp::compile(profile)?),
                None => None,
            },
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits: process.rlimits().clone().unwrap_or_default(),
            uid_map: String::new(),
            gid_map: String::new(),
            prepared: None,
            cgroup: None,
            unshare_cgroupns: false,
            joins: Vec::new(),
            unshare_flags: 0,
            sysctl: Vec::new(),
            devices: Vec::new(),
            rootfs_propagation: None,
            oom_score_adj: None,
            umask: user.umask(),
            hooks: None,
            gate: None,
            pass_stdio: false,
            outlives_parent: false,
            own_mount_ns: true,
        })
    }

    pub(crate) fn new(spec: &Spec, opts: &'a RunOptions) -> Result<Plan<'a>, RuntimeError> {
        let (process, args, env) = command_and_env(spec)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let mut clone_flags = 0u64;
        let mut joins = Vec::new();
        let mut seen = 0u64;
        for ns in linux.namespaces().iter().flatten() {
            let flag = namespace_flag(ns.typ())?;
            if seen & flag != 0 {
                return Err(RuntimeError::InvalidSpec(format!(
                    "namespace {:?} is listed twice",
                    ns.typ()
                )));
            }
            seen |= flag;
            match ns.path() {
                Some(path) => joins.push((
                    nix::sched::CloneFlags::from_bits_retain(flag as i32),
                    open_namespace(path, ns.typ())?,
                )),
                None => clone_flags |= flag,
            }
        }
        // An OCI spec may leave the mount namespace out: the mounts are then made in the
        // caller's namespace (under the rootfs, which is entered with chroot), as runc does.
        let own_mount_ns = seen & libc::CLONE_NEWNS as u64 != 0;
        if !own_mount_ns && opts.oci.is_none() {
            return Err(RuntimeError::InvalidSpec(
                "a mount namespace is required".into(),
            ));
        }
        // The user namespace is joined first: it owns the others.
        joins.sort_by_key(|(flag, _)| *flag != nix::sched::CloneFlags::CLONE_NEWUSER);
        let joins_userns = joins
            .iter()
            .any(|(flag, _)| *flag == nix::sched::CloneFlags::CLONE_NEWUSER);
        let readonly_root = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        if !own_mount_ns && readonly_root {
            // The remount would reach the caller's own mount of the rootfs' filesystem.
            return Err(RuntimeError::InvalidSpec(
                "root.readonly needs a mount namespace of the container's own".into(),
            ));
        }
        let new_userns = clone_flags & libc::CLONE_NEWUSER as u64 != 0;
        let new_netns = clone_flags & libc::CLONE_NEWNET as u64 != 0;
        let in_userns = new_userns || joins_userns || in_non_initial_userns();
        let uid_map = id_map(linux.uid_mappings().as_ref());
        let gid_map = id_map(linux.gid_mappings().as_ref());
        if new_userns && (uid_map.is_empty() || gid_map.is_empty()) {
            return Err(RuntimeError::InvalidSpec(
                "a user namespace needs uid and gid mappings".into(),
            ));
        }

        match &opts.rootfs {
            RootfsSource::Directory(dir) => {
                if !dir.is_dir() {
                    return Err(RuntimeError::InvalidSpec(format!(
                        "rootfs {} is not a directory",
                        dir.display()
                    )));
                }
            }
            RootfsSource::Overlay {
                lower, upper, work, ..
            } => {
                for p in lower.iter().chain([upper, work]) {
                    if !p.is_dir() {
                        return Err(RuntimeError::InvalidSpec(format!(
                            "overlay directory {} does not exist",
                            p.display()
                        )));
                    }
                }
            }
        }
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(|e| RuntimeError::io("create state directory", &opts.state_dir, e))?;
        let rootfs_mountpoint = opts.state_dir.join("rootfs");
        if matches!(opts.rootfs, RootfsSource::Overlay { .. }) {
            std::fs::create_dir_all(&rootfs_mountpoint)
                .map_err(|e| RuntimeError::io("create", &rootfs_mountpoint, e))?;
        }

        // An OCI launch keeps the hostname the caller's namespace has unless the spec sets one.
        let hostname = spec.hostname().clone().or_else(|| {
            (opts.oci.is_none() && opts.container_id.len() >= 12)
                .then(|| opts.container_id[..12].to_string())
        });
        if opts.network.private.is_some() && !new_netns {
            return Err(RuntimeError::InvalidSpec(
                "a private network needs a network namespace".into(),
            ));
        }
        let network = crate::network::NetworkPlan::new(&opts.network)?;
        let mut etc_files = Vec::new();
        if opts.etc_files {
            let name = hostname.clone().unwrap_or_else(|| "localhost".into());
            for (file, content) in crate::etc_files::generate(
                &name,
                new_netns,
                network.as_ref(),
                &opts.extra_hosts,
                &opts.dns,
            ) {
                let path = opts.state_dir.join(file);
                write_atomic(&path, &content)?;
                etc_files.push((path, PathBuf::from("/etc").join(file)));
            }
        }

        let mounts = spec.mounts().clone().unwrap_or_default();
        // Only real root can open mount sources for the child; an unprivileged caller's child
        // reaches its own files itself.
        let prepared = if new_userns
            && !in_non_initial_userns()
            && joins.is_empty()
            && nix::unistd::geteuid().is_root()
        {
            // The generated /etc files belong to the container's root, as in a rootful run.
            if let (Some(uid), Some(gid)) = (host_id_of_root(&uid_map), host_id_of_root(&gid_map)) {
                for (path, _) in &etc_files {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                        .map_err(|e| RuntimeError::io("chown", path, e))?;
                }
            }
            Some(prepare_for_userns(
                opts,
                opts.oci.is_none(),
                &rootfs_mountpoint,
                &mounts,
                &etc_files,
                &uid_map,
                &gid_map,
            )?)
        } else {
            None
        };
        let user = process.user();
        let seccomp = match linux.seccomp() {
            Some(profile) => Some(seccomp::compile(profile)?),
            None => None,
        };
        let cgroup = match (&opts.oci, linux.cgroups_path()) {
            // An OCI container always gets its cgroup (its caller reads stats and pauses it
            // there), at the path the spec names.
            (Some(_), path) => Some(Cgroup::create_at(
                &crate::cgroups::oci_path(path.as_deref(), &opts.container_id),
                linux.resources().as_ref(),
                in_userns,
            )?)
            .flatten(),
            (None, path) => Cgroup::create(
                &crate::cgroups::group_path(&opts.container_id, path.as_deref()),
                linux.resources().as_ref(),
                in_userns,
            )?,
        };
        let mut unshare_cgroupns = false;
        if cgroup.is_some() && clone_flags & libc::CLONE_NEWCGROUP as u64 != 0 {
            clone_flags &= !(libc::CLONE_NEWCGROUP as u64);
            unshare_cgroupns = true;
        }
        // Joining namespaces by path: only a new pid namespace comes from the clone, the
        // child makes the others after its joins.
        let mut unshare_flags = 0u64;
        if !joins.is_empty() {
            unshare_flags = clone_flags & !(libc::CLONE_NEWPID as u64);
            clone_flags &= libc::CLONE_NEWPID as u64;
        }
        let sysctl = linux
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| check_sysctl(k, seen).map(|()| (k.clone(), v.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => None,
            Some(p) => Some(propagation_flags(p)?),
        };
        let gate = match &opts.oci {
            Some(oci) => Some(open_gate(&oci.exec_fifo)?),
            None => None,
        };
        Ok(Plan {
            opts,
            clone_flags,
            new_userns,
            in_userns,
            new_netns,
            network,
            hostname,
            mounts,
            etc_files,
            masked_paths: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            readonly_root,
            rootfs_mountpoint,
            args,
            env,
            cwd: process.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps: CapMasks::from_spec(process.capabilities().as_ref()),
            seccomp,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits: process.rlimits().clone().unwrap_or_default(),
            uid_map,
            gid_map,
            prepared,
            cgroup,
            unshare_cgroupns,
            joins,
            unshare_flags,
            sysctl,
            devices: linux.devices().clone().unwrap_or_default(),
            rootfs_propagation,
            oom_score_adj: process.oom_score_adj(),
            umask: user.umask(),
            hooks: opts.oci.as_ref().and(spec.hooks().clone()),
            gate,
            pass_stdio: opts.oci.is_some(),
            outlives_parent: opts.oci.is_some(),
            own_mount_ns,
        })
    }
}

/// Opens a namespace file named by the spec (`linux.namespaces[].path`).
fn open_namespace(path: &Path, typ: LinuxNamespaceType) -> Result<OwnedFd, RuntimeError> {
    std::fs::File::open(path).map(OwnedFd::from).map_err(|e| {
        RuntimeError::InvalidSpec(format!(
            "cannot open the {typ:?} namespace {}: {e}",
            path.display()
        ))
    })
}

/// The start gate, opened read-write: the open does not wait for a writer, and the child's
/// copy keeps the FIFO open until its exec closes it (which is how `start` learns the exec
/// happened).
fn open_gate(path: &Path) -> Result<OwnedFd, RuntimeError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| RuntimeError::io("open the start gate", path, e))
}

/// A sysctl the container may set: one of a namespace it has of its own (runc's rule), so
/// that no container changes the host's kernel settings.
fn check_sysctl(key: &str, namespaces: u64) -> Result<(), RuntimeError> {
    let has = |flag: i32| namespaces & flag as u64 != 0;
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let allowed = if ipc.contains(&key) || key.starts_with("fs.mqueue.") {
        has(libc::CLONE_NEWIPC)
    } else if key.starts_with("net.") {
        has(libc::CLONE_NEWNET)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        has(libc::CLONE_NEWUTS)
    } else {
        false
    };
    if key.split('.').any(|part| part.is_empty() || part == "..") || key.contains('/') {
        return Err(RuntimeError::InvalidSpec(format!(
            "sysctl {key:?} is not a sysctl name"
        )));
    }
    if !allowed {
        return Err(RuntimeError::InvalidSpec(format!(
            "sysctl {key:?} is not allowed: it is not namespaced, or the container does not have the namespace it belongs to"
        )));
    }
    Ok(())
}

/// `linux.rootfsPropagation` as mount flags.
fn propagation_flags(value: &str) -> Result<nix::mount::MsFlags, RuntimeError> {
    use nix::mount::MsFlags as F;
    Ok(match value {
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        other => {
            return Err(RuntimeError::InvalidSpec(format!(
                "rootfsPropagation {other:?} is not one of shared, slave, private, unbindable (r-prefixed for recursive)"
            )))
        }
    })
}
