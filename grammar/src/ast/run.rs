//! RUN: its command line, `--network`, `--security` and `--mount` values.

use super::flags::{FlagKind, Flags};
use super::tree::{
    CacheSharing, CommandLine, InstructionKind, Mount, MountType, NetworkMode, RunInstruction,
    SecurityMode,
};
use super::usage::require_args;
use crate::syntax::{ParseError, RawInstruction};

pub(super) fn type_run(raw: &RawInstruction) -> Result<InstructionKind, ParseError> {
    use FlagKind::*;
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
    Ok(InstructionKind::Run(RunInstruction {
        command: CommandLine::from_raw(raw),
        mounts,
        network,
        security,
        heredocs: raw.heredocs.clone(),
    }))
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
}
