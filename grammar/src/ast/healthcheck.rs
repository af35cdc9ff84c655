//! HEALTHCHECK and the Go durations of its flags.

use std::time::Duration;

use super::flags::{FlagKind, Flags};
use super::tree::{CommandLine, Healthcheck, HealthcheckCommand};
use super::usage::usage;
use crate::syntax::{ParseError, RawInstruction};

pub(super) fn parse_healthcheck(raw: &RawInstruction) -> Result<Healthcheck, ParseError> {
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
}
