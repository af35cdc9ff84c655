//! An instruction's `--flag[=value]` words, checked against the flags it accepts.

use crate::syntax::{ParseError, RawInstruction};

/// A parsed `--flag[=value]`.
struct FlagValue<'a> {
    name: &'a str,
    value: Option<&'a str>,
    offset: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    Bool,
    Text,
    List,
}

/// The parsed flags of one instruction, checked against what it accepts.
pub(super) struct Flags<'a> {
    values: Vec<FlagValue<'a>>,
}

impl<'a> Flags<'a> {
    pub(super) fn parse(
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

    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.map(str::to_string))
    }

    pub(super) fn list(&self, name: &str) -> Vec<(&'a str, usize)> {
        self.values
            .iter()
            .filter(|v| v.name == name)
            .filter_map(|v| v.value.map(|val| (val, v.offset)))
            .collect()
    }

    pub(super) fn boolean(&self, name: &str) -> Option<bool> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.is_none_or(|s| s.eq_ignore_ascii_case("true")))
    }

    pub(super) fn offset(&self, name: &str) -> Option<usize> {
        self.values
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.offset)
    }
}
