//! Processes and signals: fork and clone, `_exit`, waiting, signals by number, dispositions,
//! `sigwaitinfo`, and read/write on plain fd numbers.
//!
//! # Forking is safe here
//!
//! POSIX allows only async-signal-safe calls in the child of a multi-threaded process: another
//! thread may have held a lock (malloc's, stdio's) at the fork, and the child's copy of it is
//! never released. That is why `fork` is an `unsafe fn` in nix. This crate's contract, stated
//! once here, is that it is only ever used from a **single-threaded process** (DESIGN.md
//! section 4: the command line dispatches the runtime before any async runtime or thread
//! exists; [`crate::run_container`] and [`crate::exec_in`] check `/proc/self/task` and refuse
//! otherwise). In a single-threaded process the child is a complete copy with no lock held by
//! anyone else, so it may run any code, and [`fork`] and [`clone_fork`] are safe functions.
//! The other half of the contract: a child never returns into code that assumes it is the
//! parent; every caller ends its child branch with [`exit_now`] or an execve.

use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::signal::SigSet;
pub use nix::unistd::ForkResult;
use nix::unistd::Pid;

/// `fork(2)`; see the module documentation for why it is safe to call in this crate.
pub fn fork() -> Result<ForkResult, Errno> {
    // SAFETY: the process is single-threaded (the crate's contract, module documentation), so
    // the child may run any code; callers end the child with `exit_now` or execve.
    unsafe { nix::unistd::fork() }
}

/// The `clone` system call used like fork, with namespace flags: [`ForkResult::Child`] in the
/// child, the child's pid in the parent. No new stack is needed since the child gets a
/// copy-on-write copy of this one. Safe to call for the reasons [`fork`] is.
pub fn clone_fork(flags: u64) -> Result<ForkResult, Errno> {
    // SAFETY: without CLONE_VM and with a null stack, clone behaves as fork: the child gets a
    // copy-on-write copy of the address space and runs on its copy of this stack. The null
    // parent/child tid pointers and the zero tls are read only with CLONE_*TID / CLONE_SETTLS,
    // which callers do not pass. The process is single-threaded (module documentation).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        r if r < 0 => Err(Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as libc::pid_t),
        }),
    }
}

/// `_exit(2)`: ends this process at once, without unwinding, atexit handlers or flushing
/// stdio buffers it shares with its parent. How every forked child of the crate ends.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; it touches no memory of this process.
    unsafe { libc::_exit(code) }
}

/// Sends signal number `signo` to `pid`; unlike nix's `kill`, real-time signals too (which
/// nix's `Signal` cannot name).
pub fn kill_signo(pid: Pid, signo: libc::c_int) -> Result<(), Errno> {
    // SAFETY: kill(2) takes two integers; an invalid pid or signal number is an error.
    Errno::result(unsafe { libc::kill(pid.as_raw(), signo) }).map(drop)
}

/// `sigwaitinfo(2)`: waits for one of the (blocked) signals of `set` and returns its number.
pub fn sigwaitinfo(set: &SigSet) -> Result<libc::c_int, Errno> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t and `info` a valid out pointer, both live for the call.
    Errno::result(unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) })
}

/// `waitpid(-1, WNOHANG)`: a child that has ended, as its pid and raw wait status (decode it
/// with `libc::WIFEXITED` and friends); `None` when none has, or there is no child. Raw,
/// unlike nix's `waitpid`, so a death by a real-time signal is reported like any other.
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer for the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Gives signal `signo` its default action.
pub fn set_default_action(signo: libc::c_int) {
    // SAFETY: SIG_DFL installs no handler code, so nothing of ours can run in a signal
    // context; an invalid number is an error, ignored here.
    unsafe { libc::signal(signo, libc::SIG_DFL) };
}

/// Ignores signal `signo` in this process.
pub fn ignore_signal(signo: libc::c_int) {
    // SAFETY: SIG_IGN installs no handler code, so nothing of ours can run in a signal
    // context; an invalid number is an error, ignored here.
    unsafe { libc::signal(signo, libc::SIG_IGN) };
}

/// `read(2)` on an fd number: the count read, 0 at EOF.
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is borrowed
    // mutably for the call. A number that is no open fd only fails (EBADF).
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

/// `write(2)` on an fd number: the count written.
pub fn write_raw(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `data.len()` bytes from `data`, which is borrowed for
    // the call. A number that is no open fd only fails (EBADF).
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    Errno::result(n).map(|n| n as usize)
}

/// Gives SIGPIPE its default action back (Rust's runtime ignores it, which turns a closed
/// stdout, as in `gcr images | head -1`, into a panic of `println!`): the process then ends
/// quietly like any Unix tool.
pub fn default_sigpipe() {
    set_default_action(libc::SIGPIPE);
}

/// Ignores SIGPIPE in this process: a write to a closed pipe then fails with EPIPE instead
/// of ending it (the log copier, which must keep logging when the terminal side goes).
pub fn ignore_sigpipe() {
    ignore_signal(libc::SIGPIPE);
}

/// Ignores SIGTERM, SIGINT and SIGHUP in this process (a detached container's supervisor).
/// While a container runs they are blocked and forwarded all the same (a blocked signal is
/// queued even when ignored); the container's process gets default dispositions back.
pub fn ignore_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        ignore_signal(signal);
    }
}

/// Runs `work` in a forked child and waits for it; the child's error comes back as the
/// result (its text through a pipe). For work that must not change this process, such as
/// mounting in a private mount namespace.
pub fn in_child(
    work: impl FnOnce() -> Result<(), crate::RuntimeError>,
) -> Result<(), crate::RuntimeError> {
    use std::io::{Read, Write};
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| crate::RuntimeError::sys("pipe", e))?;
    match fork() {
        Ok(ForkResult::Child) => {
            drop(read_end);
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    let _ = std::fs::File::from(write_end).write_all(e.to_string().as_bytes());
                    1
                }
                Err(_) => 2,
            };
            exit_now(code)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut text = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut text);
            let status = nix::sys::wait::waitpid(child, None)
                .map_err(|e| crate::RuntimeError::sys("wait for the child", e))?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !text.is_empty() => Err(crate::RuntimeError::Setup(text)),
                other => Err(crate::RuntimeError::Setup(format!(
                    "the helper process failed ({other:?})"
                ))),
            }
        }
        Err(e) => Err(crate::RuntimeError::sys("fork", e)),
    }
}

/// Runs `work` in a forked child that the caller reaps (or kills) later; returns its PID.
/// The child may start threads of its own.
pub fn spawn_child(work: impl FnOnce()) -> Result<Pid, Errno> {
    match fork()? {
        ForkResult::Child => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            exit_now(0)
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Shows this process as `title` to anyone in the container (`ps`, /proc/PID/cmdline and
/// comm) instead of the gcr command line it was forked from, which names the binary's host
/// path, the store and the host's environment. The argument and environment areas are
/// overwritten in place through /proc/self/mem (the title, then zeros); best effort. Leaves
/// the process not dumpable.
pub fn set_process_title(title: &std::ffi::CStr) {
    use std::os::unix::fs::FileExt as _;
    let _ = nix::sys::prctl::set_name(title);
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name's ')': field 3 is the first; arg_start is field 48.
    let fields: Vec<u64> = match stat.rfind(')') {
        Some(at) => stat[at + 1..]
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
        None => return,
    };
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let (arg_start, arg_end, env_start, env_end) = (field(48), field(49), field(50), field(51));
    // Not dumpable, /proc/self/mem belongs to the initial namespace's root, out of reach of
    // a rootless container's root: dumpable for the write only, while no other process of
    // the container exists yet.
    let _ = super::prctl(libc::PR_SET_DUMPABLE, 1, 0);
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem");
    let Ok(mem) = opened else {
        let _ = super::prctl(libc::PR_SET_DUMPABLE, 0, 0);
        return;
    };
    let title = title.to_bytes_with_nul();
    for (start, end, first) in [(arg_start, arg_end, title), (env_start, env_end, &[][..])] {
        let Some(len) = end.checked_sub(start).filter(|l| *l > 0 && *l < 1 << 20) else {
            continue;
        };
        let mut area = vec![0u8; len as usize];
        let keep = first.len().min(area.len().saturating_sub(1));
        area[..keep].copy_from_slice(&first[..keep]);
        let _ = mem.write_all_at(&area, start);
    }
    drop(mem);
    let _ = super::prctl(libc::PR_SET_DUMPABLE, 0, 0);
}
