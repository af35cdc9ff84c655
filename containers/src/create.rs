//! Creating a container: its record, spec, upper dir and runtime options, ready to run.

use std::path::PathBuf;

use crate::error::{ContainerError, Result};
use crate::network::{self, NetworkChoice};
use crate::options::{CreateOptions, ImageSource};
use crate::record::{self, ContainerMeta};
use crate::spec::{self, ImageProcess};
use crate::supervisor::{Launch, RestartPolicy};
use crate::{names, rootfs, userns};

/// What `create` tells its caller besides the container itself.
#[derive(Debug, Default)]
pub struct CreateNotes {
    /// Things asked for that were dropped, for the caller to show (as Docker's WARNINGs).
    pub warnings: Vec<String>,
}

/// 64 hex digits: sha256-sized fresh random bytes, like Docker's container IDs.
pub fn new_container_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ContainerError::io("read", "/dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a container from `opts`: checks them, makes named volumes, writes the record (so
/// `rmi` and `system check` see the image in use) and the spec, and returns it ready to run
/// ([`Launch::run_attached`], [`Launch::start_detached`]) or to leave created
/// ([`Launch::leave_created`]).
pub fn create(
    store: &gcr_storage::Store,
    mut opts: CreateOptions,
) -> Result<(Launch, CreateNotes)> {
    let mut notes = CreateNotes::default();
    let policy = RestartPolicy::parse(&opts.restart)?;
    if opts.remove && policy != RestartPolicy::No {
        return Err(ContainerError::invalid(format!(
            "conflicting options: --restart {} and --rm (a removed container cannot run again)",
            opts.restart
        )));
    }
    if let Some(name) = &opts.name {
        names::check_name(name)?;
    }
    if let Some(health) = &opts.health {
        health.validate()?;
    }
    // keep-id: the command runs as the user unless -u says otherwise (Podman's rule).
    if opts.userns == userns::UsernsMode::KeepId && opts.user.is_none() {
        if let Some((uid, gid)) = userns::keep_id_user() {
            opts.user = Some(format!("{uid}:{gid}"));
        }
    }
    if let Some(signal) = &opts.stop_signal {
        crate::container::parse_signal(signal)?;
    }
    for server in &opts.dns {
        server.parse::<std::net::IpAddr>().map_err(|_| {
            ContainerError::invalid(format!("invalid --dns {server:?}: give an IP address"))
        })?;
    }
    // `--network container:NAME`: that container's namespace, nothing of its own.
    let shared_network = match &opts.network_container {
        Some(target) => {
            if !opts.publish.is_empty() || opts.publish_all {
                return Err(ContainerError::invalid(
                    "conflicting options: port publishing and --network container:NAME (publish on that container)",
                ));
            }
            if !opts.network_aliases.is_empty()
                || opts.ip.is_some()
                || !opts.more_networks.is_empty()
            {
                return Err(ContainerError::invalid(
                    "conflicting options: --network-alias, --ip or further networks and --network container:NAME",
                ));
            }
            opts.network = NetworkChoice::None;
            Some(network::shared_network_of(store, target)?)
        }
        None => None,
    };
    if opts.user_network.is_some() {
        opts.network = NetworkChoice::Private(gcr_runtime::PrivateNetwork::Bridge);
    } else if opts.ip.is_some() || !opts.more_networks.is_empty() {
        return Err(ContainerError::invalid(
            "--ip and further networks need a user network as the first --network (see `gcr network create`)",
        ));
    }
    let extra_hosts = network::parse_extra_hosts(&opts.extra_hosts, opts.network)?;
    match opts.network {
        NetworkChoice::Host if !opts.publish.is_empty() || opts.publish_all => {
            notes
                .warnings
                .push("published ports are discarded when using the host network".into());
            opts.publish.clear();
            opts.publish_all = false;
        }
        NetworkChoice::None if !opts.publish.is_empty() || opts.publish_all => {
            return Err(ContainerError::invalid(
                "-p/-P need a network with its own ports; --network none has none",
            ));
        }
        _ => {}
    }

    for from in &opts.volumes_from {
        let inherited = volumes_of(store, from)?;
        for volume in inherited {
            if !opts
                .volumes
                .iter()
                .any(|v| v.destination == volume.destination)
            {
                opts.volumes.push(volume);
            }
        }
    }
    // Named volumes exist from their first use on; a new (empty) one gets the image's files.
    let mut copy_up = Vec::new();
    for volume in &mut opts.volumes {
        if volume.named.as_deref() == Some("") {
            // Anonymous: named below, once the image's VOLUMEs are known too.
            continue;
        }
        if let Some(name) = &volume.named {
            let (dir, _) = store.create_volume(name)?;
            let empty = std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty && !volume.no_copy {
                copy_up.push(PathBuf::from(&volume.destination));
            }
            volume.source = dir;
        }
    }
    let container_id = new_container_id()?;
    let dir = store.container_dir(&container_id)?;

    let (rootfs, image, image_id, reference) = match &opts.source {
        ImageSource::Directory(path) => {
            let meta = std::fs::metadata(path).map_err(|_| {
                ContainerError::invalid(format!("rootfs {} does not exist", path.display()))
            })?;
            if !meta.is_dir() {
                return Err(ContainerError::invalid(format!(
                    "rootfs {} is not a directory: give a directory holding a root filesystem",
                    path.display()
                )));
            }
            let path =
                std::fs::canonicalize(path).map_err(|e| ContainerError::io("resolve", path, e))?;
            let reference = format!("--rootfs {}", path.display());
            (
                gcr_runtime::RootfsSource::Directory(path),
                ImageProcess::default(),
                None,
                reference,
            )
        }
        ImageSource::Image { record, reference } => {
            let config_bytes = store.image_config_bytes(record)?;
            let config: serde_json::Value =
                serde_json::from_slice(&config_bytes).map_err(|_| {
                    ContainerError::invalid(format!("image config of {reference} is not JSON"))
                })?;
            (
                rootfs::image_rootfs(store, record, None, dir.join("upper"), dir.join("work")),
                ImageProcess::from_config(&config),
                Some(record.id.clone()),
                reference.clone(),
            )
        }
    };

    // Anonymous volumes: `-v /data` and each image VOLUME nothing else is mounted on, a new
    // volume of its own (filled from the image), removed with the container by rm -v/--rm.
    let mut anonymous_volumes = Vec::new();
    for destination in &image.volumes {
        let taken = opts.volumes.iter().any(|v| &v.destination == destination)
            || opts.tmpfs.iter().any(|(d, _)| d == destination);
        if !taken {
            opts.volumes.push(crate::options::Volume {
                source: PathBuf::new(),
                destination: destination.clone(),
                read_only: false,
                named: Some(String::new()),
                no_copy: false,
            });
        }
    }
    for volume in opts
        .volumes
        .iter_mut()
        .filter(|v| v.named.as_deref() == Some(""))
    {
        let name = new_container_id()?;
        let (dir, _) = store.create_volume(&name)?;
        copy_up.push(PathBuf::from(&volume.destination));
        volume.source = dir;
        volume.named = Some(name.clone());
        anonymous_volumes.push(name);
    }
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| container_id[..12].to_string());
    let mut spec = spec::container_spec(&image, &opts, &hostname)?;
    if let Some(parent) = &opts.cgroup_parent {
        if let Some(mut linux) = spec.linux().clone() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{parent}/{container_id}"))));
            spec.set_linux(Some(linux));
        }
    }
    if opts.resources != crate::options::Resources::default()
        && !gcr_runtime::cgroups::limits_enforceable()
    {
        gcr_runtime::cgroups::warn_limits_not_enforced();
    }
    let command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let mut published = opts.publish.clone();
    if opts.publish_all && matches!(opts.network, NetworkChoice::Private(_)) {
        for skipped in network::publish_exposed(&image.exposed_ports, &mut published) {
            notes.warnings.push(format!(
                "-P publishes tcp and udp ports; {skipped} is not published"
            ));
        }
    }
    network::pick_free_ports(&mut published)?;
    let userns_lease = match userns::user_namespace(&opts.userns)? {
        Some(mapped) => {
            gcr_runtime::set_user_namespace(&mut spec, &mapped.uid_map, &mapped.gid_map);
            mapped.lease
        }
        None => None,
    };
    let user = opts
        .user
        .clone()
        .or_else(|| Some(image.user.clone()))
        .filter(|u| !u.is_empty());

    // From the check until the record holds the name, no other gcr may take it.
    let names_lock = match &opts.name {
        Some(name) => {
            let lock = names::NameLock::take(store)?;
            names::ensure_name_free(store, name)?;
            Some(lock)
        }
        None => None,
    };
    // Record the container before anything is created for it, so `gcr system check` and
    // `rmi` know the image is in use.
    match &image_id {
        // A --rm container's record need not survive a crash: skip the fsyncs.
        Some(id) if opts.remove => store.register_ephemeral_container(&container_id, id)?,
        Some(id) => store.register_container(&container_id, id)?,
        None => std::fs::create_dir_all(&dir).map_err(|e| ContainerError::io("create", &dir, e))?,
    }
    let meta = ContainerMeta {
        name: opts.name.clone(),
        image: reference,
        command,
        created: record::now(),
        pid: std::process::id(),
        pid_start: gcr_runtime::process_start(std::process::id()),
        stop_signal: opts
            .stop_signal
            .clone()
            .or_else(|| Some(image.stop_signal.clone()))
            .filter(|s| !s.is_empty()),
        stop_timeout: opts.stop_timeout,
        labels: opts.labels.clone(),
        group_add: opts.group_add.clone(),
        remove: opts.remove,
        user: user.clone(),
        init: opts.init,
        started: None,
        restart: (opts.restart != "no").then(|| opts.restart.clone()),
        restarts: 0,
        network: Some(match (&shared_network, &opts.user_network) {
            (Some((id, _)), _) => format!("{}{id}", network::CONTAINER_MODE),
            (None, Some(name)) => name.clone(),
            (None, None) => opts.network.name().to_string(),
        }),
        network_aliases: opts.network_aliases.clone(),
        ip: opts.ip.clone(),
        anonymous_volumes: anonymous_volumes.clone(),
        ports: published.clone(),
        extra_hosts: extra_hosts.clone(),
        dns: opts.dns.clone(),
        dns_search: opts.dns_search.clone(),
        dns_options: opts.dns_options.clone(),
        resources: opts.resources.clone(),
        devices: opts.devices.clone(),
        device_cgroup_rules: opts
            .device_cgroup_rules
            .iter()
            .map(crate::limits::rule_text)
            .collect(),
        cgroup_parent: opts.cgroup_parent.clone(),
        stdin: opts.stdin,
        volumes: opts.volumes.clone(),
        health: crate::health::HealthConfig::merged(image.health.as_ref(), opts.health.as_ref()),
        log_config: Some(opts.log_config.clone()),
    };
    let written = record::write_meta(&dir, &meta);
    drop(names_lock);
    let undo = |err: ContainerError| {
        crate::supervisor::remove_finished(store, &container_id, false);
        for name in &anonymous_volumes {
            let _ = store.remove_volume(name);
        }
        err
    };
    written.map_err(undo)?;
    crate::attachments::record_at_create(
        store,
        &dir,
        opts.user_network.as_deref(),
        &opts.more_networks,
    )
    .map_err(undo)?;
    crate::events::container_event(store, &container_id, &meta, "create", &[]);
    // The OCI runtime spec, as a bundle's config.json: `gcr exec` starts from its process.
    record::write_spec(&dir, &spec).map_err(undo)?;
    // Joined at each start (the other container's PID 1 then), not recorded in config.json.
    if let Some((_, netns)) = &shared_network {
        gcr_runtime::set_namespace_path(
            &mut spec,
            oci_spec::runtime::LinuxNamespaceType::Network,
            netns,
        );
    }
    if let gcr_runtime::RootfsSource::Overlay { upper, work, .. } = &rootfs {
        for sub in [upper, work] {
            std::fs::create_dir_all(sub).map_err(|e| undo(ContainerError::io("create", sub, e)))?;
        }
    }
    let mut options = gcr_runtime::RunOptions::new(rootfs, container_id.clone(), &dir);
    options.tty = opts.tty;
    options.stdin = opts.stdin;
    if opts.attach_stdin && opts.stdin {
        let fifo = dir.join(record::STDIN_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
            |source| ContainerError::Sys {
                action: "make the stdin FIFO of the container",
                source,
            },
        )?;
    }
    options.init = opts.init;
    // A kept container's upper dir may be mounted again (`gcr start`): the kernel refuses to
    // reuse one that was mounted `volatile`, so only --rm containers skip the syncs.
    options.overlay_volatile = opts.remove;
    options.user = user;
    options.pid_file = Some(record::pid_file(&dir));
    options.copy_up = copy_up;
    options.network = match &opts.user_network {
        Some(name) => crate::user_networks::runtime_options(
            store,
            name,
            &published,
            crate::user_networks::member_names(&container_id, &meta),
            opts.ip.as_deref(),
        ),
        None => network::network_options(opts.network, &published),
    }
    .map_err(undo)?;
    options.network.more_bridges =
        crate::attachments::extra_bridges(store, &container_id, &meta, &dir).map_err(undo)?;
    options.extra_hosts = extra_hosts;
    options.group_add = opts.group_add.clone();
    options.dns = gcr_runtime::DnsOptions {
        servers: opts.dns.clone(),
        search: opts.dns_search.clone(),
        options: opts.dns_options.clone(),
    };
    let launch = Launch {
        store: store.clone(),
        keep: !opts.remove && image_id.is_some(),
        id: container_id,
        dir,
        spec,
        options,
        meta,
        _userns_lease: userns_lease,
    };
    Ok((launch, notes))
}

impl Launch {
    /// `gcr create`: leaves the container made and not started (`gcr start` runs it).
    pub fn leave_created(self) -> Result<String> {
        if !self.dir.join(record::IMAGE).exists() {
            crate::supervisor::remove_finished(&self.store, &self.id, false);
            return Err(ContainerError::invalid(
                "gcr create needs an image (not --rootfs)",
            ));
        }
        record::mark(&self.dir, record::CREATED)?;
        // Nobody owns it until it starts: a long-lived caller (the API service) must not
        // make it look running.
        let mut meta = self.meta;
        meta.pid = 0;
        meta.pid_start = None;
        record::write_meta(&self.dir, &meta)?;
        Ok(self.id)
    }
}

/// `--volumes-from CONTAINER[:ro|rw]`: the volumes and binds that container was made with;
/// `ro`/`rw` sets every one's mode, none keeps each one's own (Docker's rule).
fn volumes_of(store: &gcr_storage::Store, from: &str) -> Result<Vec<crate::options::Volume>> {
    let (name, mode) = match from.rsplit_once(':') {
        Some((name, mode @ ("ro" | "rw"))) => (name, Some(mode == "ro")),
        Some((_, other)) if !other.is_empty() && !other.contains('/') => {
            return Err(ContainerError::invalid(format!(
                "invalid --volumes-from {from:?}: the mode {other:?} is not ro or rw"
            )))
        }
        _ => (from, None),
    };
    let source = crate::container::lookup(store, name)?;
    Ok(source
        .meta
        .volumes
        .iter()
        .cloned()
        .map(|mut volume| {
            if let Some(read_only) = mode {
                volume.read_only = read_only;
            }
            volume
        })
        .collect())
}
