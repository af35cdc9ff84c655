//! Devices and the cgroup settings beyond the basic limits: the text forms of `--device`,
//! `--device-cgroup-rule`, `--device-read-bps`/`--device-write-bps` and `--cgroup-parent`,
//! and what they and [`Resources`] put into a container's spec.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{ContainerError, Result};
use crate::options::{CreateOptions, Resources};

/// `--device HOST[:CONTAINER][:PERMISSIONS]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub host: PathBuf,
    pub container: PathBuf,
    /// Some of `rwm`.
    pub access: String,
}

/// `--device-read-bps DEV:RATE` and its kin: a block device and bytes per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleDevice {
    pub path: PathBuf,
    pub rate: u64,
}

fn invalid(message: String) -> ContainerError {
    ContainerError::Invalid(message)
}

fn is_access(text: &str) -> bool {
    !text.is_empty() && text.len() <= 3 && text.chars().all(|c| "rwm".contains(c))
}

/// `--device /dev/X[:/dev/Y][:rwm]`, as Docker reads it.
pub fn parse_device(text: &str) -> Result<DeviceMapping> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, access] if is_access(access) => (*host, *host, *access),
        [host, container] => (*host, *container, "rwm"),
        [host, container, access] => (*host, *container, *access),
        _ => {
            return Err(invalid(format!(
                "invalid --device {text:?}: use HOST[:CONTAINER][:rwm]"
            )))
        }
    };
    if !is_access(access) {
        return Err(invalid(format!(
            "invalid --device {text:?}: permissions {access:?} must be some of r, w and m"
        )));
    }
    for path in [host, container] {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "invalid --device {text:?}: {path:?} is not an absolute path"
            )));
        }
    }
    Ok(DeviceMapping {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        access: access.to_string(),
    })
}

/// `--device-cgroup-rule 'c 1:3 rwm'`: type (a, b, c), major:minor (numbers or `*`), access.
pub fn parse_device_cgroup_rule(text: &str) -> Result<LinuxDeviceCgroup> {
    let bad = || {
        invalid(format!(
            "invalid --device-cgroup-rule {text:?}: use TYPE MAJOR:MINOR ACCESS, e.g. 'c 1:3 rwm' (type a, b or c; * for any number)"
        ))
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [kind, numbers, access] = fields.as_slice() else {
        return Err(bad());
    };
    let typ = match *kind {
        "a" => LinuxDeviceType::A,
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        _ => return Err(bad()),
    };
    let number = |n: &str| -> Result<Option<i64>> {
        match n {
            "*" => Ok(None),
            n => n.parse::<u32>().map(|n| Some(n.into())).map_err(|_| bad()),
        }
    };
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    if !is_access(access) {
        return Err(bad());
    }
    let mut rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access.to_string());
    if let Some(major) = number(major)? {
        rule = rule.major(major);
    }
    if let Some(minor) = number(minor)? {
        rule = rule.minor(minor);
    }
    Ok(rule.build()?)
}

/// Where a container's groups are below each cgroup hierarchy (see
/// `gcr_runtime::cgroups::group_path`).
pub(crate) fn cgroup_rel(id: &str, spec: Option<&gcr_runtime::Spec>) -> String {
    let path = spec
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.cgroups_path().clone());
    gcr_runtime::cgroups::group_path(id, path.as_deref())
}

/// A device rule as `--device-cgroup-rule` writes it.
pub(crate) fn rule_text(rule: &LinuxDeviceCgroup) -> String {
    let number = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    format!(
        "{} {}:{} {}",
        rule.typ()
            .map_or("a".to_string(), |t| t.as_str().to_string()),
        number(rule.major()),
        number(rule.minor()),
        rule.access().as_deref().unwrap_or("rwm")
    )
}

/// `--device-read-bps DEV:RATE` (RATE in bytes a second, with an optional k, m or g).
pub fn parse_device_rate(flag: &str, text: &str) -> Result<ThrottleDevice> {
    let bad = |why: &str| invalid(format!("invalid {flag} {text:?}: {why}"));
    let (path, rate) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("use DEVICE:RATE, e.g. /dev/sda:1mb"))?;
    if !path.starts_with('/') {
        return Err(bad("the device must be an absolute path"));
    }
    let lower = rate.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, factor) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: u64 = digits
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| bad("the rate must be a positive number of bytes, e.g. 1mb"))?;
    Ok(ThrottleDevice {
        path: PathBuf::from(path),
        rate: value.saturating_mul(factor),
    })
}

/// `--cgroup-parent`: a path below each hierarchy's root (leading `/` optional).
pub fn parse_cgroup_parent(text: &str) -> Result<String> {
    let trimmed = text.trim_matches('/');
    let climbs = Path::new(trimmed)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if trimmed.is_empty() || climbs {
        return Err(invalid(format!(
            "invalid --cgroup-parent {text:?}: give a cgroup path such as /mygroup, without . or .."
        )));
    }
    if trimmed.ends_with(".slice") {
        return Err(invalid(format!(
            "invalid --cgroup-parent {text:?}: gcr manages cgroups itself (cgroupfs), not through systemd slices"
        )));
    }
    Ok(trimmed.to_string())
}

/// The node behind `path`: its type and numbers (a block device for `what` when `block`).
fn device_numbers(
    path: &Path,
    what: &str,
    block: bool,
) -> Result<(LinuxDeviceType, i64, i64, u32)> {
    let meta =
        std::fs::metadata(path).map_err(|e| invalid(format!("{what} {}: {e}", path.display())))?;
    let kind = meta.file_type();
    let typ = if kind.is_block_device() {
        LinuxDeviceType::B
    } else if kind.is_char_device() && !block {
        LinuxDeviceType::C
    } else {
        let wanted = if block {
            "a block device"
        } else {
            "a device node"
        };
        return Err(invalid(format!("{what} {}: not {wanted}", path.display())));
    };
    let rdev = meta.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
        meta.mode() & 0o7777,
    ))
}

/// The cgroup limits asked for (none: `None`).
pub(crate) fn resource_limits(limits: &Resources) -> Result<Option<LinuxResources>> {
    if *limits == Resources::default() {
        return Ok(None);
    }
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(swap) = limits.memory_swap {
        match limits.memory {
            None => {
                return Err(invalid(
                    "--memory-swap needs --memory too (it is memory and swap together)".into(),
                ))
            }
            Some(memory) if swap != -1 && swap < memory => {
                return Err(invalid(format!(
                    "invalid --memory-swap {swap}: it is memory and swap together, so at least --memory ({memory}), or -1 for unlimited swap"
                )))
            }
            _ => {}
        }
    }
    if limits.memory.is_some() || limits.memory_swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = limits.memory {
            memory = memory.limit(limit);
        }
        if let Some(swap) = limits.memory_swap {
            memory = memory.swap(swap);
        }
        resources = resources.memory(memory.build()?);
    }
    if let Some(pids) = limits.pids_limit {
        if pids == 0 || pids < -1 {
            return Err(invalid(format!(
                "invalid --pids-limit {pids}: give a positive number, or -1 for no limit"
            )));
        }
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    if limits.cpus.is_some() || limits.cpu_shares.is_some() || limits.cpuset_cpus.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(cpus) = limits.cpus {
            let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if !(cpus > 0.0 && cpus <= online) {
                return Err(invalid(format!(
                    "invalid --cpus {cpus}: give a number above 0 and at most {online}"
                )));
            }
            let period: u64 = 100_000;
            cpu = cpu.period(period).quota((cpus * period as f64) as i64);
        }
        if let Some(shares) = limits.cpu_shares {
            if !(2..=262_144).contains(&shares) {
                return Err(invalid(format!(
                    "invalid --cpu-shares {shares}: give a number from 2 to 262144"
                )));
            }
            cpu = cpu.shares(shares);
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            let valid = !cpus.is_empty()
                && cpus.split(',').all(|part| {
                    let mut ends = part.splitn(2, '-');
                    ends.all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                });
            if !valid {
                return Err(invalid(format!(
                    "invalid --cpuset-cpus {cpus:?}: give CPUs such as 0-2 or 0,1"
                )));
            }
            cpu = cpu.cpus(cpus.clone());
        }
        resources = resources.cpu(cpu.build()?);
    }
    if limits.blkio_weight.is_some()
        || !limits.device_read_bps.is_empty()
        || !limits.device_write_bps.is_empty()
    {
        let mut io = LinuxBlockIoBuilder::default();
        if let Some(weight) = limits.blkio_weight {
            if !(10..=1000).contains(&weight) {
                return Err(invalid(format!(
                    "invalid --blkio-weight {weight}: give a number from 10 to 1000"
                )));
            }
            io = io.weight(weight);
        }
        let throttle = |flag: &str, list: &[ThrottleDevice]| -> Result<Vec<_>> {
            list.iter()
                .map(|t| {
                    let (_, major, minor, _) = device_numbers(&t.path, flag, true)?;
                    Ok(LinuxThrottleDeviceBuilder::default()
                        .major(major)
                        .minor(minor)
                        .rate(t.rate)
                        .build()?)
                })
                .collect()
        };
        if !limits.device_read_bps.is_empty() {
            io = io
                .throttle_read_bps_device(throttle("--device-read-bps", &limits.device_read_bps)?);
        }
        if !limits.device_write_bps.is_empty() {
            io = io.throttle_write_bps_device(throttle(
                "--device-write-bps",
                &limits.device_write_bps,
            )?);
        }
        resources = resources.block_io(io.build()?);
    }
    Ok(Some(resources.build()?))
}

/// Puts the limits, `--device` nodes and device rules into the spec. As root each device is a
/// node made in the container (and allowed by its device cgroup — v1's devices group, v2's
/// eBPF filter — which denies what Docker's default list does not name); rootless, or in a user namespace, where mknod is
/// impossible, the host's node is bound in, as Podman does.
pub(crate) fn apply_resources(spec: &mut gcr_runtime::Spec, opts: &CreateOptions) -> Result<()> {
    let mut resources = resource_limits(&opts.resources)?;
    let rootless = gcr_runtime::userns::is_rootless();
    let bind = rootless || opts.userns != crate::UsernsMode::Host;
    let mut rules = Vec::new();
    let mut devices = Vec::new();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for d in &opts.devices {
        let (typ, major, minor, mode) = device_numbers(&d.host, "--device", false)?;
        if bind {
            mounts.push(gcr_runtime::bind_mount(
                &d.host,
                &d.container,
                !d.access.contains('w'),
            ));
        } else {
            devices.push(
                LinuxDeviceBuilder::default()
                    .path(d.container.clone())
                    .typ(typ)
                    .major(major)
                    .minor(minor)
                    .file_mode(mode)
                    .uid(0u32)
                    .gid(0u32)
                    .build()?,
            );
        }
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(d.access.clone())
                .build()?,
        );
    }
    rules.extend(opts.device_cgroup_rules.iter().cloned());
    spec.set_mounts(Some(mounts));
    if !opts.device_cgroup_rules.is_empty() && rootless {
        tracing::warn!(
            "--device-cgroup-rule is not enforced rootless: the devices cgroup is root's"
        );
    }
    // Docker's device cgroup: everything denied but its default list (the runtime adds it)
    // and what was asked for. Privileged containers may use every device.
    if !rootless && !opts.privileged {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm".to_string())
            .build()?;
        rules.insert(0, deny_all);
        resources
            .get_or_insert_with(LinuxResources::default)
            .set_devices(Some(rules));
    }
    if let Some(mut linux) = spec.linux().clone() {
        if !devices.is_empty() {
            let mut all = linux.devices().clone().unwrap_or_default();
            all.extend(devices);
            linux.set_devices(Some(all));
        }
        if resources.is_some() {
            linux.set_resources(resources);
        }
        spec.set_linux(Some(linux));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_read_as_docker() {
        let d = parse_device("/dev/null").unwrap();
        assert_eq!(
            (d.container.to_str(), d.access.as_str()),
            (Some("/dev/null"), "rwm")
        );
        let d = parse_device("/dev/null:/dev/mynull").unwrap();
        assert_eq!(d.container, PathBuf::from("/dev/mynull"));
        let d = parse_device("/dev/null:r").unwrap();
        assert_eq!(
            (d.container.to_str(), d.access.as_str()),
            (Some("/dev/null"), "r")
        );
        let d = parse_device("/dev/null:/dev/x:rw").unwrap();
        assert_eq!(d.access, "rw");
        for bad in ["dev/null", "/dev/null:/x:rwx", "/dev/null:x", "/a:/b:r:w"] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains("--device"), "{bad}: {err}");
        }
    }

    #[test]
    fn device_cgroup_rules_read_as_docker() {
        let rule = parse_device_cgroup_rule("c 1:3 rwm").unwrap();
        assert_eq!((rule.major(), rule.minor()), (Some(1), Some(3)));
        let rule = parse_device_cgroup_rule("b *:* r").unwrap();
        assert_eq!((rule.major(), rule.minor()), (None, None));
        for bad in ["c 1:3", "x 1:3 rwm", "c 1-3 rwm", "c 1:3 rwx", "c a:3 r"] {
            let err = parse_device_cgroup_rule(bad).unwrap_err().to_string();
            assert!(err.contains("--device-cgroup-rule"), "{bad}: {err}");
        }
    }

    #[test]
    fn rates_and_parents() {
        let t = parse_device_rate("--device-read-bps", "/dev/sda:1mb").unwrap();
        assert_eq!((t.path.to_str(), t.rate), (Some("/dev/sda"), 1 << 20));
        assert_eq!(
            parse_device_rate("--device-read-bps", "/dev/sda:4096")
                .unwrap()
                .rate,
            4096
        );
        assert!(parse_device_rate("--device-read-bps", "/dev/sda").is_err());
        assert!(parse_device_rate("--device-read-bps", "/dev/sda:0").is_err());
        assert_eq!(parse_cgroup_parent("/mine/").unwrap(), "mine");
        assert!(parse_cgroup_parent("../x").is_err());
        assert!(parse_cgroup_parent("/").is_err());
    }

    #[test]
    fn swap_needs_memory() {
        let limits = Resources {
            memory_swap: Some(64 << 20),
            ..Resources::default()
        };
        assert!(resource_limits(&limits)
            .unwrap_err()
            .to_string()
            .contains("--memory"));
        let limits = Resources {
            memory: Some(64 << 20),
            memory_swap: Some(32 << 20),
            ..Resources::default()
        };
        assert!(resource_limits(&limits).is_err());
    }
}
