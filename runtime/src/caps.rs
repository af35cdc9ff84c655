//! Capability names and numbers, and applying an OCI capability set to this process.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::RuntimeError;
use crate::sys;

/// Every capability the kernel knows (up to Linux 6.x), indexed by number.
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// All capability names (`CAP_...`), in kernel order.
pub fn capability_names() -> &'static [&'static str] {
    NAMES
}

/// Parses `chown`, `CHOWN` or `CAP_CHOWN` (any case). `None` for an unknown name.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full)).ok()
}

pub(crate) fn number(cap: &Capability) -> Option<u32> {
    let name = serde_json::to_value(cap).ok()?;
    let name = name.as_str()?;
    NAMES.iter().position(|n| *n == name).map(|p| p as u32)
}

pub(crate) fn mask(set: Option<&Capabilities>) -> u64 {
    set.map(|s| {
        s.iter()
            .filter_map(number)
            .fold(0u64, |acc, n| acc | (1u64 << n))
    })
    .unwrap_or(0)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// This process's bounding set (all ones when it cannot be read).
fn own_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Capability masks computed in the parent, before the clone.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last_cap: u32,
}

impl CapMasks {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> CapMasks {
        let last_cap = last_cap();
        let masks = match caps {
            None => CapMasks {
                last_cap,
                ..CapMasks::default()
            },
            Some(c) => CapMasks {
                bounding: mask(c.bounding().as_ref()),
                effective: mask(c.effective().as_ref()),
                permitted: mask(c.permitted().as_ref()),
                inheritable: mask(c.inheritable().as_ref()),
                ambient: mask(c.ambient().as_ref()),
                last_cap,
            },
        };
        masks.within(own_bounding())
    }

    /// Nothing can be granted beyond our own bounding set (e.g. `--privileged` on a machine
    /// whose root lacks CAP_SYS_RESOURCE): keep what is available.
    fn within(self, available: u64) -> CapMasks {
        CapMasks {
            bounding: self.bounding & available,
            effective: self.effective & available,
            permitted: self.permitted & available,
            inheritable: self.inheritable & available,
            ambient: self.ambient & available,
            last_cap: self.last_cap,
        }
    }

    /// Drops every capability outside the bounding set (needs CAP_SETPCAP, so it runs before
    /// the uid change).
    pub fn drop_bounding(&self) -> Result<(), RuntimeError> {
        for cap in 0..=self.last_cap.min(63) {
            if self.bounding & (1 << cap) == 0 {
                match sys::prctl(libc::PR_CAPBSET_DROP, cap as u64, 0) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                    Err(e) => {
                        return Err(RuntimeError::sys(
                            format!("drop capability {cap} from the bounding set"),
                            e,
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets effective/permitted/inheritable, then the ambient set.
    pub fn apply(&self) -> Result<(), RuntimeError> {
        sys::capset(self.effective, self.permitted, self.inheritable)
            .map_err(|e| RuntimeError::sys("set capabilities", e))?;
        sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
            0,
        )
        .map_err(|e| RuntimeError::sys("clear ambient capabilities", e))?;
        for cap in 0..=self.last_cap.min(63) {
            if self.ambient & (1 << cap) != 0 {
                match sys::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap as u64,
                ) {
                    Ok(()) => {}
                    // Only a capability also permitted and inheritable can be ambient; a spec
                    // that asks for more (runc's own default does) gets what is possible, as
                    // with runc.
                    Err(nix::errno::Errno::EPERM)
                        if self.inheritable & self.permitted & (1 << cap) == 0 => {}
                    Err(e) => {
                        return Err(RuntimeError::sys(
                            format!("raise ambient capability {cap}"),
                            e,
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_capability("chown"), Some(Capability::Chown));
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN"),
            Some(Capability::SysAdmin)
        );
        assert_eq!(parse_capability("net_raw"), Some(Capability::NetRaw));
        assert_eq!(parse_capability("bogus"), None);
        assert_eq!(number(&Capability::SysAdmin), Some(21));
        assert_eq!(number(&Capability::CheckpointRestore), Some(40));
        for name in NAMES {
            let cap =
                parse_capability(name).unwrap_or_else(|| panic!("{name} unknown to oci-spec"));
            assert_eq!(NAMES[number(&cap).unwrap() as usize], *name);
        }
    }
}
