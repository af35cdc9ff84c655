//! gcr-builder: builds an OCI image from a Containerfile, synchronously.
//!
//! parse -> plan (stages needed for the target, global ARGs) -> for each stage: its base (an
//! image the caller resolves, an earlier stage, or scratch) -> for each instruction: metadata
//! instructions change the image config; RUN, COPY, ADD and WORKDIR get a cache key (parent
//! key + instruction + ARG/ENV in scope + for COPY/ADD a hash of the sources) and either reuse
//! the cached layer or execute on an OverlayFS with a fresh upper dir that is then committed
//! as the next layer (see [`commit`]). The result is an OCI config + manifest in the store.
//!
//! The crate never starts threads: RUN steps fork containers through gcr-runtime, so the
//! caller must be single-threaded and must pull missing base images before (the `resolve`
//! callback of [`build`] can do that in a child process).
#![deny(unsafe_code)]

mod binfmt;
mod cache;
mod commit;
mod config;
mod engine;
mod error;
mod export;
mod fsutil;
mod git;
pub mod remote_cache;
mod run;
mod source;

use std::path::PathBuf;

pub use commit::{changes_in_upper, layer_from_upper};
pub use config::Platform;
pub use error::BuildError;
pub use export::{export, metadata, BuildExport, Destination};
pub use gcr_storage::Compression;
pub use remote_cache::{CacheConfig, CacheLayer, CacheStep, ImportedCache};

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Containerfile.
    pub containerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// Fully normalised names for the result.
    pub tags: Vec<String>,
    /// `--build-arg` values, in order.
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// Ignore the build cache (results are still recorded in it).
    pub no_cache: bool,
    /// `--label` values, set on the result.
    pub labels: Vec<(String, String)>,
    /// Cut RUN steps off the network (default: the host's network, as BuildKit).
    pub network_none: bool,
    pub compression: Compression,
    /// Fixed timestamp (SOURCE_DATE_EPOCH / --timestamp): created times and clamped mtimes.
    pub timestamp: Option<i64>,
    /// Print nothing but warnings.
    pub quiet: bool,
    /// `--secret id=ID,src=PATH` values for `RUN --mount=type=secret`.
    pub secrets: Vec<(String, PathBuf)>,
    /// `--ssh ID=SOCKET` agent sockets for `RUN --mount=type=ssh`.
    pub ssh: Vec<(String, PathBuf)>,
    /// `--allow security.insecure`: `RUN --security=insecure` runs privileged.
    pub allow_insecure: bool,
    /// `--add-host NAME:IP`: lines of RUN's /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`: RUN's resource limits.
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    /// `--shm-size`: bytes of RUN's /dev/shm.
    pub shm_size: Option<i64>,
    /// `--build-context NAME=...`: what a `FROM`, `COPY --from` or `RUN --mount from` of NAME
    /// means instead of the stage or image of that name.
    pub named_contexts: Vec<(String, NamedContext)>,
    /// `--annotation [manifest:]KEY=VALUE`: on each image manifest.
    pub manifest_annotations: std::collections::BTreeMap<String, String>,
    /// `--annotation index:KEY=VALUE`: on the index of a multi-platform build.
    pub index_annotations: std::collections::BTreeMap<String, String>,
    /// The platform to build for (`--platform`; default: the host's). See
    /// [`build_platforms`] for several.
    pub platform: Option<Platform>,
    /// `--jobs`: how many stages may build at once (1: one after the other).
    pub jobs: usize,
    /// `--cache-from`: step results of other builds, hits after the local cache misses (their
    /// layers are pulled through the `FetchLayer` hook when a step or the image needs them).
    pub cache_from: Vec<ImportedCache>,
    /// `--cache-to type=inline`: the result chain's cache config in the image config.
    pub inline_cache: bool,
}

/// Stages built at once by default: the CPUs, but at least 4, since RUN steps often wait
/// on the network or disk rather than compute (BuildKit bounds nothing by default).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4)
}

/// One `--build-context` value.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedContext {
    /// A directory of the host (`NAME=DIR`).
    Directory(PathBuf),
    /// An image (`NAME=docker-image://REF`).
    Image(String),
}

impl NamedContext {
    /// `NAME=DIR` or `NAME=docker-image://REF` (BuildKit's forms; other schemes are named).
    pub fn parse(text: &str) -> Result<(String, NamedContext), BuildError> {
        let bad =
            |why: &str| BuildError::Options(format!("invalid --build-context {text:?}: {why}"));
        let (name, value) = text
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| bad("use NAME=DIR or NAME=docker-image://REF"))?;
        if let Some(reference) = value.strip_prefix("docker-image://") {
            return Ok((name.to_string(), NamedContext::Image(reference.to_string())));
        }
        if value.contains("://") {
            return Err(bad("only directories and docker-image:// are supported yet (not oci-layout://, git or https)"));
        }
        let dir = std::fs::canonicalize(value)
            .map_err(|e| bad(&format!("cannot use the directory {value}: {e}")))?;
        if !dir.is_dir() {
            return Err(bad(&format!("{value} is not a directory")));
        }
        Ok((name.to_string(), NamedContext::Directory(dir)))
    }
}

impl BuildOptions {
    /// `--annotation [TYPE:]KEY=VALUE`, BuildKit's form: TYPE is manifest (the default) or
    /// index; the descriptor types and per-platform forms are named as not supported yet.
    pub fn add_annotation(&mut self, text: &str) -> Result<(), BuildError> {
        let bad = |why: &str| BuildError::Options(format!("invalid --annotation {text:?}: {why}"));
        let (head, value) = text
            .split_once('=')
            .ok_or_else(|| bad("use [manifest:|index:]KEY=VALUE"))?;
        let (kind, key) = match head.split_once(':') {
            // Keys such as org.opencontainers.image.source hold no colon; a prefix does.
            Some((kind @ ("manifest" | "index"), key)) => (kind, key),
            Some((kind, _)) if kind.contains('[') || kind.ends_with("-descriptor") => {
                return Err(bad(
                    "descriptor and per-platform annotations are not supported yet",
                ))
            }
            _ => ("manifest", head),
        };
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        let map = if kind == "index" {
            &mut self.index_annotations
        } else {
            &mut self.manifest_annotations
        };
        map.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub fn new(containerfile: PathBuf, context: PathBuf) -> BuildOptions {
        BuildOptions {
            containerfile,
            context,
            tags: Vec::new(),
            build_args: Vec::new(),
            target: None,
            no_cache: false,
            labels: Vec::new(),
            network_none: false,
            compression: Compression::Gzip,
            timestamp: None,
            quiet: false,
            secrets: Vec::new(),
            ssh: Vec::new(),
            allow_insecure: false,
            extra_hosts: Vec::new(),
            rlimits: Vec::new(),
            shm_size: None,
            named_contexts: Vec::new(),
            manifest_annotations: Default::default(),
            index_annotations: Default::default(),
            platform: None,
            jobs: default_jobs(),
            cache_from: Vec::new(),
            inline_cache: false,
        }
    }
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image: gcr_storage::ImageRecord,
    /// Warnings already printed (e.g. unused build arguments).
    pub warnings: Vec<String>,
    /// Every layer step of the build, for `--cache-to`.
    pub cache_steps: Vec<CacheStep>,
}

/// A finished build for several platforms: one image per platform under one OCI index.
#[derive(Debug, Clone)]
pub struct MultiBuildOutput {
    /// The index's record: the host platform's image (else the first), `index` set.
    pub image: gcr_storage::ImageRecord,
    /// The digest of the stored index.
    pub index: gcr_storage::Digest,
    pub warnings: Vec<String>,
    /// Every layer step of every platform's build, for `--cache-to`.
    pub cache_steps: Vec<CacheStep>,
}

/// Finds a base image by reference for a platform (pulling it if the caller wants to: from
/// an index, that platform's image) and returns its record.
pub type ResolveImage<'a> = &'a dyn Fn(&str, &Platform) -> Result<gcr_storage::ImageRecord, String>;

/// Downloads a URL for `ADD <url>`: its bytes and its `Last-Modified` time (Unix seconds).
/// The builder starts no threads, so the caller does the network work (e.g. in a child).
pub type FetchUrl<'a> = &'a dyn Fn(&str) -> Result<(Vec<u8>, Option<i64>), String>;

/// Brings layers of an imported cache (`--cache-from` source, layers) into the store: their
/// blobs and unpacked layers. The builder starts no threads, so the caller pulls (e.g. in a
/// child process).
pub type FetchLayer<'a> = &'a dyn Fn(&str, &[CacheLayer]) -> Result<(), String>;

/// Build the image `opts` describes into `store`. Must be called from a single-threaded
/// process (RUN forks containers). Nothing is named unless the whole build succeeds.
pub fn build(
    store: &gcr_storage::Store,
    opts: &BuildOptions,
    resolve: ResolveImage<'_>,
) -> Result<BuildOutput, BuildError> {
    engine::Engine::new(store, opts, resolve, None)?.run()
}

/// [`build`] with a downloader for `ADD <url>` (without one, such an ADD is an error).
pub fn build_with_fetch(
    store: &gcr_storage::Store,
    opts: &BuildOptions,
    resolve: ResolveImage<'_>,
    fetch: FetchUrl<'_>,
) -> Result<BuildOutput, BuildError> {
    engine::Engine::new(store, opts, resolve, Some(fetch))?.run()
}

/// [`build_with_fetch`] with a puller for the layers of `opts.cache_from` (without one, an
/// imported step whose layer is needed is a miss).
pub fn build_with_cache(
    store: &gcr_storage::Store,
    opts: &BuildOptions,
    resolve: ResolveImage<'_>,
    fetch: FetchUrl<'_>,
    fetch_layer: Option<FetchLayer<'_>>,
) -> Result<BuildOutput, BuildError> {
    let mut engine = engine::Engine::new(store, opts, resolve, Some(fetch))?;
    engine.fetch_layer = fetch_layer;
    engine.run()
}

/// Builds `opts` once per platform (each image stored unnamed, sharing the build cache),
/// then one OCI image index over them, named with `opts.tags`. Same threading rule as
/// [`build`].
pub fn build_platforms(
    store: &gcr_storage::Store,
    opts: &BuildOptions,
    platforms: &[Platform],
    resolve: ResolveImage<'_>,
    fetch: FetchUrl<'_>,
    fetch_layer: Option<FetchLayer<'_>>,
) -> Result<MultiBuildOutput, BuildError> {
    // Held across the builds: nothing an earlier platform stored is collected before the
    // index names it.
    let _lease = store
        .lease()
        .map_err(|e| BuildError::store("taking the store lease", e))?;
    let mut images = Vec::new();
    let mut warnings = Vec::new();
    let mut cache_steps = Vec::new();
    for platform in platforms {
        let mut one = opts.clone();
        one.tags.clear();
        one.platform = Some(platform.clone());
        if !opts.quiet {
            eprintln!("#0 building for {platform}");
        }
        let mut engine = engine::Engine::new(store, &one, resolve, Some(fetch))?;
        engine.fetch_layer = fetch_layer;
        let out = engine.run()?;
        warnings.extend(out.warnings);
        cache_steps.extend(out.cache_steps);
        images.push((platform.clone(), out.image));
    }
    let index = config::render_index(store, &images, &opts.index_annotations)
        .map_err(|e| BuildError::store("reading a platform's manifest", e))?;
    let image = store
        .commit_index(&opts.tags, &index)
        .map_err(|e| BuildError::store("storing the image index", e))?;
    Ok(MultiBuildOutput {
        image,
        index: gcr_storage::Digest::of(&index),
        warnings,
        cache_steps,
    })
}

/// The host platform as `os/arch[/variant]`.
pub fn host_platform_string() -> String {
    let (os, arch, variant) = config::host_platform();
    if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    }
}
