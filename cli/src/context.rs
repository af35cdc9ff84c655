//! What every command gets: where the store is, gcr's own exit status, the async runtime.

use anyhow::Context as _;

/// Exit status when gcr itself fails (as Docker and Podman use it).
pub const EXIT_GCR_FAILED: u8 = 125;

/// What every command needs to find the store.
pub struct Context {
    pub root: std::path::PathBuf,
}

impl Context {
    pub fn open_store(&self) -> anyhow::Result<gcr_storage::Store> {
        gcr_storage::Store::open(self.root.clone())
            .with_context(|| format!("cannot open the store at {}", self.root.display()))
    }
}

/// A tokio runtime for the network commands; created only after any fork is done.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The exit status an error ends gcr with: a container that could not start keeps its own
/// (126 cannot execute, 127 not found), everything else is gcr's failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<gcr_containers::ContainerError>())
        .map_or(EXIT_GCR_FAILED, |e| {
            u8::try_from(e.exit_code()).unwrap_or(EXIT_GCR_FAILED)
        })
}

/// A container's exit status as a process exit status (0-255).
pub fn status_byte(code: i32) -> u8 {
    (code & 0xff) as u8
}
