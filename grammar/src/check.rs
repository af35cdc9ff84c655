//! `gcr build --check`: parse and plan a build (stages, ARG/ENV expansion, stage
//! references) without reading context files or pulling images, and report every problem
//! found as a positioned [`Diagnostic`].

use std::collections::HashMap;
use std::fmt;

use crate::ast::{
    before_from_error, no_from_error, type_instruction, CopyInstruction, CopySource, Instruction,
    InstructionKind,
};
use crate::shell::{ExpandError, ShellLexer};
use crate::syntax::{parse_syntax, ParseError, RawInstruction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem in a Containerfile, with its position (line and column from 1; line 0 means
/// the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column: message`, then the offending line with a caret under the column,
    /// then the hint if there is one. No trailing newline.
    pub fn render(&self) -> String {
        let severity = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.line == 0 {
            let mut out = format!("{}: {severity}{}", self.file, self.message);
            if let Some(hint) = &self.hint {
                out.push_str(&format!("\n  hint: {hint}"));
            }
            return out;
        }
        let mut out = format!(
            "{}:{}:{}: {severity}{}",
            self.file, self.line, self.column, self.message
        );
        if let Some(source) = &self.source_line {
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            // Keep tabs so the caret lines up under the same column.
            let pad: String = source
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("\n {number} | {source}\n {gutter} | {pad}^"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n  hint: {hint}"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

struct Reporter<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    diagnostics: Vec<Diagnostic>,
}

impl Reporter<'_> {
    fn push(&mut self, error: ParseError, severity: Severity) {
        let source_line = (error.line >= 1)
            .then(|| self.lines.get(error.line - 1))
            .flatten()
            .map(|l| l.trim_end_matches('\r').to_string());
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            line: error.line,
            column: error.column.max(1),
            severity,
            message: error.message,
            hint: error.hint,
            source_line,
        });
    }

    fn error(&mut self, error: ParseError) {
        self.push(error, Severity::Error);
    }

    fn warning(&mut self, error: ParseError) {
        self.push(error, Severity::Warning);
    }
}

/// The platform the automatic platform ARGs describe: this machine's.
fn host_platform() -> (&'static str, &'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let variant = if arch == "arm" { "v7" } else { "" };
    ("linux", arch, variant)
}

/// BuildKit's automatic platform ARGs (BUILDPLATFORM, TARGETARCH, ...).
pub fn platform_args() -> Vec<(String, String)> {
    let (os, arch, variant) = host_platform();
    let platform = if variant.is_empty() {
        format!("{os}/{arch}")
    } else {
        format!("{os}/{arch}/{variant}")
    };
    let mut out = Vec::new();
    for prefix in ["BUILD", "TARGET"] {
        out.push((format!("{prefix}PLATFORM"), platform.clone()));
        out.push((format!("{prefix}OS"), os.to_string()));
        out.push((format!("{prefix}ARCH"), arch.to_string()));
        out.push((format!("{prefix}VARIANT"), variant.to_string()));
    }
    out
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn is_valid_signal(signal: &str) -> bool {
    if let Ok(n) = signal.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = signal.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) {
        return true;
    }
    // SIGRTMIN+n / SIGRTMAX-n
    name.strip_prefix("RTMIN+")
        .or_else(|| name.strip_prefix("RTMAX-"))
        .is_some_and(|n| n.parse::<u32>().is_ok())
        || name == "RTMIN"
        || name == "RTMAX"
}

fn is_valid_port(spec: &str) -> bool {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (spec, None),
    };
    if let Some(proto) = proto {
        if !matches!(proto.to_lowercase().as_str(), "tcp" | "udp" | "sctp") {
            return false;
        }
    }
    // An `ip:host:container` spec is accepted by BuildKit; check the container part.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let valid = |p: &str| p.parse::<u32>().is_ok_and(|n| n <= 65535);
    match ports.split_once('-') {
        Some((a, b)) => valid(a) && valid(b),
        None => valid(ports),
    }
}

/// Checks a Containerfile: syntax, instructions and flags, stage structure, variable
/// expansion (with `build_args` overriding ARG defaults) and stage references, plus that
/// `target` names a stage. Returns every problem found, errors and warnings; an empty
/// list (or warnings only) means the file is valid.
pub fn check_containerfile(
    source: &str,
    file_name: &str,
    build_args: &[(String, String)],
    target: Option<&str>,
) -> Vec<Diagnostic> {
    let mut reporter = Reporter {
        file: file_name,
        lines: source.split('\n').collect(),
        diagnostics: Vec::new(),
    };
    let tree = match parse_syntax(source) {
        Ok(tree) => tree,
        Err(e) => {
            reporter.error(e);
            return reporter.diagnostics;
        }
    };
    for &line in &tree.empty_continuation_lines {
        reporter.warning(ParseError::new(line, 1, "empty continuation line").with_hint(
            "blank lines inside a continued instruction are deprecated; remove it or end the instruction above",
        ));
    }
    let lexer = ShellLexer::new(tree.escape);

    // Type every instruction, keeping going after errors.
    let mut typed: Vec<Instruction> = Vec::new();
    for raw in tree.instructions {
        match type_instruction(raw) {
            Ok(i) => typed.push(i),
            Err(e) => reporter.error(e),
        }
    }

    // Stage names, all of them, to tell earlier from later stages.
    let mut stage_names: HashMap<String, (usize, usize)> = HashMap::new();
    let mut stage_count = 0;
    let mut seen_from = false;
    for instruction in &typed {
        if let InstructionKind::From(from) = &instruction.kind {
            seen_from = true;
            if let Some(name) = &from.stage_name {
                if let Some(&(_, first_line)) = stage_names.get(name) {
                    let offset = instruction
                        .raw
                        .original
                        .to_lowercase()
                        .rfind(name.as_str())
                        .unwrap_or(0);
                    reporter.error(
                        instruction
                            .raw
                            .error_at(offset, format!("duplicate stage name {name:?}"))
                            .with_hint(format!(
                                "stage {name:?} is already defined on line {first_line}"
                            )),
                    );
                } else {
                    stage_names.insert(name.clone(), (stage_count, instruction.start_line()));
                }
            }
            stage_count += 1;
        } else if !seen_from && !matches!(instruction.kind, InstructionKind::Arg(_)) {
            reporter.error(before_from_error(instruction));
        }
    }
    if stage_count == 0 && reporter.diagnostics.iter().all(|d| !d.is_error()) {
        reporter.error(no_from_error());
    }

    let build_arg = |name: &str| -> Option<String> {
        build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    // Global scope: automatic platform ARGs, then the ARGs before the first FROM.
    let mut meta_env: Vec<(String, String)> = platform_args();
    let mut stage_index: Option<usize> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    for instruction in &typed {
        let raw = &instruction.raw;
        let expand =
            |reporter: &mut Reporter, env: &Vec<(String, String)>, word: &str| -> Option<String> {
                match lexer.process_word(word, env) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        reporter.error(expand_error(raw, word, &e));
                        None
                    }
                }
            };
        match &instruction.kind {
            InstructionKind::From(from) => {
                let index = stage_index.map_or(0, |i| i + 1);
                stage_index = Some(index);
                env = Vec::new();
                if let Some(platform) = &from.platform {
                    expand(&mut reporter, &meta_env, platform);
                }
                if let Some(base) = expand(&mut reporter, &meta_env, &from.image) {
                    let offset = raw.rest_offset;
                    if base.trim().is_empty() {
                        reporter.error(
                            raw.error_at(
                                offset,
                                format!("base name ({}) should not be blank", from.image),
                            )
                            .with_hint("give the ARG a default or pass --build-arg"),
                        );
                    } else if base.chars().any(char::is_whitespace) {
                        reporter.error(
                            raw.error_at(offset, format!("invalid base image reference {base:?}")),
                        );
                    } else if from.stage_name.as_deref() == Some(base.to_lowercase().as_str()) {
                        reporter.error(raw.error_at(
                            offset,
                            format!("circular dependency: stage {base:?} uses itself as its base"),
                        ));
                    }
                }
            }
            InstructionKind::Arg(definitions) => {
                let in_stage = stage_index.is_some();
                for def in definitions {
                    let default = match &def.default {
                        Some(d) => {
                            let scope = if in_stage { &env } else { &meta_env };
                            expand(&mut reporter, scope, d)
                        }
                        None => None,
                    };
                    let inherited = if in_stage {
                        meta_env
                            .iter()
                            .rev()
                            .find(|(k, _)| *k == def.name)
                            .map(|(_, v)| v.clone())
                    } else {
                        None
                    };
                    let value = build_arg(&def.name).or(default).or(inherited);
                    if let Some(value) = value {
                        if in_stage {
                            env.push((def.name.clone(), value));
                        } else {
                            meta_env.push((def.name.clone(), value));
                        }
                    }
                }
            }
            _ if stage_index.is_none() => {}
            InstructionKind::Env(pairs) => {
                for pair in pairs {
                    let key = expand(&mut reporter, &env, &pair.key);
                    let value = expand(&mut reporter, &env, &pair.value);
                    if let (Some(key), Some(value)) = (key, value) {
                        env.push((key, value));
                    }
                }
            }
            InstructionKind::Label(pairs) => {
                for pair in pairs {
                    expand(&mut reporter, &env, &pair.key);
                    expand(&mut reporter, &env, &pair.value);
                }
            }
            InstructionKind::Workdir(v) | InstructionKind::User(v) => {
                expand(&mut reporter, &env, v);
            }
            InstructionKind::StopSignal(v) => {
                if let Some(signal) = expand(&mut reporter, &env, v) {
                    // An unset ARG gets its value at build time; nothing to check now.
                    let unknown_yet = signal.is_empty() && v.contains('$');
                    if !unknown_yet && !is_valid_signal(&signal) {
                        reporter.error(
                            raw.error_at(raw.rest_offset, format!("invalid signal: {signal}"))
                                .with_hint("use a name such as SIGTERM or a number"),
                        );
                    }
                }
            }
            InstructionKind::Expose(ports) => {
                for port in ports {
                    let Some(value) = expand(&mut reporter, &env, port) else {
                        continue;
                    };
                    for spec in value.split_whitespace() {
                        if !is_valid_port(spec) {
                            let offset =
                                raw.original.find(port.as_str()).unwrap_or(raw.rest_offset);
                            reporter.error(
                                raw.error_at(
                                    offset,
                                    format!("invalid port specification: {spec:?}"),
                                )
                                .with_hint("use PORT, PORT/tcp, PORT/udp or a range START-END"),
                            );
                        }
                    }
                }
            }
            InstructionKind::Volume(paths) => {
                for p in paths {
                    expand(&mut reporter, &env, p);
                }
            }
            InstructionKind::Copy(copy) | InstructionKind::Add(copy) => {
                check_copy(
                    &mut reporter,
                    &lexer,
                    raw,
                    copy,
                    &env,
                    &stage_names,
                    stage_index.unwrap_or(0),
                );
            }
            InstructionKind::Run(run) => {
                let mount_offsets = raw
                    .flags
                    .iter()
                    .filter(|f| f.text.starts_with("--mount="))
                    .map(|f| f.offset);
                for (mount, offset) in run.mounts.iter().zip(mount_offsets) {
                    if let Some(from) = &mount.from {
                        if let Some(from) = expand(&mut reporter, &env, from) {
                            let site = Site {
                                raw,
                                offset,
                                what: "RUN --mount from",
                            };
                            check_stage_reference(
                                &mut reporter,
                                &site,
                                &from,
                                &stage_names,
                                stage_index.unwrap_or(0),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    if let Some(target) = target {
        if !stage_names.contains_key(&target.to_lowercase()) && stage_count > 0 {
            let mut names: Vec<&String> = stage_names.keys().collect();
            names.sort();
            let hint = if names.is_empty() {
                "the file has no named stages (FROM <image> AS <name>)".to_string()
            } else {
                format!(
                    "named stages: {}",
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            reporter.error(
                ParseError::new(0, 0, format!("target stage {target:?} could not be found"))
                    .with_hint(hint),
            );
        }
    }
    reporter.diagnostics
}

fn expand_error(raw: &RawInstruction, word: &str, error: &ExpandError) -> ParseError {
    let offset = raw.original.find(word).unwrap_or(raw.rest_offset);
    raw.error_at(offset, error.to_string())
        .with_hint("check the ${...} syntax; a literal $ is written \\$")
}

fn check_copy(
    reporter: &mut Reporter,
    lexer: &ShellLexer,
    raw: &RawInstruction,
    copy: &CopyInstruction,
    env: &[(String, String)],
    stage_names: &HashMap<String, (usize, usize)>,
    current: usize,
) {
    let mut words: Vec<&str> = copy
        .sources
        .iter()
        .filter_map(|s| match s {
            CopySource::Path(p) => Some(p.as_str()),
            CopySource::Heredoc(_) => None,
        })
        .collect();
    words.push(&copy.destination);
    if let Some(chown) = &copy.chown {
        words.push(chown);
    }
    for word in words {
        if let Err(e) = lexer.process_word(word, env) {
            reporter.error(expand_error(raw, word, &e));
        }
    }
    if let Some(from) = &copy.from {
        let offset = raw
            .flags
            .iter()
            .find(|f| f.text.starts_with("--from="))
            .map_or(0, |f| f.offset);
        match lexer.process_word(from, env) {
            Ok(from) => {
                let site = Site {
                    raw,
                    offset,
                    what: "COPY --from",
                };
                check_stage_reference(reporter, &site, &from, stage_names, current)
            }
            Err(e) => reporter.error(expand_error(raw, from, &e)),
        }
    }
}

/// Where a stage reference was written: the instruction, the flag's offset, and how to
/// name it in messages.
struct Site<'a> {
    raw: &'a RawInstruction,
    offset: usize,
    what: &'static str,
}

/// `COPY --from` / `RUN --mount from=`: a stage index or name must refer to an earlier
/// stage; anything else is an image.
fn check_stage_reference(
    reporter: &mut Reporter,
    site: &Site,
    reference: &str,
    stage_names: &HashMap<String, (usize, usize)>,
    current: usize,
) {
    let Site { raw, offset, what } = *site;
    if let Ok(index) = reference.parse::<usize>() {
        if index >= current {
            reporter.error(
                raw.error_at(
                    offset,
                    format!("{what}={reference} refers to stage {index}, which does not come before this stage"),
                )
                .with_hint("a stage can only use stages defined above it"),
            );
        }
        return;
    }
    if let Some(&(index, line)) = stage_names.get(&reference.to_lowercase()) {
        if index == current {
            reporter.error(
                raw.error_at(
                    offset,
                    format!("{what}={reference} refers to the current stage"),
                )
                .with_hint("a stage cannot copy from itself"),
            );
        } else if index > current {
            reporter.error(
                raw.error_at(
                    offset,
                    format!("{what}={reference} refers to a later stage (defined on line {line})"),
                )
                .with_hint("a stage can only use stages defined above it; move that stage up"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_signals() {
        assert!(is_valid_port("80"));
        assert!(is_valid_port("8000-8010/udp"));
        assert!(!is_valid_port("80/xyz"));
        assert!(!is_valid_port("http"));
        assert!(is_valid_signal("SIGQUIT"));
        assert!(is_valid_signal("9"));
        assert!(is_valid_signal("SIGRTMIN+3"));
        assert!(!is_valid_signal("SIGFOO"));
    }

    #[test]
    fn render_format() {
        let d = check_containerfile("FROM alpine\n\tFORM x\n", "Containerfile", &[], None);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].render(),
            "Containerfile:2:2: unknown instruction: FORM\n 2 | \tFORM x\n   | \t^\n  hint: did you mean FROM?"
        );
    }
}
