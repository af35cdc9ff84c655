//! gcr-containers: the container lifecycle, for every front end (the `gcr` command line, the
//! Docker Engine API, the OCI runtime entry point).
//!
//! A container is a record in the store (`containers/<id>/`: meta.json, config.json, pid,
//! exit-status, log, upper/ and work/) and, while it runs, a supervisor process that owns it.
//! There is no daemon: state is derived from the record and from whether its owner lives.
//! This crate owns the record and its files, state derivation, names and their lock, the
//! spec assembly from an image and typed options, create/start/stop/kill/wait/rm/restart,
//! the supervisor (detached start, restart policy, log, exit status), the attach handshake,
//! `--userns=auto` leases, the hand-off of published ports to the runtime, and the one
//! function that puts a container's root together from an image ([`image_rootfs`]).
//!
//! Like the runtime, it is synchronous and forks: call it from a single-threaded process.
#![deny(unsafe_code)]

mod attach;
mod attachments;
mod container;
mod create;
pub mod engine;
mod error;
mod events;
mod exec;
mod files;
mod filters;
pub mod health;
mod inspect;
mod lifecycle;
mod limits;
mod listing;
pub mod logconfig;
pub mod logfile;
mod names;
mod network;
mod options;
mod record;
mod rootfs;
mod spec;
mod stats;
mod supervisor;
mod update;
mod user_networks;
mod userns;
mod volumes;
pub mod worker;

pub use attach::{attach, logs, stdin_writer, write_record, Follower, LogOptions, LogSink, Tail};
pub use attachments::{
    attachments, connect_network, disconnect_network, Attachment, NetworkRequest,
};
pub use container::{counts, find, list, lookup, parse_signal, short_id, Container, State};
pub use create::{create, new_container_id, CreateNotes};
pub use error::{ContainerError, Result};
pub use events::{event_time, follow_events, EventFilters};
pub use exec::{exec, exec_detached, ExecRequest};
pub use files::{
    archive_in, archive_out, archive_stat, container_path, image_view, layers_of, snapshot, view,
    FilesView,
};
pub use filters::Filters;
pub use inspect::{
    dir_size, inspect, labels, network_mode, port_bindings, processes, size_of, usage,
    using_source, ProcessInfo,
};
pub use lifecycle::{
    kill, pause, prepare_start, remove, remove_stopped, rename, resize, resize_exec, restart, stop,
    unpause, wait,
};
pub use limits::{
    parse_cgroup_parent, parse_device, parse_device_cgroup_rule, parse_device_rate, DeviceMapping,
    ThrottleDevice,
};
pub use listing::{human_duration, status_text, summary};
pub use names::{check_name, ensure_name_free, NameLock};
pub use network::{
    container_pid_for_sharing, network_options, parse_extra_hosts, parse_publish,
    shared_network_pid_of, NetworkChoice,
};
pub use options::{
    env_file_entries, parse_labels, parse_memory, parse_mount, parse_size, parse_sysctl,
    parse_tmpfs, parse_ulimit, parse_volume, resolve_env, CreateOptions, ImageSource, MountFlag,
    Resources, Volume,
};
pub use record::{process_alive, read_meta, ContainerMeta, PublishedPort};
pub use rootfs::{image_rootfs, lower_dirs, overlay};
pub use spec::{container_spec, merge_env, process_args, set_shm_size, ImageProcess};
pub use stats::{docker_stats, sample, NetCounters, Sample, Source};
pub use supervisor::{Launch, RestartPolicy};
pub use update::{update, UpdateOptions};
pub use user_networks::{
    builtin_networks, create_network, find_network, is_builtin_network, network_document, networks,
    prune_networks, remove_network, resolve_network, unused_networks,
    NetworkOptions as UserNetworkOptions, NetworkRecord,
};
pub use userns::{parse_id_maps, UsernsMode};
pub use volumes::{
    create_volume, prune_volumes, remove_anonymous_volumes, remove_volume, volume_info, volumes,
};
