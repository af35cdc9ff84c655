//! Work that outlives the gcr command: after `gcr run --rm`, deleting the container's upper
//! directory can take tens of milliseconds on a journaling filesystem; the caller should not
//! wait for it, as Docker's client does not wait for the daemon's removal.

use nix::errno::Errno;

use crate::sys::{self, ForkResult};

/// Runs `work` in a detached child process (new session, stdio on /dev/null so no pipe of the
/// caller stays open) and returns at once in the parent. Call it only from a single-threaded
/// process, like every fork in this crate.
pub fn run_detached<F: FnOnce()>(work: F) -> Result<(), Errno> {
    // gcr calls this while single-threaded (no tokio runtime exists on the run path), so the
    // child may run arbitrary Rust code; it leaves with _exit and never returns.
    match sys::fork()? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            work();
            // _exit ends the child without running the parent's atexit handlers or flushing
            // buffers it shares with the parent.
            sys::exit_now(0)
        }
    }
}
