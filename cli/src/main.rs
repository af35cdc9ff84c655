//! `gcr`: pull, build and run OCI containers, rootless by default, with no daemon.
//!
//! This binary only turns flags into calls of the library crates and formats their results.
//! The order in `main` matters: the rootless user-namespace re-exec and any container fork
//! happen while the process is still single-threaded, before a tokio runtime exists.

#![deny(unsafe_code)]

mod commands;
mod context;
mod format;
mod lookup;
mod progress;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use commands::{
    archive, build, build_cache, commit, exec, files, images, info, lifecycle, logs, networks,
    observe, ps, pull, push, run, stats, system, volumes,
};
use context::{Context, EXIT_GCR_FAILED};

#[derive(Parser, Debug)]
#[command(
    name = "gcr",
    version,
    about = "Pull, build and run OCI containers: rootless, daemonless",
    propagate_version = true
)]
pub struct Cli {
    /// Store root (default: /var/lib/gcr as root, $XDG_DATA_HOME/gcr otherwise)
    #[arg(long, global = true, env = "GCR_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Log level: error, warn, info, debug, trace
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Pull an image from a registry
    Pull(pull::PullArgs),
    /// Push an image to a registry
    Push(push::PushArgs),
    /// Save images to a docker-archive or oci-archive
    Save(archive::SaveArgs),
    /// Load images from a docker-archive or oci-archive
    Load(archive::LoadArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Remove images
    Rmi(images::RmiArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Show an image's details as JSON
    Inspect(images::InspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Turn a root filesystem archive (tar, tar.gz, tar.zst, zip) into an image
    Import(images::ImportArgs),
    /// Log in to a registry
    Login(pull::LoginArgs),
    /// Log out of a registry
    Logout(pull::LogoutArgs),
    /// Run a command in a new container
    Run(run::RunArgs),
    /// Create a container without starting it (`gcr start` runs it)
    Create(run::RunArgs),
    /// List containers
    Ps(ps::PsArgs),
    /// Remove containers
    Rm(lifecycle::RmArgs),
    /// Print the output of a container started with `gcr run -d`
    Logs(logs::LogsArgs),
    /// Follow a background container's output until it ends, forwarding signals to it
    Attach(logs::AttachArgs),
    /// Stop running containers (STOPSIGNAL, then SIGKILL after a timeout)
    Stop(lifecycle::StopArgs),
    /// Send a signal to running containers
    Kill(lifecycle::KillArgs),
    /// Wait for containers to end and print their exit status
    Wait(lifecycle::WaitArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Start stopped containers again (in the background unless -a)
    Start(lifecycle::StartArgs),
    /// Stop and start containers again
    Restart(lifecycle::StopArgs),
    /// Make an image of a container's changes
    Commit(commit::CommitArgs),
    /// Copy files between a container and the host
    Cp(files::CpArgs),
    /// List a container's published ports
    Port(observe::PortArgs),
    /// Write a container's file system as a tar archive
    Export(files::ExportArgs),
    /// List the files a container added, changed or deleted
    Diff(files::DiffArgs),
    /// Give a container another name
    Rename(lifecycle::RenameArgs),
    /// List a running container's processes
    Top(observe::TopArgs),
    /// Show what running containers use: CPU, memory, network and block I/O, PIDs
    Stats(stats::StatsArgs),
    /// Show what happens to containers, images, volumes and networks (the store's journal)
    Events(observe::EventsArgs),
    /// Run a container's healthcheck (`healthcheck run CONTAINER`)
    #[command(subcommand)]
    Healthcheck(observe::HealthcheckCommand),
    /// Freeze every process of running containers
    Pause(lifecycle::PauseArgs),
    /// Thaw paused containers
    Unpause(lifecycle::PauseArgs),
    /// Change the limits and restart policy of containers
    Update(lifecycle::UpdateArgs),
    /// Manage named volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage images (Docker's `image` commands: ls, rm, tag, inspect, ...)
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage containers (Docker's `container` commands: ls, rm, run, start, ...)
    #[command(subcommand)]
    Container(ContainerCommand),
    #[command(skip)]
    ImagePrune(images::PruneArgs),
    #[command(skip)]
    ContainerPrune(lifecycle::PruneArgs),
    /// Build an image from a Containerfile
    Build(build::BuildArgs),
    /// Manage the store
    #[command(subcommand)]
    System(system::SystemCommand),
    /// List and inspect networks
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Show gcr's version
    Version(info::VersionArgs),
    /// Show what gcr runs on: store, counts, cgroups, rootless, kernel
    Info(info::InfoArgs),
    /// Internal: download a URL for `ADD <url>` (run by `gcr build`)
    #[command(name = "__fetch-url", hide = true)]
    FetchUrl { url: String, dest: PathBuf },
    /// Internal: print the build cache config a reference holds (run by `gcr build`)
    #[command(name = "__cache-fetch", hide = true)]
    CacheFetch { reference: String },
    /// Internal: pull one layer of a build cache (run by `gcr build`)
    #[command(name = "__cache-layer", hide = true)]
    CacheLayer { args: Vec<String> },
    /// Internal: push a build cache (run by `gcr build`)
    #[command(name = "__cache-push", hide = true)]
    CachePush { reference: String, config: PathBuf },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove images
    #[command(alias = "remove")]
    Rm(images::RmiArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Show images' details as JSON
    Inspect(images::InspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Turn a root filesystem archive into an image
    Import(images::ImportArgs),
    /// Pull an image from a registry
    Pull(pull::PullArgs),
    /// Push an image to a registry
    Push(push::PushArgs),
    /// Save images to an archive
    Save(archive::SaveArgs),
    /// Load images from an archive
    Load(archive::LoadArgs),
    /// Build an image from a Containerfile
    Build(build::BuildArgs),
    /// Remove unnamed images (-a: every image no container uses) and what only they held
    Prune(images::PruneArgs),
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum ContainerCommand {
    /// List containers
    #[command(aliases = ["list", "ps"])]
    Ls(ps::PsArgs),
    /// Remove containers
    #[command(alias = "remove")]
    Rm(lifecycle::RmArgs),
    /// Run a command in a new container
    Run(run::RunArgs),
    /// Create a container without starting it
    Create(run::RunArgs),
    /// Start stopped containers
    Start(lifecycle::StartArgs),
    /// Stop running containers
    Stop(lifecycle::StopArgs),
    /// Stop and start containers
    Restart(lifecycle::StopArgs),
    /// Send a signal to running containers
    Kill(lifecycle::KillArgs),
    /// Wait for containers to end
    Wait(lifecycle::WaitArgs),
    /// Print a detached container's output
    Logs(logs::LogsArgs),
    /// Follow a background container's output until it ends
    Attach(logs::AttachArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Show containers' details as JSON
    Inspect(images::InspectArgs),
    /// Copy files between a container and the host
    Cp(files::CpArgs),
    /// List a container's published ports
    Port(observe::PortArgs),
    /// Write a container's file system as a tar archive
    Export(files::ExportArgs),
    /// List the files a container added, changed or deleted
    Diff(files::DiffArgs),
    /// Make an image of a container's changes
    Commit(commit::CommitArgs),
    /// Remove every stopped container
    Prune(lifecycle::PruneArgs),
    /// Give a container another name
    Rename(lifecycle::RenameArgs),
    /// List a running container's processes
    Top(observe::TopArgs),
    /// Show what running containers use: CPU, memory, network and block I/O, PIDs
    Stats(stats::StatsArgs),
}

impl Command {
    /// Docker's management commands (`image ls`, `container rm`...) are the plain ones.
    fn flatten(self) -> Command {
        match self {
            Command::Image(cmd) => match cmd {
                ImageCommand::Ls(a) => Command::Images(a),
                ImageCommand::Rm(a) => Command::Rmi(a),
                ImageCommand::Tag(a) => Command::Tag(a),
                ImageCommand::Inspect(a) => Command::Inspect(a.only("image")),
                ImageCommand::History(a) => Command::History(a),
                ImageCommand::Import(a) => Command::Import(a),
                ImageCommand::Pull(a) => Command::Pull(a),
                ImageCommand::Push(a) => Command::Push(a),
                ImageCommand::Save(a) => Command::Save(a),
                ImageCommand::Load(a) => Command::Load(a),
                ImageCommand::Build(a) => Command::Build(a),
                ImageCommand::Prune(a) => Command::ImagePrune(a),
            },
            Command::Container(cmd) => match cmd {
                ContainerCommand::Ls(a) => Command::Ps(a),
                ContainerCommand::Rm(a) => Command::Rm(a),
                ContainerCommand::Run(a) => Command::Run(a),
                ContainerCommand::Create(a) => Command::Create(a),
                ContainerCommand::Start(a) => Command::Start(a),
                ContainerCommand::Stop(a) => Command::Stop(a),
                ContainerCommand::Restart(a) => Command::Restart(a),
                ContainerCommand::Kill(a) => Command::Kill(a),
                ContainerCommand::Wait(a) => Command::Wait(a),
                ContainerCommand::Logs(a) => Command::Logs(a),
                ContainerCommand::Attach(a) => Command::Attach(a),
                ContainerCommand::Exec(a) => Command::Exec(a),
                ContainerCommand::Inspect(a) => Command::Inspect(a.only("container")),
                ContainerCommand::Cp(a) => Command::Cp(a),
                ContainerCommand::Port(a) => Command::Port(a),
                ContainerCommand::Export(a) => Command::Export(a),
                ContainerCommand::Diff(a) => Command::Diff(a),
                ContainerCommand::Commit(a) => Command::Commit(a),
                ContainerCommand::Prune(a) => Command::ContainerPrune(a),
                ContainerCommand::Rename(a) => Command::Rename(a),
                ContainerCommand::Top(a) => Command::Top(a),
                ContainerCommand::Stats(a) => Command::Stats(a),
            },
            other => other,
        }
    }

    /// Whether the command reads or writes the store (and so needs the rootless namespace).
    fn uses_store(&self) -> bool {
        match self {
            Command::Login(_)
            | Command::Logout(_)
            | Command::FetchUrl { .. }
            | Command::Version(_) => false,
            // Join the container's own user namespace instead (reading the store needs none;
            // cp of a stopped container enters gcr's namespace itself to mount its files).
            Command::Exec(_) | Command::Cp(_) | Command::Top(_) | Command::Healthcheck(_) => false,
            // Reads cgroup files and /proc as the user (its containers' processes are its).
            Command::Stats(_) => false,
            Command::Build(args) => args.needs_store(),
            _ => true,
        }
    }
}

fn main() -> ExitCode {
    gcr_runtime::default_sigpipe();
    // The API service's worker (a fresh single-threaded gcr that starts containers for it).
    if let Some(code) = gcr_containers::worker::main_if_worker() {
        return ExitCode::from(code);
    }
    // The holder of the rootless network namespace (started by the first container on a
    // rootless user network).
    if let Some(code) = gcr_runtime::keeper_main_if_asked() {
        return ExitCode::from(code);
    }
    // A bad command line is gcr's failure: 125, as Docker and Podman (clap's own is 2);
    // --help and --version still end with 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_GCR_FAILED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.log_level);
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", format::error_chain(&err));
            ExitCode::from(context::exit_code(&err))
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},gcr={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn real_main(mut cli: Cli) -> anyhow::Result<u8> {
    cli.command = cli.command.flatten();
    let root = cli
        .root
        .clone()
        .unwrap_or_else(gcr_storage::Store::default_root);
    if cli.command.uses_store() && !nix::unistd::geteuid().is_root() {
        // The re-exec'd process inherits the environment, so pass the root chosen from the
        // real user's XDG directories down; inside the namespace it would look like root's.
        std::env::set_var("GCR_ROOT", &root);
        // `--network container:NAME` shares a namespace of that container's user namespace.
        let beside = match &cli.command {
            Command::Run(args) | Command::Create(args) => run::shared_network(args)
                .and_then(|name| gcr_containers::container_pid_for_sharing(&root, name)),
            Command::Start(lifecycle::StartArgs { containers, .. })
            | Command::Restart(lifecycle::StopArgs { containers, .. }) => containers
                .iter()
                .find_map(|name| gcr_containers::shared_network_pid_of(&root, name)),
            _ => None,
        };
        gcr_runtime::userns::enter_rootless_userns_beside(beside)
            .context("cannot enter the rootless user namespace")?;
    }
    let ctx = Context { root };
    match cli.command {
        Command::Pull(args) => pull::pull(&ctx, args),
        Command::Push(args) => push::push(&ctx, args),
        Command::Save(args) => archive::save(&ctx, args),
        Command::Load(args) => archive::load(&ctx, args),
        Command::Images(args) => images::images(&ctx, args),
        Command::Rmi(args) => images::rmi(&ctx, args),
        Command::Tag(args) => images::tag(&ctx, args),
        Command::Inspect(args) => images::inspect(&ctx, args),
        Command::History(args) => images::history(&ctx, args),
        Command::Import(args) => images::import(&ctx, args),
        Command::Login(args) => pull::login(args),
        Command::Logout(args) => pull::logout(args),
        Command::Run(args) => run::run(&ctx, args),
        Command::Create(args) => run::create(&ctx, args),
        Command::Ps(args) => ps::ps(&ctx, args),
        Command::Rm(args) => lifecycle::rm(&ctx, args),
        Command::Logs(args) => logs::logs(&ctx, args),
        Command::Attach(args) => logs::attach(&ctx, args),
        Command::Port(args) => observe::port(&ctx, args),
        Command::Export(args) => files::export(&ctx, args),
        Command::Diff(args) => files::diff(&ctx, args),
        Command::Stop(args) => lifecycle::stop(&ctx, args),
        Command::Kill(args) => lifecycle::kill(&ctx, args),
        Command::Wait(args) => lifecycle::wait(&ctx, args),
        Command::Exec(args) => exec::exec(&ctx, args),
        Command::Start(args) => lifecycle::start(&ctx, args),
        Command::Restart(args) => lifecycle::restart(&ctx, args),
        Command::Commit(args) => commit::commit(&ctx, args),
        Command::Cp(args) => files::cp(&ctx, args),
        Command::Rename(args) => lifecycle::rename(&ctx, args),
        Command::Top(args) => observe::top(&ctx, args),
        Command::Stats(args) => stats::stats(&ctx, args),
        Command::Events(args) => observe::events(&ctx, args),
        Command::Healthcheck(cmd) => observe::healthcheck(&ctx, cmd),
        Command::Pause(args) => lifecycle::pause(&ctx, args),
        Command::Unpause(args) => lifecycle::unpause(&ctx, args),
        Command::Update(args) => lifecycle::update(&ctx, args),
        Command::Volume(cmd) => volumes::volume(&ctx, cmd),
        Command::ImagePrune(args) => images::prune(&ctx, args),
        Command::ContainerPrune(args) => lifecycle::prune(&ctx, args),
        // `flatten` turned these into the plain commands above.
        Command::Image(_) | Command::Container(_) => {
            anyhow::bail!("internal error: a management command was not resolved")
        }
        Command::Build(args) => build::build(&ctx, args),
        Command::System(cmd) => system::system(&ctx, cmd),
        Command::Version(args) => info::version(args),
        Command::Network(cmd) => networks::network(&ctx, cmd),
        Command::Info(args) => info::info(&ctx, args),
        Command::FetchUrl { url, dest } => build::fetch_url_command(&url, &dest),
        Command::CacheFetch { reference } => build_cache::fetch_command(&ctx, &reference),
        Command::CacheLayer { args } => build_cache::layer_command(&ctx, &args),
        Command::CachePush { reference, config } => {
            build_cache::push_command(&ctx, &reference, &config)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
