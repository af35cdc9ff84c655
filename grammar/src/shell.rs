//! Shell-word lexer and variable expansion, as BuildKit applies it to Dockerfile words
//! (`$v`, `${v}`, `${v:-w}`, `${v#p}`, `${v/p/r}`, quotes and escapes).
//!
//! Used by the builder for ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME,
//! WORKDIR, ARG defaults, some flag values and heredoc bodies. Shell-form RUN/CMD/ENTRYPOINT
//! are not expanded here: the shell in the container does that.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Looks up variables for expansion.
pub trait EnvLookup {
    /// The value of `name`, or None when it is unset (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// An environment with nothing set.
pub struct NoEnv;

impl EnvLookup for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// `(name, value)` pairs; the last definition of a name wins.
impl EnvLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl EnvLookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl EnvLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Why an expansion failed. Every variant names the word that was being processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("failed to process {input:?}: unexpected end of statement while looking for matching {what}")]
    Unterminated { input: String, what: String },
    #[error("failed to process {input:?}: syntax error: {detail}")]
    Syntax { input: String, detail: String },
    #[error("failed to process {input:?}: unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { input: String, modifier: String },
    #[error("failed to process {input:?}: {name}: {message}")]
    Required {
        input: String,
        name: String,
        message: String,
    },
    #[error("failed to process {input:?}: invalid pattern ({pattern}) in substitution: {detail}")]
    InvalidPattern {
        input: String,
        pattern: String,
        detail: String,
    },
}

/// A failure before the input word is attached.
enum Fail {
    Unterminated(String),
    Syntax(&'static str),
    Modifier(String),
    Required(String, String),
    Pattern(String, String),
}

impl Fail {
    fn with_input(self, input: &str) -> ExpandError {
        let input = input.to_string();
        match self {
            Fail::Unterminated(what) => ExpandError::Unterminated { input, what },
            Fail::Syntax(detail) => ExpandError::Syntax {
                input,
                detail: detail.to_string(),
            },
            Fail::Modifier(modifier) => ExpandError::UnsupportedModifier { input, modifier },
            Fail::Required(name, message) => ExpandError::Required {
                input,
                name,
                message,
            },
            Fail::Pattern(pattern, detail) => ExpandError::InvalidPattern {
                input,
                pattern,
                detail,
            },
        }
    }
}

/// The result of a single-word expansion plus the variables it used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub value: String,
    /// Variables that were looked up and set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up while unset.
    pub unmatched: BTreeSet<String>,
}

/// The lexer settings. `ShellLexer::new('\\')` is BuildKit's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLexer {
    /// The escape token: `\` or `` ` `` (from the `# escape=` directive).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape tokens in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters.
    pub skip_quotes: bool,
}

impl ShellLexer {
    pub fn new(escape: char) -> ShellLexer {
        ShellLexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Expands `word` into one string: quotes removed, escapes processed, variables
    /// expanded, whitespace kept.
    pub fn process_word<E: EnvLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.run(word, env).map(|(value, _, _)| value.value)
    }

    /// Like [`ShellLexer::process_word`], also reporting which variables were used.
    pub fn process_word_with_matches<E: EnvLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Expansion, ExpandError> {
        self.run(word, env).map(|(value, _, _)| value)
    }

    /// Expands `word` and splits it into words on unquoted whitespace (also whitespace
    /// produced by unquoted expansions). Empty words are dropped.
    pub fn process_words<E: EnvLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.run(word, env).map(|(_, words, _)| words)
    }

    fn run<E: EnvLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<(Expansion, Vec<String>, ()), ExpandError> {
        let mut state = Lexing {
            source: word,
            pos: 0,
            env,
            lexer: *self,
            raw_escapes: self.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let raw = self.raw_escapes;
        match state.process_stop_on(None, raw) {
            Ok((value, words)) => Ok((
                Expansion {
                    value,
                    matched: state.matched,
                    unmatched: state.unmatched,
                },
                words,
                (),
            )),
            Err(fail) => Err(fail.with_input(word)),
        }
    }
}

struct Lexing<'a, E: EnvLookup + ?Sized> {
    source: &'a str,
    /// Byte offset of the next character in `source`.
    pos: usize,
    env: &'a E,
    lexer: ShellLexer,
    raw_escapes: bool,
    /// Current nesting of `${...}` words.
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Deepest `${...}` nesting accepted.
const MAX_NESTING: usize = 128;

/// Accumulates words for word mode.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if is_heredoc_prefix(&self.word) {
                // `<< EOF` stays one word so the heredoc marker survives splitting.
                self.add_raw_char(ch);
            } else if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// `^\d*<<-?\s*$`: a heredoc operator still waiting for its delimiter word.
fn is_heredoc_prefix(word: &str) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.chars().all(char::is_whitespace)
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl<E: EnvLookup + ?Sized> Lexing<'_, E> {
    fn peek(&self) -> Option<char> {
        self.source.get(self.pos..).and_then(|s| s.chars().next())
    }

    /// Moves past the current character.
    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.bump();
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        // `${a:-${b:-...}}` recurses once per level; bound it so no input can exhaust the
        // stack.
        if self.depth >= MAX_NESTING {
            return Err(Fail::Syntax("substitutions nested too deeply"));
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    /// The word up to `stop` (consumed); an error at the end of the input is `missing`.
    fn word_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: &'static str,
    ) -> Result<String, Fail> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(Fail::Syntax(missing)),
            Err(e) => Err(e),
        }
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        let escape = self.lexer.escape;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.bump();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if !self.lexer.skip_quotes && (ch == '\'' || ch == '"') {
                let tmp = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.bump();
                if ch == escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // The escape token makes the next character literal; a lone one at
                    // the end is dropped.
                    let Some(escaped) = self.next() else {
                        break;
                    };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    words.add_char(ch);
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(Fail::Unterminated(stop.to_string()));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(Fail::Unterminated("single-quote".to_string())),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        let escape = self.lexer.escape;
        loop {
            match self.peek() {
                None => return Err(Fail::Unterminated("double-quote".to_string())),
                Some('"') => {
                    self.bump();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(ch) => {
                    self.bump();
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // Ignored at the end; the loop then reports the missing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                self.bump();
                                result.push(next);
                            }
                            // Before any other character the escape token stays (twice
                            // with raw escapes, as BuildKit writes it).
                            Some(_) => result.push(ch),
                        }
                    } else {
                        result.push(ch);
                    }
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.bump();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.bump();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.bump();
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.bump(); // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump(); // the `{`
        match self.peek() {
            None => return Err(Fail::Syntax("missing '}'")),
            Some('{') | Some('}') | Some(':') => return Err(Fail::Syntax("bad substitution")),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(Fail::Syntax("missing '}'"));
        };
        let mut modifier = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            modifier.push(c);
                        }
                        None => return Err(Fail::Syntax("missing '}'")),
                    }
                }
                let raw_escapes = ch == '#' || ch == '%';
                if null_is_unset && raw_escapes {
                    return Err(Fail::Modifier(modifier));
                }
                let word = self.word_until('}', raw_escapes, "missing '}'")?;
                let value = self.get_env(&name);
                if self.lexer.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let empty_or_unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match ch {
                    '-' => Ok(if empty_or_unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty_or_unset { String::new() } else { word }),
                    '?' => {
                        if value.is_none() {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(Fail::Required(name, msg));
                        }
                        if empty_or_unset {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(Fail::Required(name, msg));
                        }
                        Ok(value.unwrap_or_default())
                    }
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(ch) {
                            Some(p) => (true, p.to_string()),
                            None => (false, word),
                        };
                        let tokens = compile_glob(&pattern)
                            .map_err(|d| Fail::Pattern(pattern.clone(), d))?;
                        Ok(if ch == '#' {
                            trim_prefix(&tokens, &value, greedy)
                        } else {
                            trim_suffix(&tokens, &value, greedy)
                        })
                    }
                    _ => Err(Fail::Modifier(modifier)),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.bump();
                }
                let pattern = self.word_until('/', true, "missing '/' in ${}")?;
                let replacement = self.word_until('}', true, "missing '}'")?;
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lexer.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let tokens =
                    compile_glob(&pattern).map_err(|d| Fail::Pattern(pattern.clone(), d))?;
                Ok(replace(&tokens, &value, &replacement, replace_all))
            }
            _ => Err(Fail::Modifier(modifier)),
        }
    }
}

/// One element of a `${v#pattern}` glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    Literal(char),
    AnyChar,
    AnyRun,
}

/// Shell pattern -> tokens: `*`, `?`, and `\*` `\?` `\\` escapes (`\}` and `\/` drop the
/// backslash). Bracket expressions are not supported; everything else is literal.
fn compile_glob(pattern: &str) -> Result<Vec<Glob>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Glob::AnyRun),
            '?' => out.push(Glob::AnyChar),
            '\\' => match chars.peek().copied() {
                Some('}') | Some('/') => {}
                Some(n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Glob::Literal(n));
                }
                Some(n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("invalid escape at end of pattern".to_string()),
            },
            c => out.push(Glob::Literal(c)),
        }
    }
    Ok(out)
}

/// All end positions `e` such that the glob matches `s[start..e]` exactly, ascending.
/// A linear NFA simulation: no backtracking, so no blow-up on many `*`.
fn match_ends(tokens: &[Glob], s: &[char], start: usize) -> Vec<usize> {
    let m = tokens.len();
    let close = |states: &mut Vec<bool>| {
        for k in 0..m {
            if states[k] && tokens[k] == Glob::AnyRun {
                states[k + 1] = true;
            }
        }
    };
    let mut current = vec![false; m + 1];
    current[0] = true;
    close(&mut current);
    let mut ends = Vec::new();
    if current[m] {
        ends.push(start);
    }
    for (i, &c) in s.iter().enumerate().skip(start) {
        let mut next = vec![false; m + 1];
        let mut any = false;
        for k in 0..m {
            if !current[k] {
                continue;
            }
            // Like Go's regexp `.`, wildcards do not match a newline.
            match tokens[k] {
                Glob::Literal(l) if l == c => next[k + 1] = true,
                Glob::AnyChar if c != '\n' => next[k + 1] = true,
                Glob::AnyRun if c != '\n' => next[k] = true,
                _ => continue,
            }
            any = true;
        }
        if !any {
            break;
        }
        close(&mut next);
        current = next;
        if current[m] {
            ends.push(i + 1);
        }
    }
    ends
}

fn trim_prefix(tokens: &[Glob], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let ends = match_ends(tokens, &chars, 0);
    let end = if greedy { ends.last() } else { ends.first() };
    match end {
        Some(&end) => chars[end..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(tokens: &[Glob], value: &str, greedy: bool) -> String {
    // The shortest or longest suffix is the shortest or longest prefix of the reversed
    // value under the reversed pattern.
    let reversed_tokens: Vec<Glob> = tokens.iter().rev().copied().collect();
    let reversed: String = value.chars().rev().collect();
    trim_prefix(&reversed_tokens, &reversed, greedy)
        .chars()
        .rev()
        .collect()
}

/// `${v/p/r}` and `${v//p/r}`: leftmost, longest matches; like Go's ReplaceAll, an empty
/// match right after a previous match is not replaced.
fn replace(tokens: &[Glob], value: &str, replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let find_from = |from: usize| -> Option<(usize, usize)> {
        (from..=chars.len()).find_map(|start| {
            match_ends(tokens, &chars, start)
                .last()
                .map(|&end| (start, end))
        })
    };
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= chars.len() {
        let Some((a, b)) = find_from(search) else {
            break;
        };
        out.extend(&chars[last_end..a]);
        if b > last_end || a == 0 {
            out.push_str(replacement);
        }
        last_end = b;
        search = if b > search { b } else { search + 1 };
        if !all {
            break;
        }
    }
    out.extend(&chars[last_end.min(chars.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn heredoc_operator_stays_one_word() {
        let mut lexer = ShellLexer::new('\\');
        lexer.raw_quotes = true;
        lexer.raw_escapes = true;
        lexer.skip_unset = true;
        let words = lexer
            .process_words("RUN <<  EOF  > foo", &NoEnv)
            .unwrap_or_default();
        assert_eq!(words, vec!["RUN", "<<  EOF", ">", "foo"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let lexer = ShellLexer::new('\\');
        let deep = "${a:-".repeat(100_000) + &"}".repeat(100_000);
        assert!(lexer.process_word(&deep, &NoEnv).is_err());
        let ok = "${a:-".repeat(50) + "x" + &"}".repeat(50);
        assert_eq!(lexer.process_word(&ok, &NoEnv).ok().as_deref(), Some("x"));
    }

    #[test]
    fn replace_empty_pattern() {
        let lexer = ShellLexer::new('\\');
        let e = env(&[("FOO", "xxyy"), ("BAR", "")]);
        assert_eq!(
            lexer.process_word("${FOO/$BAR/ww}", &e).ok().as_deref(),
            Some("wwxxyy")
        );
    }
}
