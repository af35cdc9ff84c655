//! The build: stages in order, each instruction applied to the stage's [`State`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use gcr_grammar::{
    CommandLine, Containerfile, CopyInstruction, CopySource, Healthcheck, Instruction,
    InstructionKind, MountType, NetworkMode, ShellLexer,
};
use gcr_storage::{Digest, ImageRecord, Store};
use serde_json::Value;

use crate::cache::{self, CacheEntry, LayerRef};
use crate::config::{self, History, Platform, RunConfig};
use crate::error::{BuildError, StepFailure, StepResult};
use crate::fsutil::{self, Confine, OverlayMount};
use crate::run::{RunMount, RunStep};
use crate::source::{self, Collected, Entry, Kind, SourceTree, WriteOptions};
use crate::{BuildOptions, BuildOutput, ResolveImage};

mod copy;
mod run;

/// `EXPOSE 80`, `80/udp`, `8000-8002/TCP`: each port as `PORT/proto`, ranges expanded and
/// the protocol lowercased, as BuildKit records them.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "EXPOSE {word}: invalid protocol {proto:?}: use tcp, udp or sctp"
        ));
    }
    let number = |n: &str| {
        n.parse::<u16>()
            .map_err(|_| format!("EXPOSE {word}: invalid port {n:?}"))
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => (number(ports)?, number(ports)?),
    };
    if last < first {
        return Err(format!("EXPOSE {word}: the range ends before it starts"));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
/// Part of every cache key: bump it when a step's result for the same input changes.
const CACHE_VERSION: &str = "gcr-build-cache-2";
/// Where a `RUN <<EOF` script with a `#!` line is mounted (inside the container's /dev tmpfs,
/// so nothing of it reaches the layer).
const HEREDOC_SCRIPT: &str = "/dev/.gcr-heredoc-script";

/// A stage's image as it is built.
#[derive(Debug, Clone)]
struct State {
    layers: Vec<LayerRef>,
    config: RunConfig,
    history: Vec<History>,
    /// Cache key of everything so far.
    key: String,
    /// `created` of the latest step.
    time: String,
    /// ARGs in scope: name -> value (None: declared without a value).
    args: Vec<(String, Option<String>)>,
    platform: Platform,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    /// Variables for expansion: ARGs, then ENV (which wins).
    fn expansion_env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        out.extend(self.config.env_pairs());
        out
    }

    /// The environment of a RUN: ENV plus ARGs that ENV does not override, PATH by default.
    fn run_env(&self) -> Vec<String> {
        let env = self.config.env_list();
        let mut out = env.clone();
        let has = |k: &str| {
            env.iter()
                .any(|e| e.split_once('=').map(|(a, _)| a).unwrap_or(e) == k)
        };
        for (k, v) in &self.args {
            if let Some(v) = v {
                if !has(k) {
                    out.push(format!("{k}={v}"));
                }
            }
        }
        if !has("PATH") {
            out.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        out
    }

    fn lower_dirs(&self, store: &Store) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|l| store.layer_dir(&l.diff_id))
            .collect()
    }

    fn workdir(&self) -> String {
        self.config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }
}

/// Where a stage starts.
#[derive(Debug, Clone)]
enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

pub(crate) struct Engine<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    resolve: ResolveImage<'a>,
    fetch: Option<crate::FetchUrl<'a>>,
    file: String,
    cf: Containerfile,
    lexer: ShellLexer,
    /// Global (meta) ARG values.
    globals: Vec<(String, Option<String>)>,
    build_args: BTreeMap<String, String>,
    declared: BTreeSet<String>,
    built: Vec<Option<State>>,
    context: Option<SourceTree>,
    userxattr: bool,
    step: usize,
    warnings: Vec<String>,
    _lease: gcr_storage::Lease,
    /// An always-empty directory: the lower dir of a scratch overlay.
    empty: gcr_storage::BuildDir,
}

fn platform_args() -> Vec<(String, String)> {
    gcr_grammar::platform_args()
}

impl<'a> Engine<'a> {
    pub(crate) fn new(
        store: &'a Store,
        opts: &'a BuildOptions,
        resolve: ResolveImage<'a>,
        fetch: Option<crate::FetchUrl<'a>>,
    ) -> Result<Engine<'a>, BuildError> {
        let file = opts.containerfile.display().to_string();
        let text = std::fs::read_to_string(&opts.containerfile)
            .map_err(|e| BuildError::io("reading", &opts.containerfile, e))?;
        let cf = gcr_grammar::parse(&text).map_err(|source| BuildError::Parse {
            file: file.clone(),
            source,
        })?;
        let lexer = ShellLexer::new(cf.escape);
        let lease = store
            .lease()
            .map_err(|e| BuildError::store("taking the store lease", e))?;
        let empty = store
            .build_dir("build-empty")
            .map_err(|e| BuildError::store("creating a work directory", e))?;
        let n = cf.stages.len();
        Ok(Engine {
            store,
            opts,
            resolve,
            fetch,
            file,
            lexer,
            globals: Vec::new(),
            build_args: opts.build_args.iter().cloned().collect(),
            declared: BTreeSet::new(),
            built: vec![None; n],
            context: None,
            userxattr: gcr_runtime::userns::rootless_ids().is_some(),
            step: 0,
            warnings: Vec::new(),
            _lease: lease,
            empty,
            cf,
        })
    }

    fn fail(&self, instr: &Instruction, failure: StepFailure) -> BuildError {
        let instruction = short(&instr.raw.original);
        match failure {
            StepFailure::Message(message) => BuildError::Step {
                file: self.file.clone(),
                line: instr.start_line(),
                instruction,
                message,
            },
            StepFailure::Exit(code) => BuildError::RunFailed {
                file: self.file.clone(),
                line: instr.start_line(),
                instruction,
                code,
            },
        }
    }

    fn say(&self, text: &str) {
        if !self.opts.quiet {
            eprintln!("{text}");
        }
    }

    pub(crate) fn run(mut self) -> Result<BuildOutput, BuildError> {
        fsutil::private_mount_namespace()
            .map_err(|e| BuildError::io("creating a private mount namespace for", "/", e))?;
        self.context = Some(self.open_context()?);
        // Global ARGs: build args override defaults; defaults expand with earlier globals.
        let metas = self.cf.meta_args.clone();
        for instr in &metas {
            if let InstructionKind::Arg(defs) = &instr.kind {
                for def in defs {
                    self.declared.insert(def.name.clone());
                    let value = match self.build_args.get(&def.name) {
                        Some(v) => Some(v.clone()),
                        None => match &def.default {
                            Some(d) => {
                                let env = self.global_env();
                                Some(
                                    self.lexer
                                        .process_word(d, &env)
                                        .map_err(|e| self.fail(instr, e.into()))?,
                                )
                            }
                            None => None,
                        },
                    };
                    self.globals.retain(|(k, _)| k != &def.name);
                    self.globals.push((def.name.clone(), value));
                }
            }
        }
        let bases = self.bases()?;
        let target = self.target_index()?;
        let needed = self.needed(target, &bases);
        for index in 0..=target {
            if !needed.contains(&index) {
                continue;
            }
            let state = self.build_stage(index, &bases)?;
            self.built[index] = Some(state);
        }
        let Some(mut state) = self.built[target].take() else {
            return Err(BuildError::Options("the target stage was not built".into()));
        };
        for (k, v) in &self.opts.labels {
            state
                .config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.clone());
        }
        let unused: Vec<String> = self
            .build_args
            .keys()
            .filter(|k| !self.declared.contains(*k) && !is_predefined_arg(k))
            .cloned()
            .collect();
        if !unused.is_empty() {
            let w = format!(
                "[Warning] one or more build-args [{}] were not consumed",
                unused.join(" ")
            );
            eprintln!("{w}");
            self.warnings.push(w);
        }
        let image = self.commit_image(&state)?;
        Ok(BuildOutput {
            image,
            warnings: self.warnings,
        })
    }

    fn global_env(&self) -> Vec<(String, String)> {
        let mut env = platform_args();
        env.extend(
            self.globals
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))),
        );
        env
    }

    fn open_context(&self) -> Result<SourceTree, BuildError> {
        let root = std::fs::canonicalize(&self.opts.context).map_err(|e| BuildError::Context {
            path: self.opts.context.clone(),
            reason: e.to_string(),
        })?;
        if !root.is_dir() {
            return Err(BuildError::Context {
                path: root,
                reason: "not a directory".into(),
            });
        }
        let cf_name = self
            .opts
            .containerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cf_dir = self
            .opts
            .containerfile
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let locate = |c: &gcr_grammar::IgnoreFileCandidate| match c.location {
            gcr_grammar::IgnoreFileLocation::BesideContainerfile => cf_dir.join(&c.name),
            gcr_grammar::IgnoreFileLocation::Context => root.join(&c.name),
        };
        let ignore = match gcr_grammar::pick_ignore_file(&cf_name, |c| locate(c).is_file()) {
            Some(c) => {
                let path = locate(&c);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| BuildError::io("reading", &path, e))?;
                Some(
                    gcr_grammar::IgnoreMatcher::from_file_contents(&text).map_err(|e| {
                        BuildError::Context {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                )
            }
            None => None,
        };
        Ok(SourceTree {
            root,
            confine: Confine::Beneath,
            ignore,
            label: "build context".into(),
            preserve_owner: false,
            exclude: None,
            parents: false,
        })
    }

    fn stage_label(&self, index: usize) -> String {
        self.cf.stages[index]
            .name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    fn find_stage(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_lowercase();
        if let Some(i) = self.cf.stages[..before]
            .iter()
            .position(|s| s.name() == Some(lower.as_str()))
        {
            return Some(i);
        }
        match name.parse::<usize>() {
            Ok(i) if i < before => Some(i),
            _ => None,
        }
    }

    fn bases(&self) -> Result<Vec<Base>, BuildError> {
        let env = self.global_env();
        let mut out = Vec::new();
        for (i, stage) in self.cf.stages.iter().enumerate() {
            let image = self
                .lexer
                .process_word(stage.base(), &env)
                .map_err(|e| self.fail(&stage.from, e.into()))?;
            if image.is_empty() {
                return Err(self.fail(
                    &stage.from,
                    StepFailure::Message("the base image name is empty".into()),
                ));
            }
            let lower = image.to_lowercase();
            let base = if lower == "scratch" {
                Base::Scratch
            } else if let Some(j) = self.cf.stages[..i]
                .iter()
                .position(|s| s.name() == Some(lower.as_str()))
            {
                Base::Stage(j)
            } else {
                Base::Image(image)
            };
            out.push(base);
        }
        Ok(out)
    }

    fn target_index(&self) -> Result<usize, BuildError> {
        match &self.opts.target {
            None => Ok(self.cf.stages.len().saturating_sub(1)),
            Some(t) => {
                let lower = t.to_lowercase();
                self.cf
                    .stages
                    .iter()
                    .position(|s| s.name() == Some(lower.as_str()))
                    .ok_or_else(|| BuildError::UnknownTarget {
                        target: t.clone(),
                        stages: self
                            .cf
                            .stages
                            .iter()
                            .filter_map(|s| s.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    }

    /// The stages `target` depends on (through FROM, COPY --from, RUN --mount from).
    fn needed(&self, target: usize, bases: &[Base]) -> BTreeSet<usize> {
        let env = self.global_env();
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            if let Base::Stage(j) = bases[i] {
                todo.push(j);
            }
            for instr in &self.cf.stages[i].instructions {
                let mut froms = Vec::new();
                match &instr.kind {
                    InstructionKind::Copy(c) | InstructionKind::Add(c) => {
                        froms.extend(c.from.clone())
                    }
                    InstructionKind::Run(r) => {
                        froms.extend(r.mounts.iter().filter_map(|m| m.from.clone()))
                    }
                    _ => {}
                }
                for from in froms {
                    let from = self.lexer.process_word(&from, &env).unwrap_or(from.clone());
                    if let Some(j) = self.find_stage(&from, i) {
                        todo.push(j);
                    }
                }
            }
        }
        needed
    }

    fn image_state(&self, record: &ImageRecord) -> Result<State, String> {
        let config_bytes = self
            .store
            .image_config_bytes(record)
            .map_err(|e| e.to_string())?;
        let manifest_bytes = self
            .store
            .image_manifest_bytes(record)
            .map_err(|e| e.to_string())?;
        let cfg: Value = serde_json::from_slice(&config_bytes).map_err(|e| e.to_string())?;
        let manifest: Value = serde_json::from_slice(&manifest_bytes).map_err(|e| e.to_string())?;
        let run_config: RunConfig = cfg
            .get("config")
            .cloned()
            .filter(|v| v.is_object())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("image config of {}: {e}", record.id))?
            .unwrap_or_default();
        let history: Vec<History> = cfg
            .get("history")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("image history of {}: {e}", record.id))?
            .unwrap_or_default();
        let descriptors = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut layers = Vec::new();
        for (i, diff_id) in record.layers.iter().enumerate() {
            let d = descriptors.get(i).cloned().unwrap_or(Value::Null);
            let blob =
                record.layer_blobs.get(i).cloned().ok_or_else(|| {
                    format!("image {} lists fewer layers than diff_ids", record.id)
                })?;
            layers.push(LayerRef {
                diff_id: diff_id.clone(),
                blob,
                size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
                media_type: config::oci_layer_type(
                    d.get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or(gcr_storage::OCI_LAYER_GZIP),
                ),
            });
        }
        let created = cfg
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(State {
            layers,
            config: run_config,
            history,
            key: cache::key(&["image", record.id.as_str()]),
            time: self.fixed_time().unwrap_or(created),
            args: Vec::new(),
            platform: Platform {
                architecture: record.architecture.clone(),
                os: record.os.clone(),
                variant: record.variant.clone(),
            },
            cmd_set: false,
        })
    }

    fn fixed_time(&self) -> Option<String> {
        self.opts.timestamp.map(config::rfc3339)
    }

    fn now(&self) -> String {
        self.fixed_time().unwrap_or_else(config::now_rfc3339)
    }

    fn scratch_state(&self) -> State {
        State {
            layers: Vec::new(),
            config: RunConfig::default(),
            history: Vec::new(),
            key: cache::key(&["scratch"]),
            time: self.fixed_time().unwrap_or_else(|| config::rfc3339(0)),
            args: Vec::new(),
            platform: Platform::host(),
            cmd_set: false,
        }
    }

    fn vertices(instrs: &[Instruction]) -> usize {
        1 + instrs
            .iter()
            .filter(|i| {
                matches!(
                    i.kind,
                    InstructionKind::Run(_)
                        | InstructionKind::Copy(_)
                        | InstructionKind::Add(_)
                        | InstructionKind::Workdir(_)
                )
            })
            .count()
    }

    fn build_stage(&mut self, index: usize, bases: &[Base]) -> Result<State, BuildError> {
        let stage = self.cf.stages[index].clone();
        // BuildKit names the stage in progress lines only when there are several or it has
        // a name: `[builder 2/5]`, `[stage-1 2/5]`, else `[2/5]`.
        let label = if self.cf.stages.len() == 1 && self.cf.stages[index].name().is_none() {
            String::new()
        } else {
            format!("{} ", self.stage_label(index))
        };
        if let InstructionKind::From(f) = &stage.from.kind {
            if let Some(p) = &f.platform {
                let p = self
                    .lexer
                    .process_word(p, &self.global_env())
                    .map_err(|e| self.fail(&stage.from, e.into()))?;
                let host = crate::host_platform_string();
                if p != host && !host.starts_with(&format!("{p}/")) {
                    return Err(self.fail(
                        &stage.from,
                        StepFailure::Message(format!(
                            "platform {p} is not supported yet: gcr builds for the host platform ({host}) only"
                        )),
                    ));
                }
            }
        }
        let mut state = match &bases[index] {
            Base::Scratch => self.scratch_state(),
            Base::Stage(j) => match &self.built[*j] {
                Some(s) => {
                    let mut s = s.clone();
                    s.args.clear();
                    s.cmd_set = false;
                    s
                }
                None => {
                    return Err(self.fail(
                        &stage.from,
                        StepFailure::Message("the base stage was not built".into()),
                    ))
                }
            },
            Base::Image(name) => {
                let record = (self.resolve)(name)
                    .map_err(|e| self.fail(&stage.from, StepFailure::Message(e)))?;
                self.image_state(&record)
                    .map_err(|e| self.fail(&stage.from, StepFailure::Message(e)))?
            }
        };
        // As BuildKit: a stage whose base sets no PATH (scratch too) gets the default one in
        // its config, not only in its RUN steps.
        let has_path = state
            .config
            .env_list()
            .iter()
            .any(|e| e.split_once('=').map(|(k, _)| k) == Some("PATH"));
        if !has_path {
            state.config.set_env("PATH", DEFAULT_PATH);
        }
        // ONBUILD triggers of the base run first, then are cleared.
        let triggers = state.config.on_build.take().unwrap_or_default();
        let mut instructions = Vec::new();
        for trigger in &triggers {
            let src = format!("FROM scratch\n{trigger}\n");
            let parsed = gcr_grammar::parse(&src).map_err(|e| {
                self.fail(
                    &stage.from,
                    StepFailure::Message(format!(
                        "ONBUILD trigger {trigger:?} of the base image: {e}"
                    )),
                )
            })?;
            if let Some(s) = parsed.stages.into_iter().next() {
                for mut i in s.instructions {
                    i.raw.start_line = stage.from.start_line();
                    i.raw.end_line = stage.from.start_line();
                    instructions.push(i);
                }
            }
        }
        instructions.extend(stage.instructions.iter().cloned());
        let total = Self::vertices(&instructions);
        self.step += 1;
        let base_text = match &bases[index] {
            Base::Scratch => "scratch".to_string(),
            Base::Stage(j) => self.stage_label(*j),
            Base::Image(name) => name.clone(),
        };
        self.say(&format!(
            "#{} [{label}1/{total}] FROM {base_text}",
            self.step
        ));
        let mut vertex = 1;
        for instr in &instructions {
            if matches!(
                instr.kind,
                InstructionKind::Run(_)
                    | InstructionKind::Copy(_)
                    | InstructionKind::Add(_)
                    | InstructionKind::Workdir(_)
            ) {
                vertex += 1;
            }
            let progress = format!("[{label}{vertex}/{total}]");
            self.apply(index, &mut state, instr, &progress)
                .map_err(|f| self.fail(instr, f))?;
        }
        Ok(state)
    }

    fn meta_history(&self, state: &mut State, instr: &Instruction, key_part: &str) {
        state.key = cache::key(&[&state.key, "meta", key_part]);
        state.history.push(History {
            created: Some(state.time.clone()),
            created_by: Some(instr.raw.original.trim().to_string()),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: true,
        });
    }

    fn expand(&self, state: &State, word: &str) -> StepResult<String> {
        Ok(self.lexer.process_word(word, &state.expansion_env())?)
    }

    fn apply(
        &mut self,
        stage: usize,
        state: &mut State,
        instr: &Instruction,
        progress: &str,
    ) -> StepResult<()> {
        match &instr.kind {
            InstructionKind::From(_) => Err("FROM inside a stage".to_string().into()),
            InstructionKind::Env(pairs) => {
                let env = state.expansion_env();
                let mut text = String::new();
                let mut values = Vec::new();
                for kv in pairs {
                    let key = self.lexer.process_word(&kv.key, &env)?;
                    let value = self.lexer.process_word(&kv.value, &env)?;
                    text.push_str(&format!("{key}={value}\n"));
                    values.push((key, value));
                }
                for (k, v) in values {
                    state.config.set_env(&k, &v);
                }
                self.meta_history(state, instr, &format!("ENV\n{text}"));
                Ok(())
            }
            InstructionKind::Label(pairs) => {
                let env = state.expansion_env();
                let mut text = String::new();
                for kv in pairs {
                    let key = self.lexer.process_word(&kv.key, &env)?;
                    let value = self.lexer.process_word(&kv.value, &env)?;
                    text.push_str(&format!("{key}={value}\n"));
                    state
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, value);
                }
                self.meta_history(state, instr, &format!("LABEL\n{text}"));
                Ok(())
            }
            InstructionKind::Arg(defs) => {
                let mut text = String::new();
                for def in defs {
                    self.declared.insert(def.name.clone());
                    let value = if let Some(v) = self.build_args.get(&def.name) {
                        Some(v.clone())
                    } else if let Some(d) = &def.default {
                        Some(self.expand(state, d)?)
                    } else if let Some((_, v)) = self.globals.iter().find(|(k, _)| k == &def.name) {
                        v.clone()
                    } else {
                        platform_args()
                            .into_iter()
                            .find(|(k, _)| k == &def.name)
                            .map(|(_, v)| v)
                    };
                    text.push_str(&format!("{}={:?}\n", def.name, value));
                    state.args.retain(|(k, _)| k != &def.name);
                    state.args.push((def.name.clone(), value));
                }
                self.meta_history(state, instr, &format!("ARG\n{text}"));
                Ok(())
            }
            InstructionKind::User(u) => {
                let u = self.expand(state, u)?;
                state.config.user = Some(u.clone());
                self.meta_history(state, instr, &format!("USER\n{u}"));
                Ok(())
            }
            InstructionKind::Expose(ports) => {
                let env = state.expansion_env();
                let mut text = String::new();
                for p in ports {
                    for word in self.lexer.process_words(p, &env)? {
                        for port in expose_ports(&word)? {
                            text.push_str(&port);
                            text.push('\n');
                            state
                                .config
                                .exposed_ports
                                .get_or_insert_with(BTreeMap::new)
                                .insert(port, Value::Object(Default::default()));
                        }
                    }
                }
                self.meta_history(state, instr, &format!("EXPOSE\n{text}"));
                Ok(())
            }
            InstructionKind::Volume(vols) => {
                let mut text = String::new();
                for v in vols {
                    let v = self.expand(state, v)?;
                    if v.trim().is_empty() {
                        return Err("VOLUME specified can not be an empty string"
                            .to_string()
                            .into());
                    }
                    text.push_str(&v);
                    text.push('\n');
                    state
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v, Value::Object(Default::default()));
                }
                self.meta_history(state, instr, &format!("VOLUME\n{text}"));
                Ok(())
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(state, s)?;
                state.config.stop_signal = Some(s.clone());
                self.meta_history(state, instr, &format!("STOPSIGNAL\n{s}"));
                Ok(())
            }
            InstructionKind::Healthcheck(h) => {
                let value = match h {
                    Healthcheck::None => serde_json::json!({ "Test": ["NONE"] }),
                    Healthcheck::Check(c) => {
                        let test: Vec<String> = match &c.test {
                            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                            CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.clone())
                                .collect(),
                        };
                        let mut m = serde_json::Map::new();
                        m.insert("Test".into(), serde_json::json!(test));
                        let dur = |d: &Option<std::time::Duration>| {
                            d.map(|d| serde_json::json!(d.as_nanos() as u64))
                        };
                        for (k, v) in [
                            ("Interval", dur(&c.interval)),
                            ("Timeout", dur(&c.timeout)),
                            ("StartPeriod", dur(&c.start_period)),
                            ("StartInterval", dur(&c.start_interval)),
                            ("Retries", c.retries.map(|r| serde_json::json!(r))),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), v);
                            }
                        }
                        Value::Object(m)
                    }
                };
                let text = value.to_string();
                state.config.healthcheck = Some(value);
                self.meta_history(state, instr, &format!("HEALTHCHECK\n{text}"));
                Ok(())
            }
            InstructionKind::Cmd(cl) => {
                let v = self.command_vec(state, cl);
                state.config.cmd = Some(v.clone());
                state.cmd_set = true;
                self.meta_history(state, instr, &format!("CMD\n{v:?}"));
                Ok(())
            }
            InstructionKind::Entrypoint(cl) => {
                let v = self.command_vec(state, cl);
                state.config.entrypoint = Some(v.clone());
                if !state.cmd_set {
                    state.config.cmd = None;
                }
                self.meta_history(state, instr, &format!("ENTRYPOINT\n{v:?}"));
                Ok(())
            }
            InstructionKind::Shell(v) => {
                state.config.shell = Some(v.clone());
                self.meta_history(state, instr, &format!("SHELL\n{v:?}"));
                Ok(())
            }
            InstructionKind::Onbuild(trigger) => {
                let text = trigger.raw.original.trim().to_string();
                state
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(text.clone());
                self.meta_history(state, instr, &format!("ONBUILD\n{text}"));
                Ok(())
            }
            InstructionKind::Maintainer(m) => {
                self.meta_history(state, instr, &format!("MAINTAINER\n{m}"));
                Ok(())
            }
            InstructionKind::Workdir(w) => {
                let w = self.expand(state, w)?;
                let joined = if w.starts_with('/') {
                    PathBuf::from(&w)
                } else {
                    Path::new(&state.workdir()).join(&w)
                };
                let clean = fsutil::clean_relative(&joined.to_string_lossy()).unwrap_or_default();
                let abs = format!("/{}", clean.display());
                state.config.working_dir = Some(abs.clone());
                let key_text = format!("WORKDIR\n{abs}");
                self.layer_step(state, instr, progress, &key_text, |eng, st, dirs| {
                    let mount = eng.mount_rw(st, dirs)?;
                    // As BuildKit: missing directories belong to the current USER.
                    let owner = match st.config.user.as_deref().filter(|u| !u.is_empty()) {
                        Some(user) => {
                            let ids = gcr_runtime::users::resolve_user(mount.path(), user)
                                .map_err(|e| format!("USER {user}: {e}"))?;
                            (ids.uid, ids.gid)
                        }
                        None => (0, 0),
                    };
                    let mut created = Vec::new();
                    fsutil::mkdir_in_root(mount.path(), &clean, owner, &mut created)
                        .map_err(|e| format!("cannot create {abs}: {e}"))?;
                    Ok(())
                })
            }
            InstructionKind::Run(r) => self.run_instruction(stage, state, instr, r, progress),
            InstructionKind::Copy(c) => {
                self.copy_instruction(stage, state, instr, c, false, progress)
            }
            InstructionKind::Add(c) => {
                self.copy_instruction(stage, state, instr, c, true, progress)
            }
        }
    }

    fn command_vec(&self, state: &State, cl: &CommandLine) -> Vec<String> {
        match cl {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = state.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// A metadata-changing step with a possible layer: cache lookup, else `exec` on fresh
    /// upper/work dirs and commit.
    fn layer_step(
        &mut self,
        state: &mut State,
        instr: &Instruction,
        progress: &str,
        key_text: &str,
        exec: impl FnOnce(&mut Self, &State, &StepDirs) -> StepResult<()>,
    ) -> StepResult<()> {
        let env_text = state.run_env().join("\n");
        let compression = format!("{:?}", self.opts.compression);
        let key = cache::key(&[
            CACHE_VERSION,
            &state.key,
            "layer",
            key_text,
            &env_text,
            &state.workdir(),
            state.config.user.as_deref().unwrap_or(""),
            &compression,
        ]);
        self.step += 1;
        let n = self.step;
        self.say(&format!("#{n} {progress} {}", short(&instr.raw.original)));
        let started = Instant::now();
        let cached = if self.opts.no_cache {
            None
        } else {
            cache::lookup(self.store, &key)
        };
        let entry = match cached {
            Some(entry) => {
                self.say(&format!("#{n} CACHED"));
                entry
            }
            None => {
                let dir = self.store.build_dir("build-step")?;
                let dirs = StepDirs::new(dir.path())?;
                exec(self, state, &dirs)?;
                let layer = if crate::commit::is_empty_dir(&dirs.upper) {
                    None
                } else {
                    let commit_started = Instant::now();
                    let committed = crate::commit::commit_upper(
                        self.store,
                        &dirs.upper,
                        self.opts.compression,
                        self.opts.timestamp,
                    )?;
                    // BuildKit reports its export separately; the commit can outweigh the RUN.
                    self.say(&format!(
                        "#{n} exporting layer {} {} {:.1}s done",
                        committed.info.digest.short(),
                        human_size(committed.info.size),
                        commit_started.elapsed().as_secs_f64()
                    ));
                    Some(LayerRef {
                        diff_id: committed.info.diff_id,
                        blob: committed.info.digest,
                        size: committed.info.size,
                        media_type: committed.info.media_type,
                    })
                };
                let entry = CacheEntry {
                    layer,
                    created: self.now(),
                };
                cache::record(self.store, &key, &entry);
                self.say(&format!(
                    "#{n} DONE {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                entry
            }
        };
        let empty = entry.layer.is_none();
        if let Some(layer) = entry.layer {
            state.layers.push(layer);
        }
        state.time = entry.created;
        state.key = key;
        state.history.push(History {
            created: Some(state.time.clone()),
            created_by: Some(format!("{} # buildkit", instr.raw.original.trim())),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: empty,
        });
        Ok(())
    }

    /// Mount the state's layers with the step's upper dir, read-write.
    fn mount_rw(&self, state: &State, dirs: &StepDirs) -> StepResult<OverlayMount> {
        let mut lower = state.lower_dirs(self.store);
        if lower.is_empty() {
            lower.push(self.empty.path().to_path_buf());
        }
        OverlayMount::mount(
            &lower,
            Some((&dirs.upper, &dirs.work)),
            &dirs.merged,
            self.userxattr,
        )
        .map_err(|e| StepFailure::Message(format!("cannot mount the build root: {e}")))
    }

    /// A read-only view of a state's root at `at`.
    fn mount_view(&self, state: &State, at: &Path) -> StepResult<OverlayMount> {
        let mut lower = state.lower_dirs(self.store);
        if lower.is_empty() {
            lower.push(self.empty.path().to_path_buf());
        }
        OverlayMount::mount(&lower, None, at, self.userxattr)
            .map_err(|e| StepFailure::Message(format!("cannot mount a source root: {e}")))
    }

    /// The state named by `--from` (a stage name or index, else an image).
    fn source_state(&self, stage: usize, state: &State, from: &str) -> StepResult<(State, String)> {
        let from = self.expand(state, from)?;
        if let Some(j) = self.find_stage(&from, stage) {
            return match &self.built[j] {
                Some(s) => Ok((s.clone(), format!("stage {}", self.stage_label(j)))),
                None => Err(format!("stage {from} was not built").into()),
            };
        }
        if from.to_lowercase() == "scratch" {
            return Ok((self.scratch_state(), "scratch".into()));
        }
        let record = (self.resolve)(&from).map_err(StepFailure::Message)?;
        let st = self.image_state(&record).map_err(StepFailure::Message)?;
        Ok((st, format!("image {from}")))
    }

    fn commit_image(&self, state: &State) -> Result<ImageRecord, BuildError> {
        let diff_ids: Vec<String> = state
            .layers
            .iter()
            .map(|l| l.diff_id.as_str().to_string())
            .collect();
        let config_bytes = config::render_config(
            &state.time,
            &state.platform,
            &state.config,
            &diff_ids,
            &state.history,
        );
        let config_digest = Digest::of(&config_bytes);
        let layers: Vec<config::Descriptor> = state
            .layers
            .iter()
            .map(|l| config::Descriptor {
                media_type: l.media_type.clone(),
                digest: l.blob.as_str().to_string(),
                size: l.size,
            })
            .collect();
        let manifest = config::render_manifest(
            config::Descriptor {
                media_type: gcr_storage::OCI_CONFIG.to_string(),
                digest: config_digest.as_str().to_string(),
                size: config_bytes.len() as u64,
            },
            &layers,
        );
        self.store
            .commit_image(&self.opts.tags, &manifest, &config_bytes)
            .map_err(|e| BuildError::store("storing the image", e))
    }
}

/// The upper, work and mount dirs of one step, inside its build dir.
pub(crate) struct StepDirs {
    base: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

impl StepDirs {
    fn new(base: &Path) -> StepResult<StepDirs> {
        let dirs = StepDirs {
            base: base.to_path_buf(),
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.merged] {
            std::fs::create_dir_all(d).map_err(|e| crate::error::io_fail("creating", d, e))?;
        }
        // The upper dir becomes a layer root: the usual mode of `/`.
        let _ = std::fs::set_permissions(
            &dirs.upper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        );
        Ok(dirs)
    }
}

/// The ARGs BuildKit predefines (no "not consumed" warning for them).
fn is_predefined_arg(name: &str) -> bool {
    matches!(
        name.to_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    ) || platform_args().iter().any(|(k, _)| k == name)
}

/// A size as BuildKit's progress prints it: 512B, 3.2kB, 1.07GB (powers of 1000).
fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes}B"),
        1_000..=999_999 => format!("{:.1}kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}MB", b / 1e6),
        _ => format!("{:.2}GB", b / 1e9),
    }
}

/// An instruction's text for messages and progress: one line, at most 120 characters.
fn short(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(117).collect::<String>())
    } else {
        one
    }
}
