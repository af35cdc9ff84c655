//! [`exec_in`]: a new process in a running container (`gcr exec`). The caller's side opens the
//! container's namespaces, puts a child into its cgroups, and the child joins the namespaces
//! (the user namespace first) and forks once more, since a PID namespace takes effect for
//! children only; that grandchild becomes the command exactly as a container's first process
//! does (user, capabilities, seccomp, no host fds), and the child waits for it and passes its
//! exit status on.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::channel::{send, MSG_ERROR, MSG_GO, MSG_PID};
use crate::error::RuntimeError;
use crate::launch::{prepare_fork, until_exec};
use crate::plan::{in_non_initial_userns, Plan, RootfsSource, RunOptions};
use crate::relay::{relay, write_all, ExitStatusCode};
use crate::{child, sys};

/// How to run the command, beyond the process part of the container's spec.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `-t`: a pty from the container's devpts.
    pub tty: bool,
    /// `-i`: keep stdin attached.
    pub stdin: bool,
    /// `-u user[:group]`, resolved in the container.
    pub user: Option<String>,
    /// Gets one byte (`S`) once the command has been executed (`gcr exec -d` reports the
    /// start through it).
    pub started_fd: Option<std::os::fd::RawFd>,
    /// Written with the command's pid once it runs (OCI `exec --pid-file`).
    pub pid_file: Option<PathBuf>,
    /// OCI semantics: the command's stdio is what the caller gave (no /dev/null stdin).
    pub oci: bool,
    /// OCI `exec --console-socket`: with `tty`, the pty master goes there instead of being
    /// relayed.
    pub console_socket: Option<PathBuf>,
    /// Killed (SIGKILL, status 137) when it runs longer (a healthcheck's timeout).
    pub timeout: Option<std::time::Duration>,
}

/// An OCI `exec --detach`: the command runs on, reparented to the caller's subreaper.
#[derive(Debug)]
pub struct ExecStarted {
    /// The command's pid as this process sees it.
    pub pid: i32,
}

/// The namespaces joined, the user namespace first (it owns the others), the mount namespace
/// last (it changes the root directory).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs `spec.process` (args, env, cwd, user, capabilities, seccomp) in the namespaces and
/// cgroups of the container whose first process is `container_pid`, in the foreground, and
/// returns its exit status. Must be called from a single-threaded process.
pub fn exec_in(
    spec: &Spec,
    container_pid: i32,
    opts: &ExecOptions,
) -> Result<ExitStatusCode, RuntimeError> {
    run_exec(spec, container_pid, opts, false)
}

/// Starts `spec.process` in the container of `container_pid` as [`exec_in`] does, but
/// returns once the command has been executed, leaving it running without a parent of
/// gcr's (OCI `exec --detach`). With `opts.tty` the pty master goes to
/// `opts.console_socket`.
pub fn exec_detached_oci(
    spec: &Spec,
    container_pid: i32,
    opts: &ExecOptions,
) -> Result<ExecStarted, RuntimeError> {
    run_exec(spec, container_pid, opts, true).map(|pid| ExecStarted { pid })
}

/// Joins, forks and execs; with `detach` returns the command's pid, otherwise its status.
fn run_exec(
    spec: &Spec,
    container_pid: i32,
    opts: &ExecOptions,
    detach: bool,
) -> Result<i32, RuntimeError> {
    crate::launch::ensure_single_threaded("exec_in")?;
    let target = Pid::from_raw(container_pid);
    let mut run_opts = RunOptions::new(RootfsSource::Directory(PathBuf::from("/")), "", "/");
    run_opts.tty = opts.tty;
    run_opts.stdin = opts.stdin;
    run_opts.user = opts.user.clone();
    let namespaces = open_namespaces(target)?;
    let joins_userns = namespaces
        .iter()
        .any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER);
    let in_userns = joins_userns || in_non_initial_userns();
    let mut plan = Plan::for_exec(spec, &run_opts, in_userns)?;
    plan.pass_stdio = opts.oci;
    plan.outlives_parent = detach;
    let cgroups = cgroup_procs_files(target);

    let deadline = opts.timeout.map(|after| std::time::Instant::now() + after);
    let (parent_sock, child_sock, old_mask, restore) = prepare_fork()?;

    // Single-threaded (checked above); the child never returns from `joiner`.
    let child = match sys::clone_fork(0) {
        Ok(sys::ForkResult::Child) => {
            drop(parent_sock);
            joiner(&plan, &namespaces, child_sock, &old_mask, detach)
        }
        Ok(sys::ForkResult::Parent { child }) => child,
        Err(e) => return Err(RuntimeError::sys("fork the exec process", e)),
    };
    drop(child_sock);
    drop(namespaces);
    let result = (|| {
        for file in &cgroups {
            if let Err(e) = std::fs::write(file, child.as_raw().to_string()) {
                tracing::debug!(file = %file.display(), %e, "exec: cgroup not joined");
            }
        }
        send(&parent_sock, &[MSG_GO], None)
            .map_err(|e| RuntimeError::sys("signal the exec process", e))?;
        let mut started = until_exec(&parent_sock, child)?;
        if let Some(fd) = opts.started_fd {
            write_all(fd, b"S");
        }
        let command = started.command_pid.unwrap_or(child);
        if let Some(path) = &opts.pid_file {
            crate::fs::write_atomic(path, &command.to_string())?;
        }
        if opts.console_socket.is_some() {
            if let Some(master) = started.master.take() {
                crate::oci::send_console(opts.console_socket.as_deref(), &master)?;
            }
        }
        if detach {
            // The joiner left right after its fork: reap it; the command is on its own.
            let _ = waitpid(child, None);
            return Ok(command.as_raw());
        }
        relay(plan.opts.stdin, command, child, started.master, deadline)
    })();
    if result.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    drop(restore);
    result
}

/// The child: joins the namespaces, forks the command's process, reports its pid, and exits
/// with its status.
fn joiner(
    plan: &Plan,
    namespaces: &[(CloneFlags, OwnedFd)],
    sock: OwnedFd,
    old_mask: &SigSet,
    detach: bool,
) -> ! {
    let fail = |sock: &OwnedFd, text: String| -> ! {
        let mut msg = vec![MSG_ERROR, 125];
        msg.extend(text.as_bytes());
        let _ = send(sock, &msg, None);
        // Leaves the forked child without running the parent's cleanup.
        sys::exit_now(125)
    };
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64, 0);
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0, 0);
    let mut go = [0u8; 1];
    if !matches!(nix::unistd::read(&sock, &mut go), Ok(1) if go[0] == MSG_GO) {
        fail(&sock, "the gcr exec process went away".into());
    }
    for (flag, fd) in namespaces {
        if let Err(e) = nix::sched::setns(fd.as_fd(), *flag) {
            fail(
                &sock,
                format!("cannot join the container's {flag:?} namespace: {e}"),
            );
        }
    }
    if namespaces
        .iter()
        .any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER)
    {
        // Root of the container's user namespace, as its first process was.
        let zero = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
        if nix::unistd::setresgid(zero.0, zero.0, zero.0).is_err()
            || nix::unistd::setresuid(zero.1, zero.1, zero.1).is_err()
        {
            fail(
                &sock,
                "cannot become root in the container's user namespace".into(),
            );
        }
    }
    // This process is single-threaded (a fork of one).
    match sys::fork() {
        Ok(sys::ForkResult::Child) => child::exec_main(plan, sock, old_mask),
        Ok(sys::ForkResult::Parent { child }) => {
            let _ = send(
                &sock,
                format!("{}{}", MSG_PID as char, child).as_bytes(),
                None,
            );
            drop(sock);
            if detach {
                // The command is reparented to the caller's subreaper, which reaps it.
                sys::exit_now(0)
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code,
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 125,
                }
            };
            // Leaves with the command's status, running no cleanup of the parent's.
            sys::exit_now(code)
        }
        Err(e) => fail(&sock, format!("cannot fork the command: {e}")),
    }
}

/// The container's namespaces that differ from this process's, opened.
fn open_namespaces(target: Pid) -> Result<Vec<(CloneFlags, OwnedFd)>, RuntimeError> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{target}/ns/{name}");
        let fd: OwnedFd = match std::fs::File::open(&theirs) {
            Ok(f) => f.into(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "cgroup" => continue,
            Err(e) => {
                return Err(RuntimeError::io(
                    "open the container's namespace",
                    Path::new(&theirs),
                    e,
                ))
            }
        };
        let same = match (
            nix::sys::stat::fstat(&fd),
            nix::sys::stat::stat(format!("/proc/self/ns/{name}").as_str()),
        ) {
            (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            _ => false,
        };
        if !same {
            out.push((flag, fd));
        }
    }
    // Nothing private at all would mean a pid that is not a container.
    if out.is_empty() {
        return Err(RuntimeError::InvalidSpec(format!(
            "process {target} shares every namespace with gcr: not a container"
        )));
    }
    Ok(out)
}

/// The `cgroup.procs` files of the container's cgroups (as this process sees the hierarchy)
/// where they differ from ours.
fn cgroup_procs_files(target: Pid) -> Vec<PathBuf> {
    let read =
        |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let ours = read("self");
    let unified_root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    let mut files = Vec::new();
    for line in read(&target.to_string()).lines() {
        if ours.lines().any(|l| l == line) {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let rel = path.trim_start_matches('/');
        let dir = if controllers.is_empty() {
            unified_root.join(rel)
        } else {
            let name = controllers.trim_start_matches("name=");
            let candidates = std::iter::once(name).chain(name.split(','));
            match candidates
                .map(|c| Path::new("/sys/fs/cgroup").join(c))
                .find(|d| d.is_dir())
            {
                Some(mount) => mount.join(rel),
                None => continue,
            }
        };
        files.push(dir.join("cgroup.procs"));
    }
    files
}
