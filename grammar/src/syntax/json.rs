//! Exec-form arguments (RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD, VOLUME, HEALTHCHECK): a
//! strict JSON array of strings, as Go's encoding/json reads it.

use pest::iterators::Pair;
use pest::Parser;

use super::grammar::{Grammar, Rule};
use super::tree::Arg;

pub(super) const NOT_STRING_ARRAY: &str = "dockerfile JSON array must contain only strings";

pub(super) fn parse_maybe_json(rest: &str) -> Result<(Vec<Arg>, bool), &'static str> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json_array(rest) {
        Json::Array(items) => Ok((items.into_iter().map(Arg::Word).collect(), true)),
        Json::NotStrings => Err(NOT_STRING_ARRAY),
        Json::Other => Ok((vec![Arg::Word(rest.to_string())], false)),
    }
}

pub(super) enum Json {
    Array(Vec<String>),
    NotStrings,
    Other,
}

/// Deepest nesting accepted before giving up (the PEG recurses per level).
const MAX_JSON_DEPTH: usize = 256;

/// How deep `[`/`{` nest outside strings, and whether they all close.
fn json_nesting(text: &str) -> (usize, bool) {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest, depth == 0 && !in_string)
}

/// A strict JSON array of strings, as Go's encoding/json reads it.
pub(super) fn parse_json_array(rest: &str) -> Json {
    let text = rest.trim_start();
    if !text.starts_with('[') {
        return Json::Other;
    }
    let (deepest, balanced) = json_nesting(text);
    if deepest > MAX_JSON_DEPTH {
        // Too deep to hand to the recursive grammar. Balanced, it is an array with a
        // non-string element (an error); unbalanced, it is not JSON (shell form).
        return if balanced {
            Json::NotStrings
        } else {
            Json::Other
        };
    }
    let Ok(mut pairs) = Grammar::parse(Rule::json_array, text) else {
        return Json::Other;
    };
    let Some(array) = pairs.next() else {
        return Json::Other;
    };
    let mut items = Vec::new();
    for element in array.into_inner() {
        if element.as_rule() != Rule::json_element {
            continue;
        }
        let Some(inner) = element.into_inner().next() else {
            return Json::NotStrings;
        };
        if inner.as_rule() != Rule::json_string {
            return Json::NotStrings;
        }
        items.push(decode_json_string(inner));
    }
    Json::Array(items)
}

fn decode_json_string(pair: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    let mut pending_high: Option<u32> = None;
    for part in pair.into_inner() {
        let text = part.as_str();
        if part.as_rule() == Rule::json_plain {
            if pending_high.take().is_some() {
                out.push('\u{FFFD}');
            }
            out.push_str(text);
            continue;
        }
        let code = text
            .strip_prefix("\\u")
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match code {
            Some(unit) => {
                if let Some(high) = pending_high.take() {
                    if (0xDC00..0xE000).contains(&unit) {
                        let c = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        continue;
                    }
                    out.push('\u{FFFD}');
                }
                if (0xD800..0xDC00).contains(&unit) {
                    pending_high = Some(unit);
                } else {
                    out.push(char::from_u32(unit).unwrap_or('\u{FFFD}'));
                }
            }
            None => {
                if pending_high.take().is_some() {
                    out.push('\u{FFFD}');
                }
                out.push(match text {
                    "\\b" => '\u{08}',
                    "\\f" => '\u{0C}',
                    "\\n" => '\n',
                    "\\r" => '\r',
                    "\\t" => '\t',
                    "\\/" => '/',
                    "\\\\" => '\\',
                    _ => '"',
                });
            }
        }
    }
    if pending_high.is_some() {
        out.push('\u{FFFD}');
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::syntax::parse_syntax;

    #[test]
    fn deep_json_is_handled_without_recursion() {
        let open = "[".repeat(100_000);
        let tree = parse_syntax(&format!("CMD {open}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!tree.instructions[0].json);
        let closed = format!("CMD {open}{}\n", "]".repeat(100_000));
        assert!(parse_syntax(&closed).is_err());
    }
}
