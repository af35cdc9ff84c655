//! What the engine says about itself: Docker's `/version` and `/info` documents, shared by
//! `gcr version`/`gcr info` and the API service's endpoints.

use serde_json::{json, Value};

use crate::error::Result;

/// The Docker Engine API version gcr serves, and the oldest it accepts.
pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.24";

/// Go's names for this machine: (os, arch).
pub fn platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (std::env::consts::OS, arch)
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `1`, `2`, or `hybrid` (v1 controllers with a cgroup2 mount beside them).
pub fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
        "hybrid"
    } else {
        "1"
    }
}

/// Docker's `GET /version` document.
pub fn version() -> Value {
    let (os, arch) = platform();
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "Platform": { "Name": "gcr" },
        "Components": [{ "Name": "Engine", "Version": version, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": os, "Arch": arch,
        }}],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": os,
        "Arch": arch,
        "KernelVersion": kernel(),
        "BuildTime": "",
    })
}

/// Docker's `GET /info` document, for the store at hand.
pub fn info(store: &gcr_storage::Store) -> Result<Value> {
    let images = store.images()?.len();
    let (containers, running) = crate::counts(store)?;
    let (os, arch) = platform();
    let rootless = gcr_runtime::userns::rootless_ids().is_some();
    let os_name = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let cgroup = cgroup_version();
    Ok(json!({
        "ID": "",
        "Name": nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Driver": "overlay",
        "DockerRootDir": store.root(),
        "Images": images,
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers - running,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if cgroup == "2" { "2" } else { "1" },
        "Rootless": rootless,
        "DefaultNetwork": if rootless { "slirp4netns" } else { "bridge" },
        "SecurityOptions": ["name=seccomp,profile=builtin", if rootless { "name=rootless" } else { "name=rootful" }],
        "KernelVersion": kernel(),
        "OperatingSystem": os_name,
        "OSType": os,
        "Architecture": arch,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": 0,
        "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "none"], "Log": ["json-file"] },
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [] },
        "Swarm": { "LocalNodeState": "inactive" },
        "Runtimes": { "gcr": { "path": "gcr" } },
        "DefaultRuntime": "gcr",
        "Warnings": [],
    }))
}
