//! The hints of typing errors: usage lines, argument-count checks and suggestions for a
//! misspelt keyword.

use crate::syntax::{ParseError, RawInstruction};

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
pub(super) fn suggest_instruction(keyword: &str) -> Option<&'static str> {
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

pub(super) fn require_args(
    raw: &RawInstruction,
    at_least: usize,
    what: &str,
) -> Result<(), ParseError> {
    if raw.args.len() < at_least {
        return Err(raw
            .error_at(0, format!("{} requires {what}", raw.command.to_uppercase()))
            .with_hint(usage(&raw.command)));
    }
    Ok(())
}

pub(super) fn usage(command: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("FORM"), Some("FROM"));
        assert_eq!(suggest_instruction("rn"), Some("RUN"));
        assert_eq!(suggest_instruction("xyzzyplugh"), None);
    }
}
