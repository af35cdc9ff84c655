//! COPY and ADD: sources (paths or heredoc files), destination and their flags.

use super::flags::{FlagKind, Flags};
use super::tree::{CopyInstruction, CopySource, InstructionKind};
use super::usage::require_args;
use crate::syntax::{ParseError, RawInstruction};

pub(super) fn type_copy(
    raw: &RawInstruction,
    words: &[&str],
) -> Result<InstructionKind, ParseError> {
    use FlagKind::*;
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
    // A value with a variable is checked after expansion, by the builder.
    let check = |name: &str, valid: fn(&str) -> bool, what: &str, hint: &str| match flags.text(name)
    {
        Some(value) if !value.contains('$') && !valid(&value) => Err(raw
            .error_at(
                flags.offset(name).unwrap_or(0),
                format!("invalid {what} {value:?}"),
            )
            .with_hint(hint)),
        _ => Ok(()),
    };
    check(
        "chmod",
        is_valid_chmod,
        "chmod parameter",
        "use an octal mode such as --chmod=0755 or a symbolic one such as u+x",
    )?;
    check(
        "checksum",
        is_valid_digest,
        "checksum digest",
        "use --checksum=sha256:<64 lowercase hex digits>",
    )?;
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
    Ok(if is_add {
        InstructionKind::Add(copy)
    } else {
        InstructionKind::Copy(copy)
    })
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
