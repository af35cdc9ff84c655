//! Spec assembly: an image's config and a container's [`CreateOptions`] become the OCI
//! runtime `Spec` the runtime runs (and `config.json` records).

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxNamespaceType;
use serde_json::Value;

use crate::error::{ContainerError, Result};
use crate::network::NetworkChoice;
use crate::options::CreateOptions;

/// The parts of an image config that decide what runs and how.
#[derive(Debug, Default, Clone)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's STOPSIGNAL, for `gcr stop`.
    pub stop_signal: String,
    /// EXPOSEd ports (`80/tcp`), for -P.
    pub exposed_ports: Vec<String>,
    /// VOLUMEs: each gets an anonymous volume unless the container mounts something there.
    pub volumes: Vec<String>,
    /// Its HEALTHCHECK.
    pub health: Option<crate::health::HealthConfig>,
}

impl ImageProcess {
    pub fn from_config(config: &Value) -> ImageProcess {
        let section = config.get("config").cloned().unwrap_or(Value::Null);
        let strings = |key: &str| -> Vec<String> {
            section
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |key: &str| {
            section
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ImageProcess {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: text("WorkingDir"),
            user: text("User"),
            stop_signal: text("StopSignal"),
            exposed_ports: section
                .get("ExposedPorts")
                .and_then(Value::as_object)
                .map(|ports| ports.keys().cloned().collect())
                .unwrap_or_default(),
            volumes: section
                .get("Volumes")
                .and_then(Value::as_object)
                .map(|v| v.keys().cloned().collect())
                .unwrap_or_default(),
            health: crate::health::HealthConfig::of_image(config),
        }
    }
}

/// Docker's rule: `--entrypoint` replaces the image's ENTRYPOINT and drops its CMD; arguments
/// after the image replace CMD.
pub fn process_args(
    image: &ImageProcess,
    entrypoint: Option<&str>,
    command: &[String],
) -> Vec<String> {
    let (entry, default_cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if command.is_empty() {
        default_cmd
    } else {
        command.to_vec()
    };
    entry.into_iter().chain(cmd).collect()
}

/// Merges environment lists: later entries override earlier ones with the same key.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in base.iter().chain(overrides) {
        let key = entry.split('=').next().unwrap_or(entry);
        out.retain(|e| e.split('=').next().unwrap_or(e) != key);
        out.push(entry.clone());
    }
    out
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI runtime spec of a container: Docker's defaults and hardening, the image's process
/// settings, then the options over them. `hostname` is the container's (Docker: the first 12
/// digits of its ID). User namespaces and the network's ports are added by `create`.
pub fn container_spec(
    image: &ImageProcess,
    opts: &CreateOptions,
    hostname: &str,
) -> Result<gcr_runtime::Spec> {
    let argv = process_args(image, opts.entrypoint.as_deref(), &opts.command);
    if argv.is_empty() {
        return Err(ContainerError::invalid(
            "no command to run: the image has no ENTRYPOINT or CMD; give one after the image",
        ));
    }
    let mut base_env = vec![format!("HOSTNAME={hostname}")];
    if !image.env.iter().any(|e| e.starts_with("PATH=")) {
        base_env.push(DEFAULT_PATH.to_string());
    }
    let env = merge_env(&merge_env(&base_env, &image.env), &opts.env);
    let cwd = opts
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(ContainerError::invalid(format!(
            "working directory {cwd:?} must be an absolute path"
        )));
    }

    let mut spec = gcr_runtime::docker_default_spec();
    spec.set_hostname(Some(hostname.to_string()));
    if let Some(mut process) = spec.process().clone() {
        process.set_args(Some(argv));
        process.set_env(Some(env));
        process.set_cwd(PathBuf::from(cwd));
        process.set_terminal(Some(opts.tty));
        if !opts.rlimits.is_empty() {
            process.set_rlimits(Some(opts.rlimits.clone()));
        }
        spec.set_process(Some(process));
    }
    apply_security(&mut spec, opts)?;
    if opts.network == NetworkChoice::Host {
        gcr_runtime::remove_namespace(&mut spec, LinuxNamespaceType::Network);
    }
    if opts.pid_host {
        // Rootless, a fresh /proc cannot be mounted for the host's PID namespace.
        if gcr_runtime::userns::is_rootless() {
            return Err(ContainerError::invalid(
                "--pid host is not supported rootless yet: run as root, or without it",
            ));
        }
        gcr_runtime::remove_namespace(&mut spec, LinuxNamespaceType::Pid);
    }
    if opts.ipc_host {
        gcr_runtime::remove_namespace(&mut spec, LinuxNamespaceType::Ipc);
    }
    if !opts.sysctls.is_empty() {
        if let Some(mut linux) = spec.linux().clone() {
            let mut sysctl = linux.sysctl().clone().unwrap_or_default();
            sysctl.extend(opts.sysctls.iter().cloned());
            linux.set_sysctl(Some(sysctl));
            spec.set_linux(Some(linux));
        }
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for volume in &opts.volumes {
        mounts.push(gcr_runtime::bind_mount(
            &volume.source,
            Path::new(&volume.destination),
            volume.read_only,
        ));
    }
    for (destination, options) in &opts.tmpfs {
        mounts.push(gcr_runtime::tmpfs_mount(Path::new(destination), options));
    }
    if let Some(bytes) = opts.shm_size {
        set_shm_size(&mut mounts, bytes);
    }
    spec.set_mounts(Some(mounts));
    crate::limits::apply_resources(&mut spec, opts)?;
    if opts.read_only {
        if let Some(mut root) = spec.root().clone() {
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
    }
    Ok(spec)
}

/// `--privileged`, `--cap-add/--cap-drop` and `--security-opt`, in the order Docker applies them.
fn apply_security(spec: &mut gcr_runtime::Spec, opts: &CreateOptions) -> Result<()> {
    if opts.privileged {
        gcr_runtime::set_privileged(spec);
    }
    if !opts.cap_add.is_empty() || !opts.cap_drop.is_empty() {
        gcr_runtime::set_capabilities(spec, &opts.cap_add, &opts.cap_drop)?;
    }
    for option in &opts.security_opt {
        let (key, value) = option
            .split_once(['=', ':'])
            .unwrap_or((option.as_str(), ""));
        match (key, value) {
            ("seccomp", "unconfined") => gcr_runtime::set_seccomp_profile(spec, None)?,
            ("seccomp", file) if !file.is_empty() => {
                if !opts.privileged {
                    gcr_runtime::set_seccomp_profile(spec, Some(Path::new(file)))?;
                }
            }
            ("no-new-privileges", "" | "true") => {
                if let Some(mut process) = spec.process().clone() {
                    process.set_no_new_privileges(Some(true));
                    spec.set_process(Some(process));
                }
            }
            ("no-new-privileges", "false") => {}
            ("apparmor" | "label", _) => {
                tracing::warn!(option, "ignored: gcr has no AppArmor or SELinux support");
            }
            _ => {
                return Err(ContainerError::invalid(format!(
                "unknown --security-opt {option:?}: use seccomp=unconfined, seccomp=FILE or no-new-privileges"
            )))
            }
        }
    }
    Ok(())
}

/// Gives the /dev/shm mount of `mounts` a size of `bytes` (`--shm-size`).
pub fn set_shm_size(mounts: &mut [oci_spec::runtime::Mount], bytes: i64) {
    for m in mounts
        .iter_mut()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
    {
        let mut options: Vec<String> = m
            .options()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.starts_with("size="))
            .collect();
        options.push(format!("size={bytes}"));
        m.set_options(Some(options));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{ImageSource, Volume};

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/app/bin".into(), "MODE=prod".into()],
            working_dir: "/app".into(),
            ..Default::default()
        }
    }

    fn options() -> CreateOptions {
        CreateOptions::new(ImageSource::Directory("/nonexistent".into()))
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        assert_eq!(process_args(&image(), None, &[]), vec!["/entry", "serve"]);
        assert_eq!(
            process_args(&image(), None, &["x".into()]),
            vec!["/entry", "x"]
        );
        assert_eq!(process_args(&image(), Some("/sh"), &[]), vec!["/sh"]);
        assert_eq!(process_args(&image(), Some(""), &["ls".into()]), vec!["ls"]);
    }

    #[test]
    fn env_overrides_keep_last() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn spec_takes_the_image_then_the_options() {
        let mut opts = options();
        opts.env = vec!["MODE=dev".into()];
        opts.tty = true;
        opts.read_only = true;
        opts.network = NetworkChoice::Host;
        opts.volumes.push(Volume {
            source: "/srv".into(),
            destination: "/data".into(),
            read_only: true,
            named: None,
            no_copy: false,
        });
        opts.tmpfs.push(("/scratch".into(), "size=1m".into()));
        opts.shm_size = Some(128 << 20);
        opts.resources.memory = Some(64 << 20);
        opts.resources.pids_limit = Some(50);
        let spec = container_spec(&image(), &opts, "abc").unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/entry", "serve"]);
        assert_eq!(
            process.env().as_ref().unwrap(),
            &["HOSTNAME=abc", "PATH=/app/bin", "MODE=dev"]
        );
        assert_eq!(process.cwd(), Path::new("/app"));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("abc"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid));
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().iter().any(|o| o == "ro"));
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/scratch")));
        let shm = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert!(shm
            .options()
            .as_ref()
            .unwrap()
            .contains(&format!("size={}", 128 << 20)));
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(resources.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(resources.pids().unwrap().limit(), 50);
    }

    #[test]
    fn spec_refuses_what_cannot_run() {
        let mut opts = options();
        assert!(container_spec(&ImageProcess::default(), &opts, "h").is_err());
        opts.workdir = Some("relative".into());
        assert!(container_spec(&image(), &opts, "h").is_err());
        opts.workdir = None;
        opts.resources.pids_limit = Some(0);
        assert!(container_spec(&image(), &opts, "h").is_err());
        opts.resources.pids_limit = None;
        opts.security_opt = vec!["bogus".into()];
        assert!(container_spec(&image(), &opts, "h").is_err());
    }

    #[test]
    fn privileged_and_capabilities() {
        let mut opts = options();
        opts.cap_drop = vec!["ALL".into()];
        opts.cap_add = vec!["NET_ADMIN".into()];
        opts.security_opt = vec!["no-new-privileges".into()];
        let spec = container_spec(&image(), &opts, "h").unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let bounding = process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(bounding.len(), 1, "{bounding:?}");
    }
}
