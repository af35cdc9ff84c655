//! Device rules on cgroup v2: v2 has no devices controller, so the rules (the spec's, then
//! runc's default list, as on v1) become an eBPF program of type CGROUP_DEVICE attached to
//! the container's group, which the kernel asks before every open and mknod of a device.
//! The last rule that matches decides, as the v1 list reads; none matching: denied.

use std::os::fd::AsFd as _;
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use crate::error::RuntimeError;
use crate::sys::bpf::BpfInsn;

/// One rule in the filter's terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    /// 1 block, 2 char (the kernel's BPF_DEVCG_DEV_*); None: both.
    pub kind: Option<i32>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// BPF_DEVCG_ACC_* bits: 1 mknod, 2 read, 4 write.
    pub access: i32,
}

fn access_bits(text: &str) -> i32 {
    text.chars()
        .map(|c| match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

impl DeviceRule {
    pub fn of_spec(rule: &LinuxDeviceCgroup) -> DeviceRule {
        let kind = rule.typ().map(|t| t.as_str().to_string());
        DeviceRule {
            allow: rule.allow(),
            kind: match kind.as_deref() {
                Some("b") => Some(1),
                Some("c") => Some(2),
                _ => None,
            },
            major: rule.major(),
            minor: rule.minor(),
            access: access_bits(rule.access().as_deref().unwrap_or("rwm")),
        }
    }

    /// A v1 list entry such as `c 1:3 rwm` or `c *:* m` (allowing).
    pub fn of_entry(entry: &str) -> Option<DeviceRule> {
        let mut parts = entry.split_whitespace();
        let kind = match parts.next()? {
            "b" => Some(1),
            "c" => Some(2),
            "a" => None,
            _ => return None,
        };
        let (major, minor) = parts.next().unwrap_or("*:*").split_once(':')?;
        let number = |n: &str| {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some)
            }
        };
        Some(DeviceRule {
            allow: true,
            kind,
            major: number(major).ok()?,
            minor: number(minor).ok()?,
            access: access_bits(parts.next().unwrap_or("rwm")),
        })
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const AND32_IMM: u8 = 0x54;
const RSH32_IMM: u8 = 0x74;
const JNE_IMM: u8 = 0x55;
const EXIT: u8 = 0x95;

/// The program for `rules` (in v1 order): r2 type, r3 access, r4 major, r5 minor from the
/// context (struct bpf_cgroup_dev_ctx: access_type = access << 16 | type, major, minor); then
/// one block per rule, last rule first, each returning its verdict when it matches, up to a
/// rule that matches every device.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut out = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(MOV64_REG, 3, 2, 0, 0),
        insn(AND32_IMM, 2, 0, 0, 0xffff),
        insn(RSH32_IMM, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // The tests first (each jumps past the block when it fails), then the verdict.
        let mut tests: Vec<Vec<BpfInsn>> = Vec::new();
        if let Some(kind) = rule.kind {
            tests.push(vec![insn(JNE_IMM, 2, 0, 0, kind)]);
        }
        if rule.access & 7 != 7 {
            // Anything asked beyond the rule's access: not this rule.
            tests.push(vec![
                insn(MOV64_REG, 0, 3, 0, 0),
                insn(AND32_IMM, 0, 0, 0, !rule.access & 7),
                insn(JNE_IMM, 0, 0, 0, 0),
            ]);
        }
        if let Some(major) = rule.major.and_then(|m| i32::try_from(m).ok()) {
            tests.push(vec![insn(JNE_IMM, 4, 0, 0, major)]);
        }
        if let Some(minor) = rule.minor.and_then(|m| i32::try_from(m).ok()) {
            tests.push(vec![insn(JNE_IMM, 5, 0, 0, minor)]);
        }
        let verdict = [
            insn(MOV64_IMM, 0, 0, 0, i32::from(rule.allow)),
            insn(EXIT, 0, 0, 0, 0),
        ];
        if tests.is_empty() {
            // Matches everything: nothing after it is reachable (the verifier refuses dead
            // code).
            out.extend(verdict);
            return out;
        }
        let mut block: Vec<BpfInsn> = tests.into_iter().flatten().collect();
        block.extend(verdict);
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_IMM {
                // To the first instruction after the block.
                ins.off = (len - i - 1) as i16;
            }
        }
        out.extend(block);
    }
    out.push(insn(MOV64_IMM, 0, 0, 0, 0));
    out.push(insn(EXIT, 0, 0, 0, 0));
    out
}

/// Loads the filter for `rules` and attaches it to the v2 group `dir`.
pub(crate) fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<(), RuntimeError> {
    let group = std::fs::File::open(dir).map_err(|e| RuntimeError::io("open cgroup", dir, e))?;
    let prog = crate::sys::bpf::load_device_program(&program(rules))
        .map_err(|e| RuntimeError::sys("load the cgroup v2 device filter (eBPF)", e))?;
    crate::sys::bpf::attach_device_program(group.as_fd(), prog.as_fd())
        .map_err(|e| RuntimeError::sys(format!("attach the device filter to {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_the_v1_list_does() {
        let rule = DeviceRule::of_entry("c 1:3 rwm").unwrap();
        assert_eq!(
            (rule.kind, rule.major, rule.minor, rule.access),
            (Some(2), Some(1), Some(3), 7)
        );
        let any = DeviceRule::of_entry("b *:* m").unwrap();
        assert_eq!((any.kind, any.major, any.access), (Some(1), None, 1));
        assert!(DeviceRule::of_entry("x 1:2 r").is_none());
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let rules = [
            DeviceRule {
                allow: false,
                kind: None,
                major: None,
                minor: None,
                access: 7,
            },
            DeviceRule::of_entry("c 1:3 rwm").unwrap(),
            DeviceRule::of_entry("c *:* m").unwrap(),
        ];
        let prog = program(&rules);
        for (i, ins) in prog.iter().enumerate() {
            if ins.code == JNE_IMM {
                let target = i as i64 + 1 + i64::from(ins.off);
                assert!(
                    target > i as i64 && (target as usize) < prog.len(),
                    "{i}: {ins:?}"
                );
            }
        }
        assert_eq!(prog.last().unwrap().code, EXIT);
    }

    /// A cgroup v2 directory to try the filter in: the unified hierarchy itself on v2, its
    /// mount beside the v1 controllers on a hybrid machine (as this project's).
    fn v2_root() -> Option<std::path::PathBuf> {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
    }

    #[test]
    fn the_filter_denies_what_the_rules_do_not_allow() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let root = nix::unistd::geteuid().is_root();
        let Some(v2) = v2_root().filter(|_| root) else {
            assert!(
                !in_ci,
                "CI runs as root with a cgroup2 mount (v2 or hybrid)"
            );
            eprintln!("SKIP: needs root and a cgroup2 mount");
            return;
        };
        let dir = v2.join(format!("gcr-device-filter-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Removed however the test ends (empty once the shell has exited).
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _remove = Remove(dir.clone());
        let rules = [
            DeviceRule {
                allow: false,
                kind: None,
                major: None,
                minor: None,
                access: 7,
            },
            DeviceRule::of_entry("c 1:3 rwm").unwrap(),
            // /dev/zero: read only.
            DeviceRule::of_entry("c 1:5 r").unwrap(),
        ];
        attach(&dir, &rules).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs || exit 9; \
             cat /dev/null && echo null; \
             head -c1 /dev/zero >/dev/null 2>&1 && echo zero-read; \
             (: > /dev/zero) 2>/dev/null || echo zero-write-denied; \
             head -c1 /dev/full >/dev/null 2>&1 || echo full-denied; true",
            dir.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            "null\nzero-read\nzero-write-denied\nfull-denied\n",
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
