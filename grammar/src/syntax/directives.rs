//! Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top of the file.

use super::tree::{Directive, Directives, ParseError};

/// Go's `\s` in regular expressions.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0C}' | '\r' | ' ')
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, key lowercased.
fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let rest = rest[key_len..].trim_start_matches(is_re_space);
    let rest = rest.strip_prefix('=')?;
    if rest.is_empty() || rest.contains('\n') {
        return None;
    }
    let value = rest.trim_matches(is_re_space);
    let value = if value.is_empty() {
        // All white space: the lazy group still takes one character.
        &rest[rest.len() - 1..]
    } else {
        value
    };
    Some((key.to_ascii_lowercase(), value.to_string()))
}

pub(super) struct DirectiveParser {
    pub(super) done: bool,
    pub(super) directives: Directives,
}

impl DirectiveParser {
    /// Offers a (left-trimmed) line; returns the new escape token if it set one.
    pub(super) fn offer(&mut self, line: &str, line_no: usize) -> Result<Option<char>, ParseError> {
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let slot = match key.as_str() {
            "syntax" => &mut self.directives.syntax,
            "escape" => &mut self.directives.escape,
            "check" => &mut self.directives.check,
            _ => {
                self.done = true;
                return Ok(None);
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                line_no,
                1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        *slot = Some(Directive {
            value: value.clone(),
            line: line_no,
        });
        if key == "escape" {
            return match value.as_str() {
                "\\" => Ok(Some('\\')),
                "`" => Ok(Some('`')),
                _ => Err(ParseError::new(
                    line_no,
                    1,
                    format!("invalid escape token '{value}' does not match ` or \\"),
                )
                .with_hint("use `# escape=\\` or `# escape=``")),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(
            match_directive("# escape = `"),
            Some(("escape".to_string(), "`".to_string()))
        );
        assert_eq!(match_directive("#escape="), None);
        assert_eq!(match_directive("# 1x=2"), None);
    }
}
