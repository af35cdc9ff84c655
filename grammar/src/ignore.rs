//! `.containerignore` / `.dockerignore` files with BuildKit's rules (moby/patternmatcher):
//! `*`, `?`, `[classes]`, `**`, `!` re-includes, the last matching pattern wins, and a
//! pattern that matches a parent directory matches everything below it.

/// Why an ignore pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclusion,
    #[error("syntax error in pattern {pattern:?}: {detail}")]
    BadPattern { pattern: String, detail: String },
}

/// Where an ignore file is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreFileLocation {
    /// In the directory of the Containerfile (`Containerfile.dockerignore`).
    BesideContainerfile,
    /// At the root of the build context (`.dockerignore`).
    Context,
}

/// A possible ignore file: its location and file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreFileCandidate {
    pub location: IgnoreFileLocation,
    pub name: String,
}

/// The ignore files to look for, best first: `<containerfile>.containerignore` and
/// `<containerfile>.dockerignore` beside the Containerfile, then `.containerignore` and
/// `.dockerignore` in the context. `containerfile_name` is the file name (no directory).
pub fn ignore_file_candidates(containerfile_name: &str) -> Vec<IgnoreFileCandidate> {
    let base = containerfile_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(containerfile_name);
    let mut out = Vec::new();
    if !base.is_empty() {
        for ext in ["containerignore", "dockerignore"] {
            out.push(IgnoreFileCandidate {
                location: IgnoreFileLocation::BesideContainerfile,
                name: format!("{base}.{ext}"),
            });
        }
    }
    for name in [".containerignore", ".dockerignore"] {
        out.push(IgnoreFileCandidate {
            location: IgnoreFileLocation::Context,
            name: name.to_string(),
        });
    }
    out
}

/// Picks the ignore file to use: the first candidate (see [`ignore_file_candidates`])
/// for which `exists` says yes. The caller does the file-system check.
pub fn pick_ignore_file(
    containerfile_name: &str,
    exists: impl Fn(&IgnoreFileCandidate) -> bool,
) -> Option<IgnoreFileCandidate> {
    ignore_file_candidates(containerfile_name)
        .into_iter()
        .find(|c| exists(c))
}

/// Reads the patterns of an ignore file: comments (`#` as the first character) and blank
/// lines are skipped, each pattern is trimmed and cleaned, one leading `/` is removed.
pub fn parse_ignore_file(contents: &str) -> Vec<String> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut patterns = Vec::new();
    for line in contents.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        patterns.push(cleaned);
    }
    patterns
}

/// Go's `filepath.Clean` for slash-separated paths.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Pattern,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    One,
    /// `[...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: any number of whole directories, maybe none.
    Dirs,
    /// `**` at the end: anything.
    Any,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    cleaned: String,
    match_type: MatchType,
    tokens: Vec<Token>,
}

/// Compiled ignore patterns. Paths are relative to the context root, `/`-separated.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

impl IgnoreMatcher {
    /// Compiles patterns (as [`parse_ignore_file`] returns them). Fails on `!` alone and
    /// on malformed globs such as `[`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreMatcher, IgnoreError> {
        let mut compiled = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean_path(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(IgnoreError::LoneExclusion);
                }
                exclusion = true;
                p = rest.to_string();
            }
            validate_glob(&p).map_err(|detail| IgnoreError::BadPattern {
                pattern: p.clone(),
                detail,
            })?;
            let (match_type, tokens) = compile(&p);
            compiled.push(Pattern {
                exclusion,
                cleaned: p,
                match_type,
                tokens,
            });
        }
        Ok(IgnoreMatcher { patterns: compiled })
    }

    /// Reads an ignore file's contents and compiles its patterns.
    pub fn from_file_contents(contents: &str) -> Result<IgnoreMatcher, IgnoreError> {
        IgnoreMatcher::new(&parse_ignore_file(contents))
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern uses `!` (the caller must then walk into excluded
    /// directories, since a file below may be re-included).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context) is excluded. The context root `.` never is.
    pub fn matches(&self, path: &str) -> bool {
        let path = clean_path(path);
        if path == "." {
            return false;
        }
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&path);
            if !hit && parent != "." {
                let mut prefix_end = 0;
                for (i, dir) in parent_dirs.iter().enumerate() {
                    prefix_end += dir.len() + usize::from(i > 0);
                    if pattern.matches(&parent[..prefix_end]) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.match_type {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Pattern => run_nfa(&self.tokens, path),
        }
    }
}

/// Checks a glob as Go's `filepath.Match` would: classes must be closed, non-empty and
/// have well-formed ranges; a trailing `\` is an error.
fn validate_glob(p: &str) -> Result<(), String> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("trailing escape".to_string());
                }
                i += 2;
            }
            '[' => {
                let (_, next) = parse_class(&chars, i)?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Parses `[...]` starting at `chars[start] == '['`; returns the class and the index
/// after `]`.
#[allow(clippy::type_complexity)]
fn parse_class(chars: &[char], start: usize) -> Result<((bool, Vec<(char, char)>), usize), String> {
    let bad = || Err("bad character class".to_string());
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let read_char = |i: &mut usize| -> Option<char> {
        let mut c = *chars.get(*i)?;
        if c == '\\' {
            *i += 1;
            c = *chars.get(*i)?;
        } else if c == '-' || c == ']' {
            return None;
        }
        *i += 1;
        Some(c)
    };
    loop {
        match chars.get(i) {
            None => return bad(),
            Some(']') if !ranges.is_empty() => return Ok(((negated, ranges), i + 1)),
            Some(_) => {
                let Some(lo) = read_char(&mut i) else {
                    return bad();
                };
                let mut hi = lo;
                if chars.get(i) == Some(&'-') {
                    i += 1;
                    let Some(h) = read_char(&mut i) else {
                        return bad();
                    };
                    hi = h;
                }
                ranges.push((lo, hi));
            }
        }
    }
}

/// Compiles a cleaned pattern the way moby/patternmatcher classifies it: literal text is
/// an exact match, `X/**` a prefix match, `**X` a suffix match, the rest a pattern.
fn compile(p: &str) -> (MatchType, Vec<Token>) {
    let chars: Vec<char> = p.chars().collect();
    let mut tokens = Vec::new();
    let mut match_type = MatchType::Exact;
    let mut i = 0;
    let mut iteration = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1; // `**/` is treated as `**`
                }
                if i >= chars.len() {
                    if match_type == MatchType::Exact {
                        match_type = MatchType::Prefix;
                    } else {
                        tokens.push(Token::Any);
                        match_type = MatchType::Pattern;
                    }
                } else {
                    tokens.push(Token::Dirs);
                    match_type = MatchType::Pattern;
                }
                if iteration == 0 {
                    match_type = MatchType::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                match_type = MatchType::Pattern;
            }
            '?' => {
                tokens.push(Token::One);
                match_type = MatchType::Pattern;
            }
            '\\' => {
                if let Some(&n) = chars.get(i) {
                    i += 1;
                    tokens.push(Token::Literal(n));
                    match_type = MatchType::Pattern;
                } else {
                    tokens.push(Token::Literal('\\'));
                }
            }
            '[' => {
                match parse_class(&chars, i - 1) {
                    Ok(((negated, ranges), next)) => {
                        tokens.push(Token::Class { negated, ranges });
                        i = next;
                    }
                    Err(_) => tokens.push(Token::Literal('[')),
                }
                match_type = MatchType::Pattern;
            }
            c => tokens.push(Token::Literal(c)),
        }
        iteration += 1;
    }
    // A prefix/suffix pattern whose rest is not plain text is matched as a pattern.
    if match_type == MatchType::Suffix
        && tokens
            .iter()
            .skip(1)
            .any(|t| !matches!(t, Token::Literal(_)))
    {
        match_type = MatchType::Pattern;
    }
    if match_type == MatchType::Suffix && tokens.first() != Some(&Token::Dirs) {
        // `**` alone: tokens are empty, the suffix rule matches everything.
        tokens.insert(0, Token::Any);
    }
    (match_type, tokens)
}

/// Full-string match of the tokens against `s` by NFA simulation (linear, no
/// backtracking). State `k` means "tokens[..k] matched"; `Dirs` has an inner state for
/// "inside the directories, waiting for a `/`".
fn run_nfa(tokens: &[Token], s: &str) -> bool {
    let m = tokens.len();
    // states[0..=m]: positions; inner[k]: inside tokens[k] == Dirs.
    let mut states = vec![false; m + 1];
    let mut inner = vec![false; m];
    let close = |states: &mut Vec<bool>| {
        for k in 0..m {
            if states[k] && matches!(tokens[k], Token::Star | Token::Any | Token::Dirs) {
                states[k + 1] = true;
            }
        }
    };
    states[0] = true;
    close(&mut states);
    for c in s.chars() {
        let mut next = vec![false; m + 1];
        let mut next_inner = vec![false; m];
        let mut alive = false;
        for k in 0..m {
            if inner[k] {
                // `(.*/)?`: keep consuming; a `/` may also end the directories.
                if c != '\n' {
                    next_inner[k] = true;
                    alive = true;
                }
                if c == '/' {
                    next[k + 1] = true;
                    alive = true;
                }
            }
            if !states[k] {
                continue;
            }
            let step = match &tokens[k] {
                Token::Literal(l) => {
                    if *l == c {
                        next[k + 1] = true;
                    }
                    false
                }
                Token::One => {
                    if c != '/' {
                        next[k + 1] = true;
                    }
                    false
                }
                Token::Class { negated, ranges } => {
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    if inside != *negated {
                        next[k + 1] = true;
                    }
                    false
                }
                Token::Star => c != '/',
                Token::Any => c != '\n',
                Token::Dirs => {
                    if c != '\n' {
                        next_inner[k] = true;
                    }
                    if c == '/' {
                        next[k + 1] = true;
                    }
                    false
                }
            };
            if step {
                next[k] = true;
            }
        }
        alive |= next.iter().any(|&b| b) || next_inner.iter().any(|&b| b);
        if !alive {
            return false;
        }
        close(&mut next);
        states = next;
        inner = next_inner;
    }
    states[m]
}
