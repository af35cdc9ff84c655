//! RUN: one container on an overlay of the current layers with a fresh upper dir.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{StepFailure, StepResult};

/// A mount of a RUN step, resolved to host paths.
pub(crate) enum RunMount {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        options: String,
    },
    /// A writable view of `lower` whose writes land in `upper` and are thrown away with the
    /// step (`RUN --mount=type=bind,rw`).
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: String,
    },
}

impl RunMount {
    fn target(&self) -> &str {
        match self {
            RunMount::Bind { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Overlay { target, .. } => target,
        }
    }
}

/// What one RUN step needs.
pub(crate) struct RunStep<'a> {
    /// `RUN --security=insecure` (granted with `--allow security.insecure`): every capability,
    /// no seccomp, no masked paths, as `gcr run --privileged`.
    pub privileged: bool,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub network_none: bool,
    /// Lower dirs, top first (never empty).
    pub lower: Vec<PathBuf>,
    pub upper: &'a Path,
    pub work: &'a Path,
    pub state_dir: &'a Path,
    pub userxattr: bool,
    pub mounts: Vec<RunMount>,
    /// Send the command's output to a log instead of stderr; the tail is printed on failure.
    pub quiet: bool,
    /// `--add-host` lines: RUN then gets an /etc/hosts of gcr's with them.
    pub extra_hosts: Vec<(String, String)>,
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    pub shm_size: Option<i64>,
}

fn container_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    hex::encode(bytes)
}

/// Restores stdout and stderr when dropped.
struct Redirect {
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
}

impl Redirect {
    /// Point stdout (and with `log` also stderr) elsewhere while the container runs: stdout
    /// of `gcr build` carries only the image ID.
    fn new(log: Option<&File>) -> std::io::Result<Redirect> {
        let saved = Redirect {
            stdout: nix::unistd::dup(std::io::stdout())?,
            stderr: nix::unistd::dup(std::io::stderr())?,
        };
        match log {
            Some(file) => {
                nix::unistd::dup2_stdout(file)?;
                nix::unistd::dup2_stderr(file)?;
            }
            None => nix::unistd::dup2_stdout(&saved.stderr)?,
        }
        Ok(saved)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2_stdout(&self.stdout);
        let _ = nix::unistd::dup2_stderr(&self.stderr);
    }
}

/// The last `lines` lines of the log.
fn tail(log: &mut File, lines: usize) -> String {
    let len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    let mut text = String::new();
    if log.seek(SeekFrom::Start(start)).is_ok() {
        let mut bytes = Vec::new();
        let _ = log.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run the step; Ok when the command exited 0.
pub(crate) fn run_step(step: &RunStep) -> StepResult<()> {
    let mut spec = gcr_runtime::docker_default_spec();
    let id = container_id();
    spec.set_hostname(Some(id[..12].to_string()));
    if let Some(mut process) = spec.process().clone() {
        process.set_args(Some(step.argv.clone()));
        process.set_env(Some(step.env.clone()));
        process.set_cwd(PathBuf::from(&step.cwd));
        process.set_terminal(Some(false));
        if !step.rlimits.is_empty() {
            process.set_rlimits(Some(step.rlimits.clone()));
        }
        spec.set_process(Some(process));
    }
    if !step.network_none {
        gcr_runtime::remove_namespace(&mut spec, oci_spec::runtime::LinuxNamespaceType::Network);
    }
    if step.privileged {
        gcr_runtime::set_privileged(&mut spec);
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &step.mounts {
        mounts.push(match m {
            RunMount::Bind {
                source,
                target,
                read_only,
            } => gcr_runtime::bind_mount(source, Path::new(target), *read_only),
            RunMount::Tmpfs { target, options } => {
                gcr_runtime::tmpfs_mount(Path::new(target), options)
            }
            RunMount::Overlay {
                lower,
                upper,
                work,
                target,
            } => overlay_mount(lower, upper, work, target, step.userxattr)?,
        });
    }
    if let Some(bytes) = step.shm_size {
        gcr_containers::set_shm_size(&mut mounts, bytes);
    }
    spec.set_mounts(Some(mounts));
    std::fs::create_dir_all(step.state_dir)
        .map_err(|e| crate::error::io_fail("creating", step.state_dir, e))?;
    let rootfs = gcr_containers::overlay(
        step.lower.clone(),
        step.upper.to_path_buf(),
        step.work.to_path_buf(),
    );
    let mut options = gcr_runtime::RunOptions::new(rootfs, id, step.state_dir);
    options.user = step.user.clone().filter(|u| !u.is_empty());
    if !step.extra_hosts.is_empty() {
        options.etc_files = true;
        options.extra_hosts = step.extra_hosts.clone();
    }

    let mut log = if step.quiet {
        let path = step.state_dir.join("output.log");
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| crate::error::io_fail("creating", &path, e))?,
        )
    } else {
        None
    };
    let redirect = Redirect::new(log.as_ref())
        .map_err(|e| StepFailure::Message(format!("cannot redirect the output: {e}")))?;
    let result = gcr_runtime::run_container(&spec, &options);
    drop(redirect);
    let failed = !matches!(result, Ok(0));
    if failed {
        if let Some(log) = log.as_mut() {
            let text = tail(log, 20);
            if !text.is_empty() {
                eprintln!("{text}");
            }
        }
    }
    let code = match result {
        Ok(0) => 0,
        Ok(code) => code,
        Err(gcr_runtime::RuntimeError::Exec { code, message }) => {
            eprintln!("{message}");
            code
        }
        Err(e) => {
            return Err(StepFailure::Message(format!(
                "cannot run the container: {e}"
            )))
        }
    };
    cleanup_stubs(step);
    if code != 0 {
        return Err(StepFailure::Exit(code));
    }
    Ok(())
}

/// True when some lower dir has `rel`.
/// An OverlayFS mount for the runtime's spec.
fn overlay_mount(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &str,
    userxattr: bool,
) -> Result<oci_spec::runtime::Mount, StepFailure> {
    let mut options = Vec::new();
    for (key, path) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        let text = path
            .to_str()
            .filter(|t| !t.contains([',', ':']))
            .ok_or_else(|| {
                StepFailure::Message(format!(
                    "cannot make {target} writable: the path {} holds ',' or ':' (or is not UTF-8)",
                    path.display()
                ))
            })?;
        options.push(format!("{key}={text}"));
    }
    if userxattr {
        options.push("userxattr".to_string());
    }
    let mut mount = oci_spec::runtime::Mount::default();
    mount.set_destination(PathBuf::from(target));
    mount.set_typ(Some("overlay".to_string()));
    mount.set_source(Some(PathBuf::from("overlay")));
    mount.set_options(Some(options));
    Ok(mount)
}

fn in_lowers(lower: &[PathBuf], rel: &Path) -> bool {
    lower
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
}

/// Remove what the runtime made in the upper dir only as mount points (empty files for
/// /etc/hosts and friends, directories for mount targets), so they do not end up in the layer.
fn cleanup_stubs(step: &RunStep) {
    let mut paths: Vec<String> = [
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "dev",
        "proc",
        "sys",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &step.mounts {
        paths.push(m.target().trim_start_matches('/').to_string());
    }
    for p in paths {
        let mut rel = PathBuf::from(p);
        loop {
            if rel.as_os_str().is_empty() || in_lowers(&step.lower, &rel) {
                break;
            }
            let host = step.upper.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                break;
            };
            let removed = if meta.is_dir() {
                std::fs::remove_dir(&host).is_ok()
            } else if meta.is_file() && meta.len() == 0 {
                std::fs::remove_file(&host).is_ok()
            } else {
                false
            };
            if !removed {
                break;
            }
            match rel.parent() {
                Some(parent) => rel = parent.to_path_buf(),
                None => break,
            }
        }
    }
}
