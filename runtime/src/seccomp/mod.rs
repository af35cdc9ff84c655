//! Seccomp: Docker's default profile (kept as data in `docker_default.json`), profiles from
//! files in Docker's or the OCI format, and a small compiler from an OCI [`LinuxSeccomp`] to a
//! classic BPF program, so no C library is needed.
//!
//! The compiled filter checks the architecture (x86_64 only; other ABIs get EPERM), then tries
//! the rules in order, first match wins. A syscall number beyond the newest one gcr knows gets
//! ENOSYS rather than the default action, so that libc falls back to an older call instead of
//! failing (runc does the same).

use std::collections::HashSet;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

#[cfg(target_arch = "x86_64")]
mod syscalls_x86_64;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid seccomp profile {source_name}: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("seccomp action {action} is not supported by gcr")]
    UnsupportedAction { action: String },
    #[error("seccomp rule for {syscall}: argument index {index} out of range (0-5)")]
    BadArgIndex { syscall: String, index: usize },
    #[error("seccomp filter has {len} instructions, more than the kernel's 4096")]
    TooLong { len: usize },
    #[error(
        "seccomp profiles are only supported on x86_64; use --security-opt seccomp=unconfined"
    )]
    UnsupportedArch,
}

const DOCKER_DEFAULT: &str = include_str!("docker_default.json");

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// Docker's profile format: the OCI one plus per-rule `includes`/`excludes` on capabilities.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

fn arch_matches(arches: &[String]) -> bool {
    arches.is_empty()
        || arches
            .iter()
            .any(|a| matches!(a.as_str(), "amd64" | "x86_64" | "SCMP_ARCH_X86_64"))
}

fn cap_names(caps: &Capabilities) -> HashSet<String> {
    caps.iter()
        .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(String::from))
        .collect()
}

fn to_oci(profile: Profile, caps: &Capabilities) -> LinuxSeccomp {
    let have = cap_names(caps);
    let mut syscalls = Vec::new();
    for rule in profile.syscalls {
        let included = rule.includes.caps.iter().all(|c| have.contains(c))
            && arch_matches(&rule.includes.arches);
        let excluded = (!rule.excludes.caps.is_empty()
            && rule.excludes.caps.iter().any(|c| have.contains(c)))
            || (!rule.excludes.arches.is_empty() && arch_matches(&rule.excludes.arches));
        if !included || excluded {
            continue;
        }
        let mut names = rule.names;
        names.extend(rule.name);
        let mut sc = LinuxSyscall::default();
        sc.set_names(names);
        sc.set_action(rule.action);
        sc.set_errno_ret(rule.errno_ret);
        sc.set_args(rule.args);
        syscalls.push(sc);
    }
    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_syscalls(Some(syscalls));
    out
}

/// Docker's default seccomp profile for a container whose bounding set is `caps` (rules that
/// Docker gates on a capability, e.g. `mount` on CAP_SYS_ADMIN, follow the set).
pub fn docker_default_profile(caps: &Capabilities) -> LinuxSeccomp {
    match serde_json::from_str::<Profile>(DOCKER_DEFAULT) {
        Ok(p) => to_oci(p, caps),
        // The embedded profile is tested; this arm only keeps the function panic-free.
        Err(_) => {
            let mut out = LinuxSeccomp::default();
            out.set_default_action(LinuxSeccompAction::ScmpActErrno);
            out
        }
    }
}

/// Parses a profile file in Docker's format (with `includes`/`excludes`) or the OCI format.
pub fn profile_from_json(
    source_name: &str,
    bytes: &[u8],
    caps: &Capabilities,
) -> Result<LinuxSeccomp, SeccompError> {
    let profile: Profile = serde_json::from_slice(bytes).map_err(|e| SeccompError::Parse {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(to_oci(profile, caps))
}

/// The capabilities a rule set sees for `caps` given as names.
pub fn caps_from(list: &[Capability]) -> Capabilities {
    list.iter().copied().collect()
}

// Classic BPF opcodes and seccomp return values.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

#[derive(Clone, Copy)]
enum Jump {
    Rel(u8),
    Fail,
}

#[derive(Clone, Copy)]
struct Ins {
    code: u16,
    jt: Jump,
    jf: Jump,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Ins {
    Ins {
        code,
        jt: Jump::Rel(0),
        jf: Jump::Rel(0),
        k,
    }
}

fn jump(code: u16, k: u32, jt: Jump, jf: Jump) -> Ins {
    Ins { code, jt, jf, k }
}

fn action_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    let data = |default: u32| errno.unwrap_or(default) & 0xffff;
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(libc::EPERM as u32),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(0),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        other => {
            return Err(SeccompError::UnsupportedAction {
                action: other.to_string(),
            })
        }
    })
}

/// Appends the check of one argument condition; a mismatch jumps to `Fail`.
fn arg_check(out: &mut Vec<Ins>, arg: &LinuxSeccompArg, syscall: &str) -> Result<(), SeccompError> {
    let index = arg.index();
    if index > 5 {
        return Err(SeccompError::BadArgIndex {
            syscall: syscall.to_string(),
            index,
        });
    }
    let lo_off = 16 + 8 * index as u32;
    let hi_off = lo_off + 4;
    let v = arg.value();
    let (vhi, vlo) = ((v >> 32) as u32, v as u32);
    let fail = Jump::Fail;
    let r = Jump::Rel;
    match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => out.extend([
            stmt(LD_W_ABS, hi_off),
            jump(JEQ_K, vhi, r(0), fail),
            stmt(LD_W_ABS, lo_off),
            jump(JEQ_K, vlo, r(0), fail),
        ]),
        LinuxSeccompOperator::ScmpCmpNe => out.extend([
            stmt(LD_W_ABS, hi_off),
            jump(JEQ_K, vhi, r(0), r(2)),
            stmt(LD_W_ABS, lo_off),
            jump(JEQ_K, vlo, fail, r(0)),
        ]),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let want = arg.value_two().unwrap_or(0);
            out.extend([
                stmt(LD_W_ABS, hi_off),
                stmt(AND_K, vhi),
                jump(JEQ_K, (want >> 32) as u32, r(0), fail),
                stmt(LD_W_ABS, lo_off),
                stmt(AND_K, vlo),
                jump(JEQ_K, want as u32, r(0), fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let last = if arg.op() == LinuxSeccompOperator::ScmpCmpGt {
                JGT_K
            } else {
                JGE_K
            };
            out.extend([
                stmt(LD_W_ABS, hi_off),
                jump(JGT_K, vhi, r(3), r(0)),
                jump(JEQ_K, vhi, r(0), fail),
                stmt(LD_W_ABS, lo_off),
                jump(last, vlo, r(0), fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // a < v  <=>  !(a >= v);  a <= v  <=>  !(a > v)
            let last = if arg.op() == LinuxSeccompOperator::ScmpCmpLt {
                JGE_K
            } else {
                JGT_K
            };
            out.extend([
                stmt(LD_W_ABS, hi_off),
                jump(JGE_K, vhi, r(0), r(3)),
                jump(JEQ_K, vhi, r(0), fail),
                stmt(LD_W_ABS, lo_off),
                jump(last, vlo, fail, r(0)),
            ])
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn syscall_number(name: &str) -> Option<u32> {
    syscalls_x86_64::SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
}

#[cfg(target_arch = "x86_64")]
fn max_syscall() -> u32 {
    syscalls_x86_64::SYSCALLS
        .iter()
        .map(|(_, nr)| *nr)
        .max()
        .unwrap_or(0)
}

/// Compiles a profile into a BPF program ready for [`crate::sys::seccomp_install`].
#[cfg(target_arch = "x86_64")]
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let default = action_value(profile.default_action(), profile.default_errno_ret())?;
    let mut prog: Vec<Ins> = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, Jump::Rel(1), Jump::Rel(0)),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, Jump::Rel(0), Jump::Rel(1)),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
    ];
    let mut a_is_nr = true;
    for rule in profile.syscalls().iter().flatten() {
        let ret = action_value(rule.action(), rule.errno_ret())?;
        for name in rule.names() {
            // Names of other architectures' calls are skipped, as libseccomp does.
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            if !a_is_nr {
                prog.push(stmt(LD_W_ABS, OFF_NR));
                a_is_nr = true;
            }
            let args = rule.args().as_deref().unwrap_or(&[]);
            if args.is_empty() {
                prog.push(jump(JEQ_K, nr, Jump::Rel(0), Jump::Rel(1)));
                prog.push(stmt(RET_K, ret));
                continue;
            }
            let mut body = Vec::new();
            for arg in args {
                arg_check(&mut body, arg, name)?;
            }
            body.push(stmt(RET_K, ret));
            let len = body.len();
            if len > 250 {
                return Err(SeccompError::TooLong { len });
            }
            prog.push(jump(JEQ_K, nr, Jump::Rel(0), Jump::Rel(len as u8)));
            for (i, mut ins) in body.into_iter().enumerate() {
                let to_end = (len - i - 1) as u8;
                if let Jump::Fail = ins.jt {
                    ins.jt = Jump::Rel(to_end);
                }
                if let Jump::Fail = ins.jf {
                    ins.jf = Jump::Rel(to_end);
                }
                prog.push(ins);
            }
            a_is_nr = false;
        }
    }
    if !a_is_nr {
        prog.push(stmt(LD_W_ABS, OFF_NR));
    }
    prog.push(jump(JGT_K, max_syscall(), Jump::Rel(0), Jump::Rel(1)));
    prog.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    prog.push(stmt(RET_K, default));
    if prog.len() > 4096 {
        return Err(SeccompError::TooLong { len: prog.len() });
    }
    Ok(prog
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: match i.jt {
                Jump::Rel(n) => n,
                Jump::Fail => 0,
            },
            jf: match i.jf {
                Jump::Rel(n) => n,
                Jump::Fail => 0,
            },
            k: i.k,
        })
        .collect())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn compile(_profile: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>, SeccompError> {
    Err(SeccompError::UnsupportedArch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::docker_default_capabilities;

    #[test]
    fn default_profile_gates_on_capabilities() {
        let p = docker_default_profile(&docker_default_capabilities());
        let has = |name: &str| {
            p.syscalls().iter().flatten().any(|s| {
                s.action() == LinuxSeccompAction::ScmpActAllow
                    && s.names().iter().any(|n| n == name)
            })
        };
        assert!(has("read") && has("chroot") && has("clone") && has("ptrace"));
        assert!(!has("mount") && !has("unshare") && !has("setns") && !has("bpf"));
        let mut caps = docker_default_capabilities();
        caps.insert(Capability::SysAdmin);
        let p = docker_default_profile(&caps);
        assert!(p
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.names().iter().any(|n| n == "mount")));
    }

    #[test]
    fn compiles_within_limits() {
        let p = docker_default_profile(&docker_default_capabilities());
        let prog = compile(&p).unwrap();
        assert!(prog.len() > 300 && prog.len() < 4096, "{}", prog.len());
    }

    /// A classic-BPF interpreter for the few opcodes the compiler emits.
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            match ins.code {
                LD_W_ABS => {
                    let k = ins.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                AND_K => acc &= ins.k,
                RET_K => return ins.k,
                JEQ_K | JGT_K | JGE_K => {
                    let taken = match ins.code {
                        JEQ_K => acc == ins.k,
                        JGT_K => acc > ins.k,
                        _ => acc >= ins.k,
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn default_filter_decisions() {
        let prog = compile(&docker_default_profile(&docker_default_capabilities())).unwrap();
        let x86 = AUDIT_ARCH_X86_64;
        let nr = |n: &str| syscall_number(n).unwrap();
        let run = |name: &str, args: [u64; 6]| eval(&prog, x86, nr(name), args);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run("read", [0; 6]), RET_ALLOW);
        assert_eq!(run("mount", [0; 6]), eperm);
        assert_eq!(
            run("unshare", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            run("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run("clone", [0x0120_0011, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run("clone", [libc::CLONE_NEWUSER as u64 | 17, 0, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(run("clone3", [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(
            run("socket", [libc::AF_INET as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(run("socket", [40, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run("socket", [38, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run("socket", [40 | (1 << 32), 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run("personality", [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run("personality", [1, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run("chroot", [0; 6]), RET_ALLOW);
        assert_eq!(
            eval(&prog, x86, 999, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(eval(&prog, x86, X32_SYSCALL_BIT | 1, [0; 6]), eperm);
        assert_eq!(eval(&prog, 0x4000_0003, 0, [0; 6]), eperm);
    }

    #[test]
    fn comparison_operators() {
        use oci_spec::runtime::LinuxSeccompArgBuilder;
        for (op, value, yes, no) in [
            (
                LinuxSeccompOperator::ScmpCmpGt,
                5u64,
                [6u64, 1 << 33],
                [5u64, 0],
            ),
            (LinuxSeccompOperator::ScmpCmpGe, 5, [5, 1 << 40], [4, 0]),
            (
                LinuxSeccompOperator::ScmpCmpLt,
                1 << 33,
                [5, (1 << 33) - 1],
                [1 << 33, u64::MAX],
            ),
            (
                LinuxSeccompOperator::ScmpCmpLe,
                1 << 33,
                [1 << 33, 0],
                [(1 << 33) + 1, u64::MAX],
            ),
            (
                LinuxSeccompOperator::ScmpCmpEq,
                1 << 35 | 7,
                [1 << 35 | 7, 1 << 35 | 7],
                [7, 1 << 35],
            ),
            (LinuxSeccompOperator::ScmpCmpNe, 7, [8, 7 | 1 << 32], [7, 7]),
        ] {
            let arg = LinuxSeccompArgBuilder::default()
                .index(2usize)
                .value(value)
                .op(op)
                .build()
                .unwrap();
            let mut rule = LinuxSyscall::default();
            rule.set_names(vec!["read".into()]);
            rule.set_action(LinuxSeccompAction::ScmpActAllow);
            rule.set_args(Some(vec![arg]));
            let mut p = LinuxSeccomp::default();
            p.set_default_action(LinuxSeccompAction::ScmpActErrno);
            p.set_syscalls(Some(vec![rule]));
            let prog = compile(&p).unwrap();
            for v in yes {
                assert_eq!(
                    eval(&prog, AUDIT_ARCH_X86_64, 0, [0, 0, v, 0, 0, 0]),
                    RET_ALLOW,
                    "{op:?} {value} {v}"
                );
            }
            for v in no {
                assert_ne!(
                    eval(&prog, AUDIT_ARCH_X86_64, 0, [0, 0, v, 0, 0, 0]),
                    RET_ALLOW,
                    "{op:?} {value} {v}"
                );
            }
        }
    }

    #[test]
    fn parses_docker_and_oci_files() {
        let docker = br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        let p = profile_from_json("test", docker, &docker_default_capabilities()).unwrap();
        assert_eq!(p.syscalls().as_ref().unwrap().len(), 1);
        assert!(profile_from_json("bad", b"{", &Capabilities::new()).is_err());
    }
}
