//! Word-split arguments: whitespace-separated (FROM, EXPOSE), quote-aware words (ARG) and
//! the name/value pairs of ENV and LABEL.

use super::tree::Arg;

/// BuildKit's `[\t\v\f\r ]`.
pub(super) fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{0B}' | '\u{0C}' | '\r')
}

pub(super) fn split_whitespace(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_separator)
        .filter(|w| !w.is_empty())
        .map(|w| Arg::Word(w.to_string()))
        .collect()
}

/// BuildKit's quote-aware word splitter for ENV, LABEL and ARG: quotes and escapes are
/// kept as written, only whitespace outside quotes separates words.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    word_slices(rest, escape)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// [`parse_words`] without copying: every word is a slice of `rest`, because the splitter
/// keeps all characters of a word except an escape token at the very end of the input.
pub(super) fn word_slices(rest: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    let mut chars = rest.char_indices();
    while let Some((i, ch)) = chars.next() {
        let Some(word_start) = start else {
            if ch.is_whitespace() {
                continue;
            }
            start = Some(i);
            if ch == '\'' || ch == '"' {
                quote = Some(ch);
            } else if ch == escape {
                // Kept together with the next character; dropped at the very end.
                if chars.next().is_none() {
                    start = None;
                }
            }
            continue;
        };
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            } else if ch == escape && q != '\'' && chars.next().is_none() {
                words.push(&rest[word_start..i]);
                return words;
            }
            continue;
        }
        if ch.is_whitespace() {
            words.push(&rest[word_start..i]);
            start = None;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
        } else if ch == escape && chars.next().is_none() {
            words.push(&rest[word_start..i]);
            return words;
        }
    }
    if let Some(word_start) = start {
        words.push(&rest[word_start..]);
    }
    words
}

/// ENV/LABEL arguments as `key value separator` triples.
pub(super) fn parse_name_value(rest: &str, key: &str, escape: char) -> Result<Vec<Arg>, String> {
    let words = word_slices(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy form: `ENV key value with spaces`.
        let mut parts = rest.splitn(2, is_separator);
        let name = parts.next().unwrap_or("");
        let value = parts.next().map(|v| v.trim_start_matches(is_separator));
        return match value {
            Some(value) => Ok(vec![
                Arg::Word(name.to_string()),
                Arg::Word(value.to_string()),
                Arg::Word(String::new()),
            ]),
            None => Err(format!("{key} must have two arguments")),
        };
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        args.push(Arg::Word(name.to_string()));
        args.push(Arg::Word(value.to_string()));
        args.push(Arg::Word("=".to_string()));
    }
    Ok(args)
}
