//! `gcr version` and `gcr info`: what scripts written for Docker ask of the engine, with
//! `--format` templates as Docker's (`{{.Server.Version}}`, `{{.Rootless}}`, ...).

use clap::Args;
use serde_json::{json, Value};

use crate::context::Context;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// A Go template, e.g. '{{.Client.Version}}', or json
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A Go template, e.g. '{{.CgroupVersion}}', or json
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

fn platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (std::env::consts::OS, arch)
}

/// Prints `value` through `format` (a template or `json`), or as `lines` when none is given.
fn show(value: &Value, format: Option<&str>, lines: impl FnOnce(&Value)) -> anyhow::Result<u8> {
    match format {
        None => lines(value),
        Some("json") => println!("{value}"),
        Some(template) => println!(
            "{}",
            crate::template::Template::parse(template)?.render(value)?
        ),
    }
    Ok(0)
}

pub fn version(args: VersionArgs) -> anyhow::Result<u8> {
    let (os, arch) = platform();
    let side = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": os,
        "Arch": arch,
        "GoVersion": Value::Null,
    });
    // No daemon: the client is the engine, so both sides are gcr itself.
    let value = json!({ "Client": side, "Server": side, "Version": env!("CARGO_PKG_VERSION") });
    show(&value, args.format.as_deref(), |v| {
        println!("Version:  {}", v["Version"].as_str().unwrap_or_default());
        println!("OS/Arch:  {os}/{arch}");
        println!("Engine:   none (gcr runs containers itself, without a daemon)");
    })
}

/// `1`, `2`, or `hybrid` (v1 controllers with a cgroup2 mount beside them).
fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
        "hybrid"
    } else {
        "1"
    }
}

pub fn info(ctx: &Context, args: InfoArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let images = store.images()?.len();
    let (containers, running) = gcr_containers::counts(&store)?;
    let (os, arch) = platform();
    let rootless = gcr_runtime::userns::rootless_ids().is_some();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_name = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let value = json!({
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Driver": "overlay",
        "DockerRootDir": store.root(),
        "Images": images,
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersStopped": containers - running,
        "CgroupVersion": cgroup_version(),
        "Rootless": rootless,
        "DefaultNetwork": if rootless { "slirp4netns" } else { "bridge" },
        "SecurityOptions": ["name=seccomp,profile=builtin", if rootless { "name=rootless" } else { "name=rootful" }],
        "KernelVersion": kernel,
        "OperatingSystem": os_name,
        "OSType": os,
        "Architecture": arch,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    show(&value, args.format.as_deref(), |v| {
        for key in [
            "ServerVersion",
            "DockerRootDir",
            "Driver",
            "Images",
            "Containers",
            "ContainersRunning",
            "ContainersStopped",
            "CgroupVersion",
            "Rootless",
            "DefaultNetwork",
            "KernelVersion",
            "OperatingSystem",
            "Architecture",
            "NCPU",
        ] {
            let shown = match &v[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{key}: {shown}");
        }
    })
}
