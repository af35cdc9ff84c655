//! Typing one instruction: the keyword picks the form, the flags and arguments are checked.

use super::copy::type_copy;
use super::flags::{FlagKind, Flags};
use super::healthcheck::parse_healthcheck;
use super::run::type_run;
use super::tree::{
    ArgDefinition, CommandLine, FromInstruction, Instruction, InstructionKind, KeyValue,
};
use super::usage::{require_args, suggest_instruction, usage};
use crate::syntax::{Arg, ParseError, RawInstruction};

/// Types one instruction from its syntax.
pub fn type_instruction(raw: RawInstruction) -> Result<Instruction, ParseError> {
    let kind = type_kind(&raw)?;
    Ok(Instruction { kind, raw })
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
        "run" => type_run(raw)?,
        "cmd" => {
            no_flags(raw)?;
            InstructionKind::Cmd(CommandLine::from_raw(raw))
        }
        "entrypoint" => {
            no_flags(raw)?;
            InstructionKind::Entrypoint(CommandLine::from_raw(raw))
        }
        "copy" | "add" => type_copy(raw, &words)?,
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
