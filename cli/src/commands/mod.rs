//! One module per command group: each turns its flags into calls of the libraries and prints
//! what they return. Container logic lives in gcr-containers, never here.

pub mod archive;
pub mod build;
pub mod build_cache;
pub mod commit;
pub mod exec;
pub mod files;
pub mod images;
pub mod info;
pub mod lifecycle;
pub mod logs;
pub mod networks;
pub mod observe;
pub mod ps;
pub mod pull;
pub mod push;
pub mod run;
pub mod stats;
pub mod system;
pub mod volumes;

/// Runs `op` for each name, reporting failures one per line; exit status 1 if any failed.
pub fn each(
    names: &[String],
    mut op: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<u8> {
    let mut failed = false;
    for name in names {
        if let Err(err) = op(name) {
            eprintln!("error: {}", crate::format::error_chain(&err));
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}
