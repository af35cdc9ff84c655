//! [`run_container`]: the parent side. Validates and precomputes everything (so the child has
//! little to do and errors before the clone are plain 125s), clones the child with every
//! namespace flag at once, writes its id maps when it has a user namespace, then forwards
//! signals, runs the pty and returns the exit status.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::caps::CapMasks;
use crate::cgroups::Cgroup;
use crate::error::RuntimeError;
use crate::{child, seccomp, sys, tty};

/// The container's exit status: its own, or 128+N when killed by signal N.
pub type ExitStatusCode = i32;

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
}

/// What `--dns*` ask of the container's /etc/resolv.conf.
#[derive(Debug, Clone, Default)]
pub struct DnsOptions {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl DnsOptions {
    /// `resolv` with the given servers, search domains and options in place of its own.
    fn apply(&self, resolv: String) -> String {
        if self.servers.is_empty() && self.search.is_empty() && self.options.is_empty() {
            return resolv;
        }
        let keyword = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
        let mut out: String = resolv
            .lines()
            .filter(|l| {
                let k = keyword(l);
                !(k == "nameserver" && !self.servers.is_empty()
                    || (k == "search" || k == "domain") && !self.search.is_empty()
                    || k == "options" && !self.options.is_empty())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for server in &self.servers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
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

/// Messages from the child. `Error` carries the exit code (125/126/127) and one line of text.
pub(crate) const MSG_ERROR: u8 = b'E';
pub(crate) const MSG_PTY: u8 = b'P';
pub(crate) const MSG_GO: u8 = b'G';
/// `gcr exec`: the pid of the process that runs the command, as text.
pub(crate) const MSG_PID: u8 = b'I';

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

fn write_atomic(path: &Path, content: &str) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| RuntimeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", path, e))
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// resolv.conf for the container. With the host's network the host file is used as is. In a
/// network namespace of its own, loopback resolvers (systemd-resolved's 127.0.0.53, a local
/// dnsmasq) are unreachable, so they are dropped and, if none is left, Docker's fallback
/// public resolvers (Google, 8.8.8.8 / 8.8.4.4) are used.
pub(crate) fn resolv_conf(host: &str, own_netns: bool) -> String {
    if !own_netns {
        return host.to_string();
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            match words.next() {
                Some(addr) if !is_loopback(addr) => servers += 1,
                _ => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn hosts_file(hostname: &str, own_netns: bool) -> String {
    if !own_netns {
        if let Ok(mut h) = std::fs::read_to_string("/etc/hosts") {
            // The container has its own hostname: make it resolvable (sudo and friends ask).
            let known = h
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.split_whitespace().skip(1).any(|n| n == hostname));
            if !known {
                if !h.is_empty() && !h.ends_with('\n') {
                    h.push('\n');
                }
                h.push_str(&format!("127.0.1.1\t{hostname}\n"));
            }
            return h;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
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
    mountpoint: &Path,
    mounts: &[Mount],
    etc_files: &[(PathBuf, PathBuf)],
    uid_map: &str,
    gid_map: &str,
) -> Result<Prepared, RuntimeError> {
    let rootfs = idmapped_rootfs(opts, mountpoint, uid_map, gid_map)?;
    let clone = |source: &Path, recursive: bool| {
        sys::clone_tree(&cpath(source)?, recursive)
            .map_err(|e| RuntimeError::io("open the mount source", source, e.into()))
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
    // SAFETY: run_container checked that this process is single-threaded.
    let userns =
        unsafe { sys::user_namespace_fd(uid_map, gid_map) }.map_err(|(w, e)| fail(w, e))?;
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
        })
    }

    fn new(spec: &Spec, opts: &'a RunOptions) -> Result<Plan<'a>, RuntimeError> {
        let (process, args, env) = command_and_env(spec)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let mut clone_flags = 0u64;
        for ns in linux.namespaces().iter().flatten() {
            if ns.path().is_some() {
                return Err(RuntimeError::InvalidSpec(format!(
                    "joining an existing {:?} namespace is not supported",
                    ns.typ()
                )));
            }
            clone_flags |= namespace_flag(ns.typ())?;
        }
        if clone_flags & libc::CLONE_NEWNS as u64 == 0 {
            return Err(RuntimeError::InvalidSpec(
                "a mount namespace is required".into(),
            ));
        }
        let new_userns = clone_flags & libc::CLONE_NEWUSER as u64 != 0;
        let new_netns = clone_flags & libc::CLONE_NEWNET as u64 != 0;
        let in_userns = new_userns || in_non_initial_userns();
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

        let hostname = spec.hostname().clone().or_else(|| {
            (opts.container_id.len() >= 12).then(|| opts.container_id[..12].to_string())
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
            let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let mut hosts = hosts_file(&name, new_netns);
            let mut resolv = resolv_conf(&host_resolv, new_netns);
            if let Some(network) = &network {
                hosts = hosts.replace(&format!("127.0.1.1\t{name}\n"), &network.hosts_line(&name));
                if network.kind == crate::network::PrivateNetwork::Slirp {
                    // slirp4netns forwards DNS from its own address to the host's resolvers.
                    resolv = format!("nameserver {}\n", crate::network::SLIRP_DNS);
                }
            }
            for (host, ip) in &opts.extra_hosts {
                hosts.push_str(&format!("{ip}\t{host}\n"));
            }
            let resolv = opts.dns.apply(resolv);
            for (file, content) in [
                ("hostname", format!("{name}\n")),
                ("hosts", hosts),
                ("resolv.conf", resolv),
            ] {
                let path = opts.state_dir.join(file);
                write_atomic(&path, &content)?;
                etc_files.push((path, PathBuf::from("/etc").join(file)));
            }
        }

        let mounts = spec.mounts().clone().unwrap_or_default();
        let prepared = if new_userns && !in_non_initial_userns() {
            // The generated /etc files belong to the container's root, as in a rootful run.
            if let (Some(uid), Some(gid)) = (host_id_of_root(&uid_map), host_id_of_root(&gid_map)) {
                for (path, _) in &etc_files {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                        .map_err(|e| RuntimeError::io("chown", path, e))?;
                }
            }
            Some(prepare_for_userns(
                opts,
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
        let cgroup = Cgroup::create(&opts.container_id, linux.resources().as_ref(), in_userns)?;
        let mut unshare_cgroupns = false;
        if cgroup.is_some() && clone_flags & libc::CLONE_NEWCGROUP as u64 != 0 {
            clone_flags &= !(libc::CLONE_NEWCGROUP as u64);
            unshare_cgroupns = true;
        }
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
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
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
        })
    }
}

/// Runs the container described by `spec` on `opts.rootfs` in the foreground and returns its
/// exit status. Must be called from a single-threaded process. Errors: [`RuntimeError`]
/// (`exit_code()` gives 125, or 126/127 when the command cannot be executed or found).
pub fn run_container(spec: &Spec, opts: &RunOptions) -> Result<ExitStatusCode, RuntimeError> {
    // A clone of a multi-threaded process may copy a lock another thread holds (malloc, stdio)
    // and deadlock in the child: refuse instead of hanging.
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads > 1 {
        return Err(RuntimeError::InvalidSpec(format!(
            "run_container needs a single-threaded process, this one has {threads} threads (shut the async runtime down first)"
        )));
    }
    let plan = Plan::new(spec, opts)?;
    let result = run_planned(&plan);
    if let Some(cg) = &plan.cgroup {
        cg.remove();
    }
    result
}

/// The parent/child socket pair, and every signal blocked (the previous mask restored when
/// the guard goes): no signal is lost between the clone and the signalfd, and the child
/// starts with them blocked until just before exec.
pub(crate) fn prepare_fork() -> Result<(OwnedFd, OwnedFd, SigSet, SigmaskGuard), RuntimeError> {
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("socketpair", e))?;
    let all = SigSet::all();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old_mask))
        .map_err(|e| RuntimeError::sys("block signals", e))?;
    Ok((parent_sock, child_sock, old_mask, SigmaskGuard(old_mask)))
}

fn run_planned(plan: &Plan) -> Result<ExitStatusCode, RuntimeError> {
    let (parent_sock, child_sock, old_mask, restore) = prepare_fork()?;

    // SAFETY: the caller is single-threaded (documented requirement); the child branch never
    // returns from child::main.
    let pid = match unsafe { sys::clone_fork(plan.clone_flags) } {
        Ok(0) => {
            drop(parent_sock);
            child::main(plan, child_sock, &old_mask)
        }
        Ok(pid) => Pid::from_raw(pid),
        Err(e) => return Err(RuntimeError::sys("clone the container process", e)),
    };
    drop(child_sock);
    if let Some(path) = &plan.opts.pid_file {
        if let Err(e) = write_atomic(path, &pid.to_string()) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e);
        }
    }
    let result = supervise(plan, pid, &parent_sock);
    if result.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    // Reaped: its PID may be anyone's from now on (a restart policy's wait can be long).
    if let Some(path) = &plan.opts.pid_file {
        let _ = std::fs::remove_file(path);
    }
    drop(restore);
    result
}

pub(crate) struct SigmaskGuard(SigSet);

impl Drop for SigmaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

fn write_id_maps(plan: &Plan, pid: Pid) -> Result<(), RuntimeError> {
    for (file, content) in [("uid_map", &plan.uid_map), ("gid_map", &plan.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content.as_bytes())
            .map_err(|e| RuntimeError::io("write", &path, e))?;
    }
    Ok(())
}

/// A message from the child and the fd that came with it.
type Message = (Vec<u8>, Option<OwnedFd>);

/// Receives one message from the child: `None` at EOF (the command was executed).
fn receive(sock: &OwnedFd) -> Result<Option<Message>, RuntimeError> {
    let mut buf = vec![0u8; 8192];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fd = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS gave us a new fd that nothing else owns.
                                fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
                            }
                        }
                    }
                }
                let n = msg.bytes;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                return Ok(Some((buf, fd)));
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Ok(None),
            Err(e) => return Err(RuntimeError::sys("read from the container process", e)),
        }
    }
}

pub(crate) fn send(sock: &OwnedFd, data: &[u8], fd: Option<RawFd>) -> Result<(), Errno> {
    let iov = [IoSlice::new(data)];
    let fds;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).map(drop)
}

fn supervise(plan: &Plan, pid: Pid, sock: &OwnedFd) -> Result<ExitStatusCode, RuntimeError> {
    if plan.new_userns {
        write_id_maps(plan, pid)?;
    }
    if let Some(cg) = &plan.cgroup {
        cg.add(pid.as_raw())?;
    }
    // The network is up before the command starts; its helpers stop when the run ends.
    let _network = match &plan.network {
        Some(network) => {
            // `address` in the state directory: what `inspect` shows as the IP address.
            write_atomic(
                &plan.opts.state_dir.join("address"),
                &network.address.to_string(),
            )?;
            Some(network.attach(pid, &plan.opts.container_id)?)
        }
        None => None,
    };
    send(sock, &[MSG_GO], None)
        .map_err(|e| RuntimeError::sys("signal the container process", e))?;
    let started = until_exec(sock, pid)?;
    if let Some(fd) = plan.opts.started_fd {
        write_all(fd, b"S");
    }
    relay(plan, pid, pid, started.master)
}

/// What the child side reported up to its exec.
pub(crate) struct Started {
    /// The pty master, with `-t`.
    pub master: Option<OwnedFd>,
    /// `gcr exec`: the process that runs the command (the child reaped is its parent).
    pub command_pid: Option<Pid>,
}

/// Reads the child side's messages until the command is executed (EOF on the socket): the
/// pty, an error (then `reap` is reaped and the error returned), an exec's command pid.
pub(crate) fn until_exec(sock: &OwnedFd, reap: Pid) -> Result<Started, RuntimeError> {
    let mut started = Started {
        master: None,
        command_pid: None,
    };
    while let Some((msg, fd)) = receive(sock)? {
        match msg.first() {
            Some(&MSG_PTY) => started.master = fd,
            Some(&MSG_PID) => {
                started.command_pid = msg
                    .get(1..)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.parse().ok())
                    .map(Pid::from_raw);
            }
            Some(&MSG_ERROR) => {
                let code = msg.get(1).copied().unwrap_or(125) as i32;
                let text = String::from_utf8_lossy(msg.get(2..).unwrap_or(&[])).into_owned();
                let _ = waitpid(reap, None);
                return Err(match code {
                    126 | 127 => RuntimeError::Exec {
                        code,
                        message: text,
                    },
                    _ => RuntimeError::Setup(text),
                });
            }
            _ => {}
        }
    }
    Ok(started)
}

/// Until `reap` exits: forwards signals to `target`, copies the pty, returns the status.
pub(crate) fn relay(
    plan: &Plan,
    target: Pid,
    reap_pid: Pid,
    master: Option<OwnedFd>,
) -> Result<ExitStatusCode, RuntimeError> {
    let pid = target;
    let mut forwarded = SigSet::all();
    for s in [Signal::SIGKILL, Signal::SIGSTOP] {
        forwarded.remove(s);
    }
    let sfd = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| RuntimeError::sys("signalfd", e))?;
    let _raw = master.as_ref().map(|_| tty::RawMode::enter());
    if let Some(m) = &master {
        tty::copy_winsize(std::io::stdout().as_fd(), m.as_fd());
        let _ = nix::fcntl::fcntl(
            m,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut stdin_open = master.is_some() && plan.opts.stdin;
    let mut status: Option<ExitStatusCode> = None;
    let mut buf = vec![0u8; 16384];
    loop {
        if let Some(code) = status {
            if let Some(m) = &master {
                drain(m, &mut buf);
            }
            return Ok(code);
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("poll", e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                match Signal::try_from(signo) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGWINCH) if master.is_some() => {
                        if let Some(m) = &master {
                            tty::copy_winsize(std::io::stdout().as_fd(), m.as_fd());
                        }
                    }
                    Ok(Signal::SIGPIPE) | Ok(Signal::SIGURG) => {}
                    Ok(sig) => {
                        let _ = kill(pid, sig);
                    }
                    Err(_) => {
                        // Real-time signals: forward by number.
                        // SAFETY: kill with a signal number the kernel delivered to us.
                        unsafe { libc::kill(pid.as_raw(), signo) };
                    }
                }
            }
            status = reap(reap_pid)?;
        }
        if let Some(m) = &master {
            if ready.get(1).copied().unwrap_or(false)
                && !copy_once(m.as_raw_fd(), 1, &mut buf)
                && status.is_none()
            {
                // The container side of the pty is gone; its exit status follows.
                status = Some(wait_exit(reap_pid)?);
            }
            if stdin_open
                && ready.get(2).copied().unwrap_or(false)
                && !copy_once(0, m.as_raw_fd(), &mut buf)
            {
                stdin_open = false;
            }
        }
    }
}

fn decode(ws: WaitStatus) -> Option<ExitStatusCode> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn reap(pid: Pid) -> Result<Option<ExitStatusCode>, RuntimeError> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(ws) => Ok(decode(ws)),
        Err(Errno::EINTR) => Ok(None),
        Err(e) => Err(RuntimeError::sys("wait for the container", e)),
    }
}

fn wait_exit(pid: Pid) -> Result<ExitStatusCode, RuntimeError> {
    loop {
        match waitpid(pid, None) {
            Ok(ws) => {
                if let Some(code) = decode(ws) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("wait for the container", e)),
        }
    }
}

/// Copies one chunk from `from` to `to`; false at EOF or error on `from`.
fn copy_once(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY: reading into a buffer we own, of the length we pass.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Errno::last() == Errno::EAGAIN || Errno::last() == Errno::EINTR;
    }
    if n == 0 {
        return false;
    }
    write_all(to, &buf[..n as usize]);
    true
}

pub(crate) fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a buffer we own, of the length we pass.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR || Errno::last() == Errno::EAGAIN {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

fn drain(master: &OwnedFd, buf: &mut [u8]) {
    while copy_once_strict(master.as_raw_fd(), buf) {}
}

fn copy_once_strict(from: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY: reading into a buffer we own.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return false;
    }
    write_all(1, &buf[..n as usize]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_options_replace_what_they_name() {
        let host = "nameserver 10.0.0.1\nsearch corp.example\noptions ndots:2\n";
        let none = DnsOptions::default();
        assert_eq!(none.apply(host.to_string()), host);
        let dns = DnsOptions {
            servers: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            search: Vec::new(),
            options: vec!["timeout:1".into()],
        };
        assert_eq!(
            dns.apply(host.to_string()),
            "search corp.example\nnameserver 1.1.1.1\nnameserver 9.9.9.9\noptions timeout:1\n"
        );
    }

    #[test]
    fn resolv_conf_replaces_loopback() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        let out = resolv_conf(host, true);
        assert!(!out.contains("127.0.0.53"));
        assert!(out.contains("nameserver 8.8.8.8") && out.contains("search example.com"));
        let host = "nameserver 10.0.0.2\nnameserver ::1\n";
        assert_eq!(resolv_conf(host, true), "nameserver 10.0.0.2\n");
        assert_eq!(resolv_conf(host, false), host);
    }

    #[test]
    fn own_hostname_resolves() {
        let h = hosts_file("box1", true);
        assert!(h.contains("127.0.1.1\tbox1\n") && h.contains("localhost"));
        let h = hosts_file("box1", false);
        assert!(h
            .lines()
            .any(|l| l.split_whitespace().skip(1).any(|n| n == "box1")));
    }
}
