//! Reading a bundle's config.json, and the default one `spec` writes.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::OciError;

/// Parses the JSON in `path` (`-`: stdin) as a `T`; `what` names the expected object in
/// the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, OciError> {
    let text = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| OciError::io("read", "stdin", e))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| OciError::io("read", path, e))?
    };
    serde_json::from_slice(&text).map_err(|e| OciError::Config {
        path: path.to_path_buf(),
        message: format!("not a runtime-spec {what}: {e}"),
    })
}

/// The bundle directory, absolute.
pub fn bundle_dir(bundle: Option<&Path>) -> Result<PathBuf, OciError> {
    let dir = match bundle {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().map_err(|e| OciError::io("find", ".", e))?,
    };
    std::fs::canonicalize(&dir).map_err(|e| OciError::io("open the bundle", &dir, e))
}

/// Loads and checks `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let text =
        match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OciError::Config {
                path,
                message:
                    "JSON specification file config.json not found (write one with `gcr-oci spec`)"
                        .into(),
            }),
            Err(e) => return Err(OciError::io("read", &path, e)),
        };
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| OciError::Config {
        path: path.clone(),
        message: format!("not a valid runtime spec: {e}"),
    })?;
    let bad = |message: &str| OciError::Config {
        path: path.clone(),
        message: message.to_string(),
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad("no process: the container has nothing to run"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad("process.args is empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(bad("process.cwd must be an absolute path"));
    }
    if spec.root().is_none() {
        return Err(bad("no root: the container has no root filesystem"));
    }
    Ok(spec)
}

/// The container's rootfs: `root.path`, relative to the bundle unless absolute.
pub fn rootfs(spec: &Spec, bundle: &Path) -> PathBuf {
    let path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if path.is_absolute() {
        path
    } else {
        bundle.join(path)
    }
}

/// The default config.json (runc's: `sh` on a terminal, rootfs/, the usual mounts, masked
/// and read-only paths); `rootless` maps the caller's own uid and gid in a user namespace.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        Spec::default()
    };
    // oci-spec's default names another runtime.
    spec.set_hostname(Some("gcr-oci".into()));
    spec
}
