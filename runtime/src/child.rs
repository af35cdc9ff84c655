//! The cloned child: finishes the namespaces' setup, becomes the container's process (or its
//! init) and execs the command. Errors go back to the parent over the socket as one line.

use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{Gid, Uid};

use crate::channel::{send, MSG_ERROR, MSG_GO, MSG_HOOKS, MSG_NAMESPACES, MSG_PTY, MSG_READY};
use crate::error::RuntimeError;
use crate::fs::Root;
use crate::plan::Plan;
use crate::{mounts, sys, tty, users};

/// Entry point of the child; never returns.
pub(crate) fn main(plan: &Plan, sock: OwnedFd, old_mask: &SigSet) -> ! {
    // A panic must never unwind out of the child into the caller's code (which would then
    // run twice, e.g. its cleanup): report it and end here.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_and_exec(plan, &sock, old_mask)
    }));
    report_and_exit(&sock, result)
}

fn sys_err(op: &str) -> impl Fn(Errno) -> RuntimeError + '_ {
    move |e| RuntimeError::sys(op, e)
}

/// Set once an OCI container's process has told its creator it is ready and closed the
/// socket: from then on an error can only go to its stderr.
static ON_ITS_OWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits for the parent's go; returns what came with it (an OCI state for the hooks).
fn wait_for_go(sock: &OwnedFd) -> Result<Vec<u8>, RuntimeError> {
    let mut buf = vec![0u8; 65536];
    loop {
        match nix::unistd::read(sock, &mut buf) {
            Ok(n) if n >= 1 && buf[0] == MSG_GO => {
                buf.truncate(n);
                buf.remove(0);
                return Ok(buf);
            }
            Ok(_) => {
                return Err(RuntimeError::Setup(
                    "the parent gcr process went away".into(),
                ))
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("wait for the parent", e)),
        }
    }
}

fn setup_and_exec(
    plan: &Plan,
    sock: &OwnedFd,
    old_mask: &SigSet,
) -> Result<Infallible, RuntimeError> {
    // If gcr dies, so does the container (an OCI one: until `create` has finished).
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64, 0)
        .map_err(sys_err("set the parent death signal"))?;
    if !plan.joins.is_empty() {
        join_namespaces(plan)?;
        send(sock, &[MSG_NAMESPACES], None).map_err(sys_err("report the namespaces"))?;
    }
    // Until the go, the parent (rootless too) may open our /proc/PID/ns files to set up the
    // network; nothing of the container runs yet, this process is its only one.
    wait_for_go(sock)?;
    // Non-dumpable from here: nothing in the container may open /proc/<this>/exe (the gcr
    // binary) or our fds (CVE-2019-5736, CVE-2016-9962).
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(sys_err("make the process non-dumpable"))?;
    if plan.new_userns {
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(sys_err("become root in the user namespace"))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(sys_err("become root in the user namespace"))?;
    }
    // The parent moved us into our cgroups before the go (in a user namespace of our own we
    // may not write the host's cgroup files); now the namespace makes them our root.
    if plan.unshare_cgroupns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(sys_err("create the cgroup namespace"))?;
    }
    nix::unistd::setsid().map_err(sys_err("setsid"))?;
    if let Some(name) = &plan.hostname {
        if plan.clone_flags & libc::CLONE_NEWUTS as u64 != 0 {
            nix::unistd::sethostname(name).map_err(sys_err("set the hostname"))?;
        }
    }
    if plan.new_netns {
        sys::loopback_up().map_err(sys_err("bring up the loopback interface"))?;
    }

    let rootfs = mounts::prepare_rootfs(plan)?;
    if let Some(hooks) = &plan.hooks {
        // prestart and createRuntime run in the runtime's namespaces (the parent runs them),
        // createContainer here in the container's, all before pivot_root.
        send(sock, &[MSG_HOOKS], None).map_err(sys_err("ask for the hooks"))?;
        let state = wait_for_go(sock)?;
        let state = String::from_utf8_lossy(&state);
        crate::hooks::run_hooks(
            "createContainer",
            hooks.create_container().as_deref().unwrap_or(&[]),
            &state,
        )?;
    }
    if !plan.own_mount_ns {
        mounts::chroot_into(&rootfs)?;
    } else if plan.opts.oci.as_ref().is_some_and(|o| o.no_pivot) {
        mounts::move_root(&rootfs)?;
    } else {
        mounts::pivot(plan, &rootfs)?;
    }
    if let Some(flags) = plan.rootfs_propagation {
        nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(sys_err("set the rootfs propagation"))?;
    }
    mounts::finish(plan)?;
    let root = Root::open(Path::new("/"))?;
    become_process(plan, sock, old_mask, root)
}

/// Joins the namespaces the spec names by path (the user namespace first), then makes the
/// new ones the clone did not.
fn join_namespaces(plan: &Plan) -> Result<(), RuntimeError> {
    for (flag, fd) in &plan.joins {
        if *flag == nix::sched::CloneFlags::CLONE_NEWPID {
            continue; // joined by the parent: it applies to children only
        }
        nix::sched::setns(fd.as_fd(), *flag)
            .map_err(|e| RuntimeError::sys(format!("join the {flag:?} namespace"), e))?;
        if *flag == nix::sched::CloneFlags::CLONE_NEWUSER {
            let zero = (Gid::from_raw(0), Uid::from_raw(0));
            nix::unistd::setresgid(zero.0, zero.0, zero.0)
                .and_then(|()| nix::unistd::setresuid(zero.1, zero.1, zero.1))
                .map_err(sys_err("become root in the joined user namespace"))?;
        }
    }
    if plan.unshare_flags != 0 {
        nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(
            plan.unshare_flags as i32,
        ))
        .map_err(sys_err("create the container's namespaces"))?;
    }
    Ok(())
}

/// Entry point of a process joining a running container (`gcr exec`), already in all its
/// namespaces; never returns. Errors go back over the socket as for a new container.
pub(crate) fn exec_main(plan: &Plan, sock: OwnedFd, old_mask: &SigSet) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A session of its own, as the container's first process has: a pty (`-t`) can only
        // become the controlling terminal of a session leader.
        nix::unistd::setsid().map_err(sys_err("setsid"))?;
        let root = Root::open(Path::new("/"))?;
        become_process(plan, &sock, old_mask, root)
    }));
    report_and_exit(&sock, result)
}

fn report_and_exit(
    sock: &OwnedFd,
    result: std::thread::Result<Result<Infallible, RuntimeError>>,
) -> ! {
    let err = match result {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e,
        Err(_) => RuntimeError::Setup("internal error: the container process panicked".into()),
    };
    let code = err.exit_code();
    let text = match err {
        RuntimeError::Setup(s) => s,
        other => other.to_string(),
    };
    if ON_ITS_OWN.load(std::sync::atomic::Ordering::Relaxed) {
        let line = format!("gcr-oci: container process: {text}\n");
        let _ = sys::write_raw(2, line.as_bytes());
        sys::exit_now(code)
    }
    let mut msg = vec![MSG_ERROR, code as u8];
    msg.extend(text.as_bytes().iter().take(8000));
    let _ = send(sock, &msg, None);
    // Ends this process without running the parent's atexit handlers.
    sys::exit_now(code)
}

/// `--ulimit`: each limit set while still privileged (raising a hard limit needs
/// CAP_SYS_RESOURCE).
fn set_rlimits(limits: &[oci_spec::runtime::PosixRlimit]) -> Result<(), RuntimeError> {
    use nix::sys::resource::Resource as R;
    use oci_spec::runtime::PosixRlimitType as T;
    for limit in limits {
        let resource = match limit.typ() {
            T::RlimitCpu => R::RLIMIT_CPU,
            T::RlimitFsize => R::RLIMIT_FSIZE,
            T::RlimitData => R::RLIMIT_DATA,
            T::RlimitStack => R::RLIMIT_STACK,
            T::RlimitCore => R::RLIMIT_CORE,
            T::RlimitRss => R::RLIMIT_RSS,
            T::RlimitNproc => R::RLIMIT_NPROC,
            T::RlimitNofile => R::RLIMIT_NOFILE,
            T::RlimitMemlock => R::RLIMIT_MEMLOCK,
            T::RlimitAs => R::RLIMIT_AS,
            T::RlimitLocks => R::RLIMIT_LOCKS,
            T::RlimitSigpending => R::RLIMIT_SIGPENDING,
            T::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
            T::RlimitNice => R::RLIMIT_NICE,
            T::RlimitRtprio => R::RLIMIT_RTPRIO,
            T::RlimitRttime => R::RLIMIT_RTTIME,
        };
        nix::sys::resource::setrlimit(resource, limit.soft(), limit.hard()).map_err(|e| {
            RuntimeError::sys(
                format!(
                    "set the limit {:?} to {}:{} (a hard limit above gcr's own needs root)",
                    limit.typ(),
                    limit.soft(),
                    limit.hard()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// From the container's root on: user, environment, terminal, privileges, fds, cwd, exec.
fn become_process(
    plan: &Plan,
    sock: &OwnedFd,
    old_mask: &SigSet,
    root: Root,
) -> Result<Infallible, RuntimeError> {
    let mut env = plan.env.clone();
    let (uid, gid, groups, home) = match &plan.opts.user {
        Some(spec) => {
            let u = users::resolve_user_in(&root, spec)?;
            (u.uid, u.gid, u.additional_gids, u.home)
        }
        None => {
            let home = if env.iter().any(|e| e.starts_with("HOME=")) {
                String::new()
            } else {
                users::resolve_user_in(&root, &plan.uid.to_string())
                    .map(|u| u.home)
                    .unwrap_or_else(|_| "/".into())
            };
            (plan.uid, plan.gid, plan.additional_gids.clone(), home)
        }
    };
    let mut groups = groups;
    for group in &plan.opts.group_add {
        let gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => users::resolve_user_in(&root, &format!("0:{group}"))?.gid,
        };
        if !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    set_rlimits(&plan.rlimits)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    if plan.opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }

    // Docker creates a missing working directory (as root, before the user switch).
    let cwd_rel = crate::fs::relative(&plan.cwd)?;
    if !plan.readonly_root && root.resolve(&cwd_rel, false).is_err() {
        root.mkdir_all(&cwd_rel)?;
    }

    if let Some(adj) = plan.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| RuntimeError::io("write", "/proc/self/oom_score_adj", e))?;
    }
    if plan.opts.tty {
        let (master, slave) = tty::open_pty().map_err(sys_err("allocate a pty"))?;
        // Size the pty from the host terminal (still our stdout) before the command can ask.
        tty::copy_winsize(std::io::stdout().as_fd(), master.as_fd());
        tty::attach_slave(&slave).map_err(sys_err("attach the pty"))?;
        if plan.opts.oci.is_some() {
            // runtime-spec: with a terminal, /dev/console is the pty.
            let _ = mounts::bind_console(&root, &slave);
        }
        send(sock, &[MSG_PTY], Some(master.as_raw_fd())).map_err(sys_err("send the pty to gcr"))?;
    } else if !plan.opts.stdin && !plan.pass_stdio {
        // Without -i, stdin is /dev/null (an OCI container keeps what its caller gave).
        let null = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys_err("open /dev/null"))?;
        nix::unistd::dup2_stdin(&null).map_err(sys_err("redirect stdin"))?;
    }

    // Privileges. Without no_new_privs, seccomp must be loaded while CAP_SYS_ADMIN is still
    // held; the profile allows the few calls that follow (setgroups, setres*id, capset, prctl).
    if plan.no_new_privileges {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(sys_err("set no_new_privs"))?;
    }
    if let (Some(prog), false) = (&plan.seccomp, plan.no_new_privileges) {
        sys::seccomp_install(prog).map_err(sys_err("load the seccomp filter"))?;
    }
    plan.caps.drop_bounding()?;
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&gids) {
        Ok(()) => {}
        // A single-id user namespace has setgroups denied; there are no groups to set anyway.
        Err(Errno::EPERM) if plan.in_userns => {}
        Err(e) => return Err(RuntimeError::sys("set supplementary groups", e)),
    }
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| RuntimeError::sys(format!("set gid {gid}"), e))?;
    sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(sys_err("keep capabilities"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| RuntimeError::sys(format!("set uid {uid}"), e))?;
    plan.caps.apply()?;
    // The uid change cleared these. An OCI container outlives its `create`.
    if !plan.outlives_parent {
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64, 0)
            .map_err(sys_err("set the parent death signal"))?;
    }
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(sys_err("make the process non-dumpable"))?;

    // CVE-2024-21626: no host fd may reach the container, and none may serve as a cwd.
    // Kept: the socket to the parent, an OCI container's start gate and `--preserve-fds`.
    drop(root);
    let keep = sock.as_raw_fd() as u32;
    let mut kept = vec![keep];
    if let Some(gate) = &plan.gate {
        kept.push(gate.as_raw_fd() as u32);
    }
    let preserved = plan.opts.oci.as_ref().map_or(0, |o| o.preserve_fds);
    kept.extend(3..3 + preserved);
    close_all_but(&kept);
    nix::unistd::chdir(&plan.cwd).map_err(|e| RuntimeError::Exec {
        code: 126,
        message: format!(
            "cannot change to working directory {}: {}",
            plan.cwd.display(),
            e.desc()
        ),
    })?;
    // An unreachable cwd makes getcwd fail with ENOENT; another error is the spec's seccomp
    // profile denying getcwd, which is the command's business.
    if let Err(Errno::ENOENT) = nix::unistd::getcwd() {
        return Err(RuntimeError::Setup(
            "working directory is outside the container".into(),
        ));
    }

    let path_env = env.iter().find_map(|e| e.strip_prefix("PATH="));
    let exe = find_executable(&plan.args[0], path_env)?;
    let env: Vec<CString> = env
        .into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect();
    // With no_new_privs the filter comes last, so that a profile denying what gcr itself
    // calls on the way (getcwd, stat) fails only the command.
    if let (Some(prog), true) = (&plan.seccomp, plan.no_new_privileges) {
        sys::seccomp_install(prog).map_err(sys_err("load the seccomp filter"))?;
    }

    if plan.opts.init {
        // Before the fork: the command may look at PID 1 at once (its exec then replaces
        // the title in its own copy).
        sys::process::set_process_title(c"gcr-init");
        match sys::fork().map_err(sys_err("fork the command"))? {
            sys::ForkResult::Child => {}
            sys::ForkResult::Parent { child } => {
                // Only the command's copy of the socket must stay open until exec; this
                // process never returns (nor uses or drops `sock` again).
                sys::close_range(keep, keep);
                init_loop(child);
            }
        }
    }
    if let Some(mask) = plan.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            mask as libc::mode_t,
        ));
    }
    if let Some(gate) = &plan.gate {
        wait_at_gate(plan, sock, gate)?;
    }
    reset_signals(old_mask);
    let err = match nix::unistd::execve(&exe, &plan.args, &env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let name = plan.args[0].to_string_lossy();
    Err(match err {
        Errno::ENOENT => RuntimeError::Exec {
            code: 127,
            message: format!("exec {name}: no such file or directory"),
        },
        e => RuntimeError::Exec {
            code: 126,
            message: format!("exec {name}: {}", e.desc()),
        },
    })
}

/// Closes every fd from 3 up except `kept`.
fn close_all_but(kept: &[u32]) {
    let mut kept = kept.to_vec();
    kept.sort_unstable();
    kept.dedup();
    let mut next = 3u32;
    for fd in kept {
        if fd < next {
            continue;
        }
        if fd > next {
            sys::close_range(next, fd - 1);
        }
        next = fd + 1;
    }
    sys::close_range(next, u32::MAX);
}

/// An OCI container's last step before its exec: tell `create` it is ready (its process
/// then exits and this one is on its own), wait until `start` opens the gate with the state
/// JSON, run the startContainer hooks. The gate's fd closes with the exec, which `start`
/// waits for.
fn wait_at_gate(plan: &Plan, sock: &OwnedFd, gate: &OwnedFd) -> Result<(), RuntimeError> {
    sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0).map_err(sys_err("clear the parent death signal"))?;
    send(sock, &[MSG_READY], None).map_err(sys_err("report the container ready"))?;
    ON_ITS_OWN.store(true, std::sync::atomic::Ordering::Relaxed);
    let fd = sock.as_raw_fd() as u32;
    sys::close_range(fd, fd);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(gate, &mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => return Err(RuntimeError::Setup("the start gate closed".into())),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("wait at the start gate", e)),
        }
    }
    if let Some(hooks) = &plan.hooks {
        crate::hooks::run_hooks(
            "startContainer",
            hooks.start_container().as_deref().unwrap_or(&[]),
            &String::from_utf8_lossy(&line),
        )?;
    }
    Ok(())
}

fn reset_signals(old_mask: &SigSet) {
    for signo in 1..=64 {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        sys::set_default_action(signo);
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
}

/// Looks the command up like execvp, but reports Docker's 126/127 distinction.
fn find_executable(arg0: &CStr, path_env: Option<&str>) -> Result<CString, RuntimeError> {
    let name = arg0.to_string_lossy().into_owned();
    let check = |p: &Path| -> Result<bool, RuntimeError> {
        match std::fs::metadata(p) {
            Err(_) => Ok(false),
            Ok(m) if m.is_dir() => Err(RuntimeError::Exec {
                code: 126,
                message: format!("exec {}: is a directory", p.display()),
            }),
            Ok(m) => {
                let executable = m.permissions().mode() & 0o111 != 0
                    && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok();
                if executable {
                    Ok(true)
                } else {
                    Err(RuntimeError::Exec {
                        code: 126,
                        message: format!("exec {}: permission denied", p.display()),
                    })
                }
            }
        }
    };
    if name.is_empty() {
        // An empty ENTRYPOINT/CMD word ([""]) names nothing: as Docker, "not found".
        return Err(RuntimeError::Exec {
            code: 127,
            message: "exec: \"\": executable file not found in $PATH".to_string(),
        });
    }
    if name.contains('/') {
        if check(Path::new(&name))? {
            return Ok(arg0.to_owned());
        }
        return Err(RuntimeError::Exec {
            code: 127,
            message: format!("exec {name}: no such file or directory"),
        });
    }
    let mut denied = None;
    for dir in path_env
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .split(':')
    {
        let candidate = PathBuf::from(if dir.is_empty() { "." } else { dir }).join(&name);
        match check(&candidate) {
            Ok(true) => {
                return CString::new(candidate.as_os_str().as_bytes())
                    .map_err(|_| RuntimeError::InvalidSpec("command contains a NUL byte".into()))
            }
            Ok(false) => {}
            Err(e) => {
                denied.get_or_insert(e);
            }
        }
    }
    Err(denied.unwrap_or(RuntimeError::Exec {
        code: 127,
        message: format!("exec: \"{name}\": executable file not found in $PATH"),
    }))
}

/// gcr's built-in init (`--init`): PID 1 that forwards every signal to the command, reaps
/// every child (orphans re-parented to it included) and exits with the command's status.
fn init_loop(command: nix::unistd::Pid) -> ! {
    let all = SigSet::all();
    loop {
        // Every signal is blocked in this process.
        let Ok(signo) = sys::sigwaitinfo(&all) else {
            continue;
        };
        if signo != libc::SIGCHLD {
            // Forwarding a signal number the kernel gave us to our child.
            let _ = sys::kill_signo(command, signo);
            continue;
        }
        while let Some((pid, status)) = sys::reap_any() {
            if pid == command.as_raw() {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    continue;
                };
                // Ends the init; the kernel then kills what is left in the namespace.
                sys::exit_now(code);
            }
        }
    }
}
