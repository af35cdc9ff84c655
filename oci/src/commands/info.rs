//! `--version`, `spec` and `features`.

use std::path::Path;

use crate::error::OciError;

pub fn version() -> String {
    format!(
        "gcr-oci version {}\nspec: {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::OCI_VERSION
    )
}

/// `spec`: a default config.json in the bundle directory; an existing one is kept.
pub fn spec(bundle: Option<&Path>, rootless: bool) -> Result<(), OciError> {
    let dir = bundle.unwrap_or(Path::new("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(OciError::Usage(format!(
            "{} exists: remove it first",
            path.display()
        )));
    }
    let spec = crate::spec::default_spec(rootless);
    let text = serde_json::to_string_pretty(&spec).map_err(|e| OciError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, text + "\n").map_err(|e| OciError::io("write", &path, e))
}

/// `features`: what runc 1.1+ prints (runtime-spec features.md).
pub fn features() -> Result<(), OciError> {
    let caps: Vec<&str> = gcr_runtime::capability_names().to_vec();
    let value = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
            "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.implementation": "gcr-oci",
            "io.github.gcr.version": env!("CARGO_PKG_VERSION")
        }
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(())
}
