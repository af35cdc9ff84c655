//! The typed Containerfile: every instruction with its flags parsed and validated, grouped
//! into build stages. Built from the [`crate::syntax`] tree by [`parse`].
//!
//! Values are kept as written (not variable-expanded): expansion depends on build
//! arguments and the stage's environment, which the builder (or `--check`) supplies
//! through [`crate::shell::ShellLexer`]. Every instruction keeps its [`RawInstruction`]
//! for positions, the original text and heredoc bodies.

use std::time::Duration;

use crate::syntax::{parse_syntax, Arg, Directives, Heredoc, ParseError, RawInstruction};

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
    fn from_raw(raw: &RawInstruction) -> CommandLine {
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

/// Parses and types a Containerfile. Fails on the first error (syntax, unknown
/// instruction or flag, bad value, instruction before FROM).
pub fn parse(source: &str) -> Result<Containerfile, ParseError> {
    let tree = parse_syntax(source)?;
    // Size every stage's list up front: instructions are large, regrowing copies them.
    let mut stage_sizes = Vec::new();
    for raw in &tree.instructions {
        if raw.command == "from" {
            stage_sizes.push(0usize);
        } else if let Some(size) = stage_sizes.last_mut() {
            *size += 1;
        }
    }
    // Allocated together, before typing: big allocations are cheaper while the allocator
    // holds few freed small blocks.
    let mut stage_lists = stage_sizes
        .iter()
        .map(|&n| Vec::with_capacity(n))
        .collect::<Vec<Vec<Instruction>>>()
        .into_iter();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::with_capacity(stage_sizes.len());
    for raw in tree.instructions {
        let instruction = type_instruction(raw)?;
        match (&instruction.kind, stages.last_mut()) {
            (InstructionKind::From(_), _) => stages.push(Stage {
                index: stages.len(),
                from: instruction,
                instructions: stage_lists.next().unwrap_or_default(),
            }),
            (_, Some(stage)) => stage.instructions.push(instruction),
            (InstructionKind::Arg(_), None) => meta_args.push(instruction),
            (_, None) => return Err(before_from_error(&instruction)),
        }
    }
    if stages.is_empty() {
        return Err(no_from_error());
    }
    Ok(Containerfile {
        directives: tree.directives,
        escape: tree.escape,
        meta_args,
        stages,
        empty_continuation_lines: tree.empty_continuation_lines,
    })
}

pub(crate) fn before_from_error(instruction: &Instruction) -> ParseError {
    instruction
        .raw
        .error_at(
            0,
            format!("{} comes before the first FROM", instruction.name()),
        )
        .with_hint("only ARG may come before the first FROM; add a FROM line above it")
}

pub(crate) fn no_from_error() -> ParseError {
    ParseError::new(1, 1, "no FROM instruction")
        .with_hint("a Containerfile needs at least one stage: FROM <image>")
}

const KNOWN: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The closest known instruction to a misspelt keyword, if close enough.
fn suggest_instruction(keyword: &str) -> Option<&'static str> {
    let upper = keyword.to_uppercase();
    if upper.chars().count() > 16 {
        return None;
    }
    KNOWN
        .iter()
        .map(|k| (edit_distance(&upper, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A parsed `--flag[=value]`.
struct FlagValue<'a> {
    name: &'a str,
    value: Option<&'a str>,
    offset: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Text,
    List,
}

/// The parsed flags of one instruction, checked against what it accepts.
struct Flags<'a> {
    values: Vec<FlagValue<'a>>,
}

impl<'a> Flags<'a> {
    fn parse(
        raw: &'a RawInstruction,
        allowed: &[(&str, FlagKind)],
    ) -> Result<Flags<'a>, ParseError> {
        let mut values: Vec<FlagValue<'a>> = Vec::new();
        for flag in &raw.flags {
            let body = flag.text.strip_prefix("--").unwrap_or(&flag.text);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let mut error = raw.error_at(flag.offset, format!("unknown flag: --{name}"));
                let names: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                error = if names.is_empty() {
                    error.with_hint(format!("{} takes no flags", raw.command.to_uppercase()))
                } else {
                    error.with_hint(format!(
                        "{} accepts {}",
                        raw.command.to_uppercase(),
                        names.join(", ")
                    ))
                };
                return Err(error);
            };
            match kind {
                FlagKind::Bool => {
                    if let Some(v) = value {
                        if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                            return Err(raw.error_at(
                                flag.offset,
                                format!("expecting boolean value for flag {name}, not: {v}"),
                            ));
                        }
                    }
                }
                FlagKind::Text | FlagKind::List => {
                    if value.is_none() {
                        return Err(raw
                            .error_at(flag.offset, format!("missing a value on flag: --{name}"))
                            .with_hint(format!("write --{name}=VALUE")));
                    }
                }
            }
            if kind != FlagKind::List && values.iter().any(|v| v.name == name) {
                return Err(
                    raw.error_at(flag.offset, format!("duplicate flag specified: --{name}"))
                );
            }
            values.push(FlagValue {
                name,
                value,
                offset: flag.offset,
            });
        }
        Ok(Flags { values })
    }

    fn text(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.map(str::to_string))
    }

    fn list(&self, name: &str) -> Vec<(&'a str, usize)> {
        self.values
            .iter()
            .filter(|v| v.name == name)
            .filter_map(|v| v.value.map(|val| (val, v.offset)))
            .collect()
    }

    fn boolean(&self, name: &str) -> Option<bool> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.is_none_or(|s| s.eq_ignore_ascii_case("true")))
    }

    fn offset(&self, name: &str) -> Option<usize> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.offset)
    }
}

/// Types one instruction from its syntax.
pub fn type_instruction(raw: RawInstruction) -> Result<Instruction, ParseError> {
    let kind = type_kind(&raw)?;
    Ok(Instruction { kind, raw })
}

fn require_args(raw: &RawInstruction, at_least: usize, what: &str) -> Result<(), ParseError> {
    if raw.args.len() < at_least {
        return Err(raw
            .error_at(0, format!("{} requires {what}", raw.command.to_uppercase()))
            .with_hint(usage(&raw.command)));
    }
    Ok(())
}

fn usage(command: &str) -> String {
    let text = match command {
        "from" => "FROM [--platform=<platform>] <image> [AS <name>]",
        "copy" => "COPY [--from=<stage>] [--chown=<user>] [--chmod=<mode>] <src>... <dest>",
        "add" => "ADD [--chown=<user>] [--chmod=<mode>] [--checksum=<digest>] <src>... <dest>",
        "env" => "ENV <key>=<value> ...",
        "label" => "LABEL <key>=<value> ...",
        "arg" => "ARG <name>[=<default>] ...",
        "expose" => "EXPOSE <port>[/<protocol>] ...",
        "volume" => "VOLUME [\"/data\"] or VOLUME /data",
        "user" => "USER <user>[:<group>]",
        "workdir" => "WORKDIR /path",
        "stopsignal" => "STOPSIGNAL <signal>",
        "healthcheck" => "HEALTHCHECK [--interval=...] CMD <command>, or HEALTHCHECK NONE",
        "shell" => "SHELL [\"executable\", \"parameters\"]",
        "onbuild" => "ONBUILD <instruction>",
        "maintainer" => "MAINTAINER <name> (deprecated: use LABEL maintainer=<name>)",
        "run" => "RUN <command> or RUN [\"executable\", \"param\"]",
        _ => "",
    };
    format!("usage: {text}")
}

fn type_kind(raw: &RawInstruction) -> Result<InstructionKind, ParseError> {
    use FlagKind::*;
    // Collected only for the instructions that use the words as a list.
    let words: Vec<&str> = match raw.command.as_str() {
        "env" | "label" | "run" | "cmd" | "entrypoint" | "healthcheck" | "onbuild" => Vec::new(),
        _ => raw.words(),
    };
    let no_flags = |raw: &RawInstruction| Flags::parse(raw, &[]).map(|_| ());
    Ok(match raw.command.as_str() {
        "from" => {
            let flags = Flags::parse(raw, &[("platform", Text)])?;
            require_args(raw, 1, "an image: FROM <image> [AS <name>]")?;
            let stage_name = match words.as_slice() {
                [_] => None,
                [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !is_valid_stage_name(&lower) {
                        let offset = raw.original.rfind(name).unwrap_or(raw.rest_offset);
                        return Err(raw
                            .error_at(
                                offset,
                                format!(
                                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                                ),
                            )
                            .with_hint("stage names match [a-z][a-z0-9-_.]*"));
                    }
                    Some(lower)
                }
                _ => {
                    return Err(raw
                        .error_at(
                            raw.rest_offset,
                            "FROM requires either one or three arguments",
                        )
                        .with_hint(usage("from")))
                }
            };
            InstructionKind::From(FromInstruction {
                image: words[0].to_string(),
                platform: flags.text("platform"),
                stage_name,
            })
        }
        "run" => {
            let flags = Flags::parse(
                raw,
                &[("mount", List), ("network", Text), ("security", Text)],
            )?;
            require_args(raw, 1, "at least one argument")?;
            let mut mounts = Vec::new();
            for (value, offset) in flags.list("mount") {
                mounts.push(parse_mount(value).map_err(|m| {
                    raw.error_at(offset, m)
                        .with_hint("example: --mount=type=cache,target=/root/.cache")
                })?);
            }
            let network = match flags.text("network").as_deref() {
                None | Some("default") => NetworkMode::Default,
                Some("none") => NetworkMode::None,
                Some("host") => NetworkMode::Host,
                Some(other) => {
                    return Err(raw
                        .error_at(
                            flags.offset("network").unwrap_or(0),
                            format!("unsupported network mode {other:?}"),
                        )
                        .with_hint("use --network=default, none or host"))
                }
            };
            let security = match flags.text("security").as_deref() {
                None | Some("sandbox") => SecurityMode::Sandbox,
                Some("insecure") => SecurityMode::Insecure,
                Some(other) => {
                    return Err(raw
                        .error_at(
                            flags.offset("security").unwrap_or(0),
                            format!("unsupported security mode {other:?}"),
                        )
                        .with_hint("use --security=sandbox or insecure"))
                }
            };
            InstructionKind::Run(RunInstruction {
                command: CommandLine::from_raw(raw),
                mounts,
                network,
                security,
                heredocs: raw.heredocs.clone(),
            })
        }
        "cmd" => {
            no_flags(raw)?;
            InstructionKind::Cmd(CommandLine::from_raw(raw))
        }
        "entrypoint" => {
            no_flags(raw)?;
            InstructionKind::Entrypoint(CommandLine::from_raw(raw))
        }
        "copy" | "add" => {
            let is_add = raw.command == "add";
            let allowed: &[(&str, FlagKind)] = if is_add {
                &[
                    ("chown", Text),
                    ("chmod", Text),
                    ("link", Bool),
                    ("exclude", List),
                    ("checksum", Text),
                    ("keep-git-dir", Bool),
                    ("unpack", Bool),
                ]
            } else {
                &[
                    ("from", Text),
                    ("chown", Text),
                    ("chmod", Text),
                    ("link", Bool),
                    ("parents", Bool),
                    ("exclude", List),
                ]
            };
            let flags = Flags::parse(raw, allowed)?;
            require_args(raw, 2, "at least two arguments: a source and a destination")?;
            let (dest, sources) = words
                .split_last()
                .map(|(d, s)| (*d, s))
                .unwrap_or(("", &[]));
            let mut heredocs = raw.heredocs.iter();
            let sources = sources
                .iter()
                .map(|s| {
                    let marker = if raw.json {
                        None
                    } else {
                        crate::syntax::parse_heredoc_marker(s).ok().flatten()
                    };
                    match marker {
                        Some(m) => match heredocs.find(|h| h.name == m.name) {
                            Some(h) => CopySource::Heredoc(h.clone()),
                            None => CopySource::Path(s.to_string()),
                        },
                        None => CopySource::Path(s.to_string()),
                    }
                })
                .collect();
            if let Some(chmod) = flags.text("chmod") {
                if !chmod.contains('$') && !is_valid_chmod(&chmod) {
                    return Err(raw
                        .error_at(
                            flags.offset("chmod").unwrap_or(0),
                            format!("invalid chmod parameter {chmod:?}"),
                        )
                        .with_hint(
                            "use an octal mode such as --chmod=0755 or a symbolic one such as u+x",
                        ));
                }
            }
            if let Some(checksum) = flags.text("checksum") {
                if !checksum.contains('$') && !is_valid_digest(&checksum) {
                    return Err(raw
                        .error_at(
                            flags.offset("checksum").unwrap_or(0),
                            format!("invalid checksum digest {checksum:?}"),
                        )
                        .with_hint("use --checksum=sha256:<64 lowercase hex digits>"));
                }
            }
            let copy = CopyInstruction {
                sources,
                destination: dest.to_string(),
                from: flags.text("from"),
                chown: flags.text("chown"),
                chmod: flags.text("chmod"),
                link: flags.boolean("link").unwrap_or(false),
                parents: flags.boolean("parents").unwrap_or(false),
                exclude: flags
                    .list("exclude")
                    .into_iter()
                    .map(|(v, _)| v.to_string())
                    .collect(),
                checksum: flags.text("checksum"),
                keep_git_dir: flags.boolean("keep-git-dir").unwrap_or(false),
                unpack: flags.boolean("unpack"),
                json: raw.json,
            };
            if is_add {
                InstructionKind::Add(copy)
            } else {
                InstructionKind::Copy(copy)
            }
        }
        "env" | "label" => {
            no_flags(raw)?;
            require_args(raw, 1, "at least one argument")?;
            let pairs: Vec<KeyValue> = raw
                .args
                .chunks(3)
                .map(|c| {
                    let text = |i: usize| match c.get(i) {
                        Some(Arg::Word(w)) => w.clone(),
                        _ => String::new(),
                    };
                    KeyValue {
                        key: text(0),
                        value: text(1),
                    }
                })
                .collect();
            if raw.command == "env" && pairs.iter().any(|p| p.key.is_empty()) {
                return Err(raw.error_at(raw.rest_offset, "ENV names can not be blank"));
            }
            if raw.command == "env" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        "arg" => {
            no_flags(raw)?;
            require_args(raw, 1, "at least one argument")?;
            let mut definitions = Vec::new();
            for word in &words {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (*word, None),
                };
                if name.is_empty() {
                    return Err(raw
                        .error_at(
                            raw.rest_offset,
                            format!("ARG names can not be blank: {word:?}"),
                        )
                        .with_hint(usage("arg")));
                }
                definitions.push(ArgDefinition {
                    name: name.to_string(),
                    default,
                });
            }
            InstructionKind::Arg(definitions)
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            no_flags(raw)?;
            require_args(raw, 1, "exactly one argument")?;
            let value = words.first().map(|s| s.to_string()).unwrap_or_default();
            match raw.command.as_str() {
                "workdir" => InstructionKind::Workdir(value),
                "user" => InstructionKind::User(value),
                "stopsignal" => InstructionKind::StopSignal(value),
                _ => InstructionKind::Maintainer(value),
            }
        }
        "expose" => {
            no_flags(raw)?;
            require_args(raw, 1, "at least one argument")?;
            InstructionKind::Expose(words.iter().map(|s| s.to_string()).collect())
        }
        "volume" => {
            no_flags(raw)?;
            require_args(raw, 1, "at least one argument")?;
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err(raw.error_at(
                    raw.rest_offset,
                    "VOLUME specified can not be an empty string",
                ));
            }
            InstructionKind::Volume(words.iter().map(|s| s.to_string()).collect())
        }
        "shell" => {
            no_flags(raw)?;
            if !raw.json {
                return Err(raw
                    .error_at(
                        raw.rest_offset,
                        "SHELL requires the arguments to be in JSON form",
                    )
                    .with_hint(usage("shell")));
            }
            require_args(raw, 1, "at least one argument")?;
            InstructionKind::Shell(words.iter().map(|s| s.to_string()).collect())
        }
        "healthcheck" => InstructionKind::Healthcheck(parse_healthcheck(raw)?),
        "onbuild" => {
            no_flags(raw)?;
            let Some(Arg::Instruction(inner)) = raw.args.first() else {
                return Err(raw
                    .error_at(0, "ONBUILD requires at least one argument")
                    .with_hint(usage("onbuild")));
            };
            match inner.command.as_str() {
                "onbuild" => {
                    return Err(raw.error_at(
                        raw.rest_offset,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "from" | "maintainer" => {
                    return Err(raw.error_at(
                        raw.rest_offset,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            inner.command.to_uppercase()
                        ),
                    ))
                }
                _ => {}
            }
            let mut inner = (**inner).clone();
            if inner.heredocs.is_empty() {
                inner.heredocs = raw.heredocs.clone();
            }
            InstructionKind::Onbuild(Box::new(type_instruction(inner)?))
        }
        _ => {
            let mut error = raw.error_at(0, format!("unknown instruction: {}", raw.keyword));
            if let Some(suggestion) = suggest_instruction(&raw.keyword) {
                error = error.with_hint(format!("did you mean {suggestion}?"));
            }
            return Err(error);
        }
    })
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// `sha256:<64 hex>`, `sha384:<96 hex>` or `sha512:<128 hex>`, lowercase.
fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_valid_chmod(mode: &str) -> bool {
    if !mode.is_empty() && mode.chars().all(|c| c.is_digit(8)) {
        return u32::from_str_radix(mode, 8).is_ok_and(|m| m <= 0o7777);
    }
    // Symbolic modes (u+x,g-w,o=r ...).
    !mode.is_empty()
        && mode.split(',').all(|clause| {
            let who_end = clause
                .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
                .unwrap_or(clause.len());
            let rest = &clause[who_end..];
            !rest.is_empty()
                && rest.starts_with(['+', '-', '='])
                && rest[1..]
                    .chars()
                    .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't' | '+' | '-' | '='))
        })
}

fn parse_healthcheck(raw: &RawInstruction) -> Result<Healthcheck, ParseError> {
    use FlagKind::*;
    let flags = Flags::parse(
        raw,
        &[
            ("interval", Text),
            ("timeout", Text),
            ("start-period", Text),
            ("start-interval", Text),
            ("retries", Text),
        ],
    )?;
    let words = raw.words();
    let Some(kind) = words.first() else {
        return Err(raw
            .error_at(0, "HEALTHCHECK requires at least one argument")
            .with_hint(usage("healthcheck")));
    };
    match kind.to_uppercase().as_str() {
        "NONE" => {
            if words.len() > 1 || !raw.flags.is_empty() {
                return Err(raw.error_at(raw.rest_offset, "HEALTHCHECK NONE takes no arguments"));
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            if words.len() < 2 {
                return Err(raw
                    .error_at(raw.rest_offset, "Missing command after HEALTHCHECK CMD")
                    .with_hint(usage("healthcheck")));
            }
            let test = if raw.json {
                CommandLine::Exec(words[1..].iter().map(|s| s.to_string()).collect())
            } else {
                CommandLine::Shell(words[1].to_string())
            };
            let duration = |name: &str| -> Result<Option<Duration>, ParseError> {
                let Some(text) = flags.text(name) else {
                    return Ok(None);
                };
                let offset = flags.offset(name).unwrap_or(0);
                let d = parse_go_duration(&text).map_err(|m| {
                    raw.error_at(offset, format!("invalid --{name} {text:?}: {m}"))
                        .with_hint("durations look like 30s, 1m30s or 500ms")
                })?;
                if d != Duration::ZERO && d < Duration::from_millis(1) {
                    return Err(raw.error_at(
                        offset,
                        format!("Interval \"{name}\" cannot be less than 1ms"),
                    ));
                }
                Ok(Some(d))
            };
            let retries = match flags.text("retries") {
                None => None,
                Some(text) => Some(text.parse::<u32>().map_err(|_| {
                    raw.error_at(
                        flags.offset("retries").unwrap_or(0),
                        format!("invalid --retries {text:?}: expected a non-negative integer"),
                    )
                })?),
            };
            Ok(Healthcheck::Check(HealthcheckCommand {
                test,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            }))
        }
        other => Err(raw
            .error_at(
                raw.rest_offset,
                format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            )
            .with_hint(usage("healthcheck"))),
    }
}

/// Go's `time.ParseDuration` (units ns, us, µs, ms, s, m, h; fractions; a sign). Negative
/// durations are rejected.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut s = text;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err("negative durations are not allowed".to_string());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let number = &s[..number_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err("expected a number".to_string());
        }
        let value: f64 = number
            .parse()
            .map_err(|_| "expected a number".to_string())?;
        s = &s[number_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit".to_string()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        total += value * nanos_per_unit;
    }
    if !total.is_finite() || total > 9.2e18 {
        return Err("duration out of range".to_string());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parses the value of `RUN --mount=` (comma-separated `key=value` fields, CSV quoting).
pub fn parse_mount(value: &str) -> Result<Mount, String> {
    let fields = split_csv(value)?;
    let mut mount = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        read_only: true,
        id: None,
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let mut read_only: Option<bool> = None;
    // `type` decides the defaults, so read it first.
    for field in &fields {
        if let Some(t) = field.strip_prefix("type=") {
            mount.kind = match t.to_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => return Err(format!("unsupported mount type {other:?}")),
            };
        }
    }
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_lowercase(), Some(v.trim())),
            None => (field.trim().to_lowercase(), None),
        };
        let need = |v: Option<&str>| -> Result<String, String> {
            v.map(str::to_string)
                .ok_or_else(|| format!("invalid field '{key}' must be a key=value pair"))
        };
        let boolean = |v: Option<&str>| -> Result<bool, String> {
            match v.map(str::to_lowercase).as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(format!("invalid value for {key}: {other:?}")),
            }
        };
        let number = |v: Option<&str>| -> Result<u32, String> {
            let text = need(v)?;
            text.parse::<u32>()
                .map_err(|_| format!("invalid value for {key}: {text:?}"))
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => mount.target = Some(need(val)?),
            "source" | "src" => mount.source = Some(need(val)?),
            "from" => mount.from = Some(need(val)?),
            "readonly" | "ro" => read_only = Some(boolean(val)?),
            "readwrite" | "rw" => read_only = Some(!boolean(val)?),
            "id" => mount.id = Some(need(val)?),
            "sharing" => {
                mount.sharing = match need(val)?.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    other => return Err(format!("unsupported sharing value {other:?}")),
                }
            }
            "mode" => {
                let text = need(val)?;
                mount.mode = Some(
                    u32::from_str_radix(&text, 8)
                        .map_err(|_| format!("invalid mode {text:?}: expected octal"))?,
                );
            }
            "uid" => mount.uid = Some(number(val)?),
            "gid" => mount.gid = Some(number(val)?),
            "required" => mount.required = boolean(val)?,
            "size" => {
                let text = need(val)?;
                mount.size =
                    Some(parse_size(&text).ok_or_else(|| format!("invalid size {text:?}"))?);
            }
            "env" => mount.env = Some(need(val)?),
            "relabel" | "z" | "Z" => {}
            other => return Err(format!("unexpected key '{other}' in '{field}'")),
        }
    }
    mount.read_only = read_only.unwrap_or(match mount.kind {
        MountType::Bind => true,
        MountType::Secret | MountType::Ssh => true,
        MountType::Cache | MountType::Tmpfs => false,
    });
    match mount.kind {
        // A bind mount without a target lands on the working directory.
        MountType::Bind => {}
        MountType::Cache | MountType::Tmpfs => {
            if mount.target.is_none() {
                return Err("mount target is required (target=/path)".to_string());
            }
        }
        MountType::Secret => {
            if mount.id.is_none() && mount.target.is_none() && mount.env.is_none() {
                return Err("secret mount needs an id or a target".to_string());
            }
        }
        MountType::Ssh => {}
    }
    if mount.sharing != CacheSharing::Shared && mount.kind != MountType::Cache {
        return Err("sharing is only valid for cache mounts".to_string());
    }
    Ok(mount)
}

/// Splits `a,b="c,d",e` like Go's encoding/csv (one record, quotes removed).
fn split_csv(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    let mut in_quotes = false;
    let mut field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    current.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                current.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut current));
                field_start = true;
                continue;
            }
            '"' if field_start || current.ends_with('=') => in_quotes = true,
            c => current.push(c),
        }
        field_start = false;
    }
    if in_quotes {
        return Err(format!("unterminated quote in mount options {value:?}"));
    }
    fields.push(current);
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}

/// `64m`, `1g`, `1024`, `10kb`: a byte count.
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits_end].parse().ok()?;
    let multiplier: f64 = match lower[digits_end..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        _ => return None,
    };
    let bytes = number * multiplier;
    (0.0..1.8e19).contains(&bytes).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=cache,target=/root/.cache,sharing=locked,id=pip")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, CacheSharing::Locked);
        assert!(!m.read_only);
        let b = parse_mount("target=/src,from=build,rw").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.kind, b.read_only), (MountType::Bind, false));
        assert!(parse_mount("type=cache").is_err());
        assert!(parse_mount("type=bind").is_ok());
        assert!(parse_mount("type=cache,target=/x,bogus=1").is_err());
        let s = parse_mount("type=secret,id=npmrc,target=/root/.npmrc,mode=0400")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, Some(0o400));
        let t = parse_mount("type=tmpfs,target=/tmp,size=64m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.size, Some(64 * 1024 * 1024));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("FORM"), Some("FROM"));
        assert_eq!(suggest_instruction("rn"), Some("RUN"));
        assert_eq!(suggest_instruction("xyzzyplugh"), None);
    }
}
