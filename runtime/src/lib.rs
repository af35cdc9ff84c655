//! gcr-runtime: runs one container from an OCI runtime [`Spec`] and a root filesystem.
//!
//! The crate is synchronous on purpose: it forks and clones, so it must never run inside a
//! multi-threaded process (no tokio here). It knows nothing of images; the caller hands it a
//! rootfs (a directory or the layers of an overlay) and a spec, usually built from
//! [`docker_default_spec`] and then adjusted for the command line.
//!
//! Process model: the caller's process (the "parent") clones the container's first process once,
//! with every namespace flag at once. That child sets up the mount namespace (overlay, /proc,
//! /dev, /sys, volumes), pivots into the rootfs, drops privileges (user, capabilities, seccomp),
//! closes every inherited fd and execs the command, which is therefore PID 1. With `init` the
//! child stays as a small init (reaps zombies, forwards signals) and forks the command. The
//! parent forwards signals, runs the pty when asked and returns the container's exit status.
//! Parent and child talk over a SOCK_SEQPACKET socketpair; a child failure comes back as text.
//!
//! `unsafe` lives in the syscall layer (`sys`) only, behind safe wrappers.
//!
//! Modules of the container's life, each depending only on those after it: `launch` (the
//! parent: clone, id maps, cgroups, network, wait for the exec) -> `plan` (what is computed
//! before the clone) -> `etc_files` (hostname, hosts, resolv.conf); `launch` -> `relay`
//! (signals, pty, exit status); `launch` and `child` -> `channel` (the parent/child messages).

#![deny(unsafe_code)]

mod bridge;
mod caps;
mod cgroup_gcr;
mod cgroup_usage;
pub mod cgroups;
mod channel;
mod child;
mod copy;
mod detach;
mod device_filter;
mod error;
mod etc_files;
mod exec;
mod fs;
mod hooks;
mod launch;
mod mounts;
mod network;
mod oci;
mod pasta;
mod peers;
mod plan;
mod proxy;
mod relay;
pub mod seccomp;
mod spec;
mod switch;
#[allow(unsafe_code)]
mod sys;
mod tee;
mod tty;
pub mod userns;
pub mod users;

pub use oci_spec::runtime::Spec;

pub use bridge::{
    connect_running, disconnect_running, prepare_rootless_networks, release_rootless_networks,
    remove_bridge_network,
};
pub use caps::{capability_names, parse_capability};
pub use cgroup_usage::{container_cgroup, CgroupUsage, CpuCounters, IoCounter, MemoryCounters};
pub use copy::{
    copy_in, copy_out, copy_out_tar, stat_entry, ContainerFiles, CopyOptions, EntryStat,
};
pub use detach::run_detached;
pub use error::RuntimeError;
pub use etc_files::DnsOptions;
pub use exec::{exec_detached_oci, exec_in, ExecOptions, ExecStarted};
pub use hooks::{run_all_hooks, run_hooks};
pub use launch::{fork_worker, run_container, OOM_KILLED_FILE};
pub use network::{
    process_start, BridgeSpec, ExtraBridge, NetworkOptions, PortMapping, PrivateNetwork, BRIDGE,
    SLIRP_DNS,
};
pub use oci::{
    create_container, remove_mounts_under, send_console, start_container, wait_container, Created,
};
pub use pasta::host_address;
pub use plan::{OciLaunch, RootfsSource, RunOptions};
pub use relay::ExitStatusCode;
pub use spec::{
    bind_mount, docker_default_capabilities, docker_default_spec, remove_namespace,
    set_capabilities, set_namespace_path, set_privileged, set_seccomp_profile, set_user_namespace,
    tmpfs_mount, SpecError,
};
pub use switch::keeper_main_if_asked;
pub use sys::{default_sigpipe, ignore_sigpipe, ignore_stop_signals};
pub use tee::{OutputStream, OutputTee};
pub use tty::resize_terminal;
