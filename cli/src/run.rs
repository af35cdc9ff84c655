//! `gcr run`: turns an image (or a plain rootfs directory) and the command line into an OCI
//! runtime spec and hands it to the runtime crate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::Value;

use crate::Context;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background (not supported yet)
    #[arg(short, long)]
    detach: bool,
    /// Container name
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable: KEY=VALUE, or KEY to take it from gcr's environment
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: name|uid[:group|gid]
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long, value_name = "NAME")]
    hostname: Option<String>,
    /// Bind mount a volume: SRC:DST[:ro|rw]
    #[arg(short, long = "volume", value_name = "SRC:DST[:OPTS]")]
    volume: Vec<String>,
    /// Mount a tmpfs: DST[:OPTIONS]
    #[arg(long, value_name = "DST[:OPTS]")]
    tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Network: none or host
    #[arg(long, alias = "net", default_value = "host", value_name = "MODE")]
    network: String,
    /// Give the container every capability and no seccomp filter or masked paths
    #[arg(long)]
    privileged: bool,
    /// Add a Linux capability
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|FILE, no-new-privileges
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Run a small init as PID 1 that reaps zombies and forwards signals
    #[arg(long)]
    init: bool,
    /// User namespace: "" (default), host, private (a new one, rootful)
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
    /// Use a directory as the root filesystem instead of an image
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Platform to pull when the image is missing
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// IMAGE [COMMAND [ARG...]] (with --rootfs: COMMAND [ARG...])
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    args: Vec<String>,
}

/// The parts of an image config that decide what runs and how.
#[derive(Debug, Default, Clone)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
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

/// `-e` and `--env-file` values as KEY=VALUE; a bare KEY takes gcr's own value or is dropped.
fn command_line_env(args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --env-file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            push_env(&mut out, line);
        }
    }
    for entry in &args.env {
        push_env(&mut out, entry);
    }
    Ok(out)
}

fn push_env(out: &mut Vec<String>, entry: &str) {
    if entry.contains('=') {
        out.push(entry.to_string());
    } else if let Ok(value) = std::env::var(entry) {
        out.push(format!("{entry}={value}"));
    }
}

/// A `-v SRC:DST[:OPTS]` volume with its source made absolute and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

pub fn parse_volume(spec: &str) -> anyhow::Result<Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume {spec:?}: use SRC:DST[:ro|rw]"),
    };
    if !source.starts_with('/') && !source.starts_with('.') {
        bail!("invalid volume {spec:?}: named volumes are not supported yet; give an absolute host path");
    }
    if !destination.starts_with('/') {
        bail!("invalid volume {spec:?}: the destination must be an absolute path");
    }
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" => {}
            other => bail!("invalid volume {spec:?}: unknown option {other:?} (use ro or rw)"),
        }
    }
    let source_path = Path::new(source);
    let source_path = std::fs::canonicalize(source_path).with_context(|| {
        format!("volume source {source} does not exist: create it first or fix the path")
    })?;
    Ok(Volume {
        source: source_path,
        destination: destination.to_string(),
        read_only,
    })
}

pub fn run(_ctx: &Context, args: RunArgs) -> anyhow::Result<u8> {
    if args.detach {
        bail!("gcr run -d is not supported yet: run in the foreground");
    }
    let _env = command_line_env(&args)?;
    bail!("gcr run is not supported yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            ..Default::default()
        }
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
    fn volumes_are_checked() {
        assert!(parse_volume("/nonexistent-gcr-dir:/x").is_err());
        assert!(parse_volume("/tmp:relative").is_err());
        assert!(parse_volume("name:/x").is_err());
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert!(v.read_only);
        assert_eq!(v.destination, "/data");
    }
}
