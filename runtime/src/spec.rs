//! Docker's default container configuration as an OCI [`Spec`], and the edits the command line
//! makes to it (capabilities, privileged, user namespace, volumes, tmpfs).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceType, Mount, Process, Root, Spec, User,
};

use crate::caps::parse_capability;
use crate::seccomp;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown capability {name:?} (e.g. CHOWN, NET_ADMIN or ALL)")]
    UnknownCapability { name: String },
    #[error("cannot read seccomp profile {}: {source}", path.display())]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

/// Docker's 14 default capabilities (moby `caps.DefaultCapabilities`).
pub fn docker_default_capabilities() -> Capabilities {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn capabilities(set: &Capabilities) -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set.clone()));
    c.set_inheritable(Some(Capabilities::new()));
    c.set_ambient(Some(Capabilities::new()));
    c
}

/// The spec `docker run` would use before looking at the image and the flags: Docker's
/// capabilities (inheritable and ambient empty), its seccomp profile, runc's masked and
/// read-only paths (plus Docker's additions), its mounts and flags, new pid, network (none),
/// ipc, uts, mount and cgroup namespaces, root 0:0, cwd `/`, no command yet.
pub fn docker_default_spec() -> Spec {
    let caps = docker_default_capabilities();
    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(User::default());
    process.set_args(Some(Vec::new()));
    process.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    ]));
    process.set_cwd(PathBuf::from("/"));
    process.set_no_new_privileges(Some(false));
    process.set_capabilities(Some(capabilities(&caps)));
    // Keep the inherited limits: this machine's hard limits are below what a spec would ask.
    process.set_rlimits(None);

    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_resources(None);
    linux.set_namespaces(Some(
        [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|t| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(t);
            ns
        })
        .collect(),
    ));
    let mut masked: Vec<String> = MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    // Docker also masks every CPU's thermal_throttle directory.
    if let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") {
        for cpu in cpus.flatten() {
            let throttle = cpu.path().join("thermal_throttle");
            if cpu.file_name().to_string_lossy().starts_with("cpu") && throttle.is_dir() {
                masked.push(throttle.display().to_string());
            }
        }
    }
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    linux.set_seccomp(Some(seccomp::docker_default_profile(&caps)));

    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));

    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_annotations(None);
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_linux(Some(linux));
    spec.set_mounts(Some(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]));
    spec
}

fn bounding(spec: &Spec) -> Capabilities {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
}

/// `--cap-add` / `--cap-drop` (names with or without `CAP_`, any case, or `ALL`); drop is
/// applied first, as Docker does. The seccomp rules Docker gates on capabilities follow when
/// the spec holds the default profile: call this before choosing another profile.
pub fn set_capabilities(spec: &mut Spec, add: &[String], drop: &[String]) -> Result<(), SpecError> {
    let mut set = bounding(spec);
    let parse = |n: &String| -> Result<Option<Capability>, SpecError> {
        if n.eq_ignore_ascii_case("all") {
            return Ok(None);
        }
        parse_capability(n)
            .map(Some)
            .ok_or_else(|| SpecError::UnknownCapability { name: n.clone() })
    };
    for name in drop {
        match parse(name)? {
            None => set.clear(),
            Some(c) => {
                set.remove(&c);
            }
        }
    }
    for name in add {
        match parse(name)? {
            None => set.extend(all_capabilities()),
            Some(c) => {
                set.insert(c);
            }
        }
    }
    apply_caps(spec, &set);
    Ok(())
}

fn all_capabilities() -> Vec<Capability> {
    crate::caps::capability_names()
        .iter()
        .filter_map(|n| parse_capability(n))
        .collect()
}

fn apply_caps(spec: &mut Spec, set: &Capabilities) {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_capabilities(Some(capabilities(set)));
    spec.set_process(Some(process));
    if let Some(mut linux) = spec.linux().clone() {
        if linux.seccomp().is_some() {
            linux.set_seccomp(Some(seccomp::docker_default_profile(set)));
        }
        spec.set_linux(Some(linux));
    }
}

/// `--security-opt seccomp=unconfined` (None) or `seccomp=FILE`.
pub fn set_seccomp_profile(spec: &mut Spec, file: Option<&Path>) -> Result<(), SpecError> {
    let profile = match file {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| SpecError::ReadProfile {
                path: path.to_path_buf(),
                source,
            })?;
            Some(seccomp::profile_from_json(
                &path.display().to_string(),
                &bytes,
                &bounding(spec),
            )?)
        }
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_seccomp(profile);
    spec.set_linux(Some(linux));
    Ok(())
}

/// `--privileged`: every capability, no seccomp, no masked or read-only paths, /sys writable.
pub fn set_privileged(spec: &mut Spec) {
    let all: Capabilities = all_capabilities().into_iter().collect();
    apply_caps(spec, &all);
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_seccomp(None);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        spec.set_linux(Some(linux));
    }
    if let Some(mut mounts) = spec.mounts().clone() {
        for m in mounts.iter_mut() {
            if matches!(m.typ().as_deref(), Some("sysfs") | Some("cgroup")) {
                let opts = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| if o == "ro" { "rw".to_string() } else { o })
                    .collect();
                m.set_options(Some(opts));
            }
        }
        spec.set_mounts(Some(mounts));
    }
}

/// Removes a namespace from the spec, e.g. `Network` for `--network host`.
pub fn remove_namespace(spec: &mut Spec, typ: LinuxNamespaceType) {
    if let Some(mut linux) = spec.linux().clone() {
        if let Some(ns) = linux.namespaces().clone() {
            linux.set_namespaces(Some(ns.into_iter().filter(|n| n.typ() != typ).collect()));
        }
        spec.set_linux(Some(linux));
    }
}

/// Joins the namespace of type `typ` at `path` (e.g. another container's
/// `/proc/PID/ns/net`) instead of making a new one.
pub fn set_namespace_path(spec: &mut Spec, typ: LinuxNamespaceType, path: &Path) {
    if let Some(mut linux) = spec.linux().clone() {
        let mut list: Vec<LinuxNamespace> = linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.typ() != typ)
            .collect();
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(Some(path.to_path_buf()));
        list.push(ns);
        linux.set_namespaces(Some(list));
        spec.set_linux(Some(linux));
    }
}

/// Adds a new user namespace with the given mappings `(container_id, host_id, size)` (rootful
/// `--userns`). Rootless gcr does not need this: it already runs inside its own user namespace.
pub fn set_user_namespace(
    spec: &mut Spec,
    uid_map: &[(u32, u32, u32)],
    gid_map: &[(u32, u32, u32)],
) {
    let to_maps = |m: &[(u32, u32, u32)]| {
        m.iter()
            .filter_map(|(c, h, s)| {
                LinuxIdMappingBuilder::default()
                    .container_id(*c)
                    .host_id(*h)
                    .size(*s)
                    .build()
                    .ok()
            })
            .collect::<Vec<LinuxIdMapping>>()
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        let mut user = LinuxNamespace::default();
        user.set_typ(LinuxNamespaceType::User);
        ns.push(user);
    }
    linux.set_namespaces(Some(ns));
    linux.set_uid_mappings(Some(to_maps(uid_map)));
    linux.set_gid_mappings(Some(to_maps(gid_map)));
    spec.set_linux(Some(linux));
}

/// A `-v SRC:DST[:ro]` volume.
pub fn bind_mount(source: &Path, destination: &Path, readonly: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.to_path_buf());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    let mut opts = vec!["rbind".to_string()];
    opts.push(if readonly { "ro" } else { "rw" }.to_string());
    m.set_options(Some(opts));
    m
}

/// A `--tmpfs DST[:OPTIONS]` mount; Docker's defaults are `nosuid,nodev,noexec` plus OPTIONS.
pub fn tmpfs_mount(destination: &Path, options: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.to_path_buf());
    m.set_typ(Some("tmpfs".to_string()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
    opts.extend(
        options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(String::from),
    );
    m.set_options(Some(opts));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_docker_like() {
        let spec = docker_default_spec();
        let caps = bounding(&spec);
        assert_eq!(caps.len(), 14);
        assert!(!caps.contains(&Capability::SysAdmin));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux.seccomp().is_some());
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 6);
    }

    #[test]
    fn cap_add_drop() {
        let mut spec = docker_default_spec();
        set_capabilities(&mut spec, &["sys_admin".into()], &["ALL".into()]).unwrap();
        assert_eq!(bounding(&spec).len(), 1);
        assert!(set_capabilities(&mut spec, &["nope".into()], &[]).is_err());
        set_privileged(&mut spec);
        assert!(bounding(&spec).len() >= 40);
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    }
}
