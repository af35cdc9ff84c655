//! The build: stages in order, each instruction applied to the stage's [`State`].
//!
//! * this module: the [`Engine`] and the build from start to end (context, global ARGs,
//!   the stages needed for the target, labels, unused build args, the final image).
//! * `state`: a stage's image as it is built.
//! * `stages`: which stages and bases, one stage's instructions and their dispatch.
//! * `images`: a state from a base image or scratch, and the final image from a state.
//! * `metadata`: the instructions that change the config (ENV, LABEL, ARG, USER, CMD ...)
//!   and WORKDIR.
//! * `layer`: a step that makes a layer: its cache key, cache hit or execution on fresh
//!   overlay dirs, and the commit.
//! * `run`, `copy`: RUN, and COPY/ADD.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gcr_grammar::{Containerfile, Heredoc, Instruction, InstructionKind, ShellLexer};
use gcr_storage::Store;

use crate::config::Platform;
use crate::error::{BuildError, StepFailure, StepResult};
use crate::fsutil::{self, Confine};
use crate::source::SourceTree;
use crate::{BuildOptions, BuildOutput, ResolveImage};

mod copy;
mod images;
mod layer;
mod metadata;
mod parallel;
mod remote;
mod run;
mod stages;
mod state;

use state::State;

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
    /// BuildKit's step numbers (`#N`).
    steps: parallel::StepCounter,
    warnings: Vec<String>,
    _lease: gcr_storage::Lease,
    /// An always-empty directory: the lower dir of a scratch overlay.
    empty: gcr_storage::BuildDir,
    /// The platform built for (`--platform`, else the host's).
    target: Platform,
    /// Pulls the layers of `--cache-from` hits (see `remote`).
    pub(crate) fetch_layer: Option<crate::FetchLayer<'a>>,
    /// The layer steps made or reused, for `--cache-to`.
    cache_steps: Vec<crate::CacheStep>,
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
            steps: parallel::StepCounter::new(),
            warnings: Vec::new(),
            _lease: lease,
            empty,
            cf,
            target: opts.platform.clone().unwrap_or_else(Platform::host),
            fetch_layer: None,
            cache_steps: Vec::new(),
        })
    }

    /// BuildKit's automatic platform ARGs: BUILD* for this machine, TARGET* for the target.
    fn platform_args(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (prefix, p) in [("BUILD", Platform::host()), ("TARGET", self.target.clone())] {
            out.push((format!("{prefix}PLATFORM"), p.to_string()));
            out.push((format!("{prefix}OS"), p.os.clone()));
            out.push((format!("{prefix}ARCH"), p.architecture.clone()));
            out.push((
                format!("{prefix}VARIANT"),
                p.variant.clone().unwrap_or_default(),
            ));
        }
        out
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
        self.build_stages(&needed, &bases)?;
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
        let cache_steps = self.result_steps(&state);
        Ok(BuildOutput {
            image,
            warnings: self.warnings,
            cache_steps,
        })
    }

    fn global_env(&self) -> Vec<(String, String)> {
        let mut env = self.platform_args();
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

    fn expand(&self, state: &State, word: &str) -> StepResult<String> {
        Ok(self.lexer.process_word(word, &state.expansion_env())?)
    }
}

/// The ARGs BuildKit predefines (no "not consumed" warning for them).
fn is_predefined_arg(name: &str) -> bool {
    matches!(
        name.to_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    ) || gcr_grammar::platform_args().iter().any(|(k, _)| k == name)
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

/// A heredoc's text as written into a file or script: with `<<-`, leading tabs removed
/// from every line.
fn heredoc_text(h: &Heredoc) -> String {
    if h.chomp {
        h.content
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches('\t')))
            .collect()
    } else {
        h.content.clone()
    }
}
