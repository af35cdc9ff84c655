//! The typed syntax tree: a Containerfile's stages and every instruction's typed form.

use std::time::Duration;

use crate::syntax::{Directives, Heredoc, RawInstruction};

/// A parsed, typed Containerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    pub directives: Directives,
    /// The escape token (`\` or `` ` ``); the builder's lexer must use it.
    pub escape: char,
    /// ARG instructions before the first FROM: the global build arguments, usable in FROM.
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    /// Lines that were blank inside a continuation (BuildKit warns about them).
    pub empty_continuation_lines: Vec<usize>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages, from 0 (what `COPY --from=0` refers to).
    pub index: usize,
    /// The FROM instruction.
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The `FROM ... AS name` name, lowercased.
    pub fn name(&self) -> Option<&str> {
        match &self.from.kind {
            InstructionKind::From(f) => f.stage_name.as_deref(),
            _ => None,
        }
    }

    /// The base image or stage reference as written (not expanded).
    pub fn base(&self) -> &str {
        match &self.from.kind {
            InstructionKind::From(f) => &f.image,
            _ => "",
        }
    }
}

/// An instruction: its typed form plus the syntax it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub kind: InstructionKind,
    pub raw: RawInstruction,
}

impl Instruction {
    pub fn start_line(&self) -> usize {
        self.raw.start_line
    }

    pub fn end_line(&self) -> usize {
        self.raw.end_line
    }

    /// The keyword in upper case (`RUN`).
    pub fn name(&self) -> String {
        self.raw.command.to_uppercase()
    }
}

/// The instructions of the Dockerfile language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    From(FromInstruction),
    Run(RunInstruction),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Copy(CopyInstruction),
    Add(CopyInstruction),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDefinition>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
    /// The trigger instruction, typed (its `raw.original` is the trigger text).
    Onbuild(Box<Instruction>),
    Maintainer(String),
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInstruction {
    /// Image reference or earlier stage name, as written (may contain `$ARG`s).
    pub image: String,
    pub platform: Option<String>,
    /// Lowercased stage name.
    pub stage_name: Option<String>,
}

/// Shell form (run through the SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<String>),
}

impl CommandLine {
    pub(super) fn from_raw(raw: &RawInstruction) -> CommandLine {
        if raw.json {
            CommandLine::Exec(raw.word_iter().map(str::to_string).collect())
        } else {
            CommandLine::Shell(raw.word_iter().next().unwrap_or_default().to_string())
        }
    }
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstruction {
    pub command: CommandLine,
    pub mounts: Vec<Mount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// Heredoc bodies, in the order of their markers in the command.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=` (values as written; the builder expands variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// Where it appears in the container; relative paths (and a missing target, for bind
    /// mounts) are relative to the working directory. Defaulted for secret and ssh.
    pub target: Option<String>,
    pub source: Option<String>,
    /// Stage name, stage index or image to take the source from.
    pub from: Option<String>,
    pub read_only: bool,
    pub id: Option<String>,
    pub sharing: CacheSharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// secret: also (or only) expose it as this environment variable.
    pub env: Option<String>,
}

/// A COPY or ADD source: a path (or URL, for ADD) or an inline heredoc file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    Path(String),
    Heredoc(Heredoc),
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyInstruction {
    pub sources: Vec<CopySource>,
    pub destination: String,
    /// COPY --from: stage name, stage index or image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD --checksum.
    pub checksum: Option<String>,
    /// ADD --keep-git-dir.
    pub keep_git_dir: bool,
    /// ADD --unpack (None: the default, unpack local archives only).
    pub unpack: Option<bool>,
    /// The arguments were a JSON array.
    pub json: bool,
}

/// One `key=value` of ENV or LABEL. The value is as written: quotes and escapes are
/// removed by expansion ([`crate::ShellLexer::process_word`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDefinition {
    pub name: String,
    /// The default as written, if any.
    pub default: Option<String>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    Check(HealthcheckCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    /// Shell form: `CMD-SHELL` semantics; exec form: `CMD`.
    pub test: CommandLine,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}
