//! The line-level Containerfile parser: BuildKit's `parser.Parse`.
//!
//! It turns source text into a [`SyntaxTree`]: parser directives plus one
//! [`RawInstruction`] per logical line, with its keyword, `--flags`, argument chain, heredoc
//! bodies and source positions. Instructions are not validated here (an unknown keyword
//! is kept); [`crate::ast`] types them. [`SyntaxTree::dump`] prints BuildKit's test format.

use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

use crate::quote::go_quote;
use crate::shell::{NoEnv, ShellLexer};

#[derive(Parser)]
#[grammar = "containerfile.pest"]
struct Grammar;

/// A parse failure at a position in the source. Lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    /// The last line of the instruction the error belongs to.
    pub end_line: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl ParseError {
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            column,
            end_line: line,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> ParseError {
        self.hint = Some(hint.into());
        self
    }
}

/// A parser directive (`# syntax=`, `# escape=`, `# check=`) and the line it was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub value: String,
    pub line: usize,
}

/// The parser directives at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directives {
    pub syntax: Option<Directive>,
    pub escape: Option<Directive>,
    pub check: Option<Directive>,
}

/// A heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, unquoted (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The body: raw lines, each with its `\n`, without the delimiter line. Leading tabs
    /// are still present when `chomp` is set; [`Heredoc::chomped_content`] removes them.
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body when it is used.
    pub chomp: bool,
    /// The file descriptor number written before `<<` (0 when absent).
    pub file_descriptor: u32,
    /// The line of the first body line.
    pub start_line: usize,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// One node of an instruction's argument chain (BuildKit's `Node.Next`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Word(String),
    /// ONBUILD's inner instruction.
    Instruction(Box<RawInstruction>),
}

/// A `--flag` word as written after the keyword, quotes and escapes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    /// The whole word with its leading `--` (`--mount=type=cache,target=/x`).
    pub text: String,
    /// Byte offset of the word in the instruction's `original` text.
    pub offset: usize,
}

/// Maps a byte offset in a logical line to its physical line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    logical: usize,
    line: usize,
    column: usize,
}

/// One instruction as the line parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInstruction {
    /// The keyword exactly as written (`Run`).
    pub keyword: String,
    /// The keyword lowercased (`run`).
    pub command: String,
    /// The logical line (continuations joined, comments removed), as written.
    pub original: String,
    pub flags: Vec<RawFlag>,
    pub args: Vec<Arg>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// Byte offset of the arguments (after keyword and flags) in `original`.
    pub rest_offset: usize,
    pub heredocs: Vec<Heredoc>,
    /// First and last physical line, heredoc bodies included.
    pub start_line: usize,
    pub end_line: usize,
    origin: usize,
    /// Where the logical line starts, and where each continuation line's text begins.
    first_piece: Piece,
    more_pieces: Vec<Piece>,
}

impl RawInstruction {
    /// The words of the argument chain (ONBUILD's nested instruction is skipped).
    pub fn words(&self) -> Vec<&str> {
        self.args
            .iter()
            .filter_map(|a| match a {
                Arg::Word(w) => Some(w.as_str()),
                Arg::Instruction(_) => None,
            })
            .collect()
    }

    /// Like [`RawInstruction::words`], without collecting.
    pub fn word_iter(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(|a| match a {
            Arg::Word(w) => Some(w.as_str()),
            Arg::Instruction(_) => None,
        })
    }

    /// The text after the keyword and flags, trimmed.
    pub fn rest(&self) -> &str {
        self.original.get(self.rest_offset..).unwrap_or("").trim()
    }

    /// Line and column (1-based) of a byte offset in `original`.
    pub fn position_of(&self, offset: usize) -> (usize, usize) {
        let logical = self.origin + offset;
        let piece = self
            .more_pieces
            .iter()
            .rev()
            .find(|p| p.logical <= logical)
            .unwrap_or(&self.first_piece);
        let full = self.full_logical_prefix(piece.logical, logical);
        (piece.line, piece.column + full + 1)
    }

    /// Characters between two logical offsets, computed from `original` (which starts at
    /// `origin`); offsets before `origin` count as zero.
    fn full_logical_prefix(&self, from: usize, to: usize) -> usize {
        let from = from.saturating_sub(self.origin);
        let to = to.saturating_sub(self.origin);
        self.original
            .get(from.min(to)..to)
            .map(|s| s.chars().count())
            .unwrap_or(0)
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let (line, column) = self.position_of(offset);
        ParseError {
            line,
            column,
            end_line: self.end_line,
            message: message.into(),
            hint: None,
        }
    }

    /// A positioned error for this instruction at byte `offset` of `original`.
    pub fn error_at(&self, offset: usize, message: impl Into<String>) -> ParseError {
        self.error(offset, message)
    }

    /// BuildKit's dump of this instruction (without the surrounding parentheses).
    pub fn dump(&self) -> String {
        let mut out = self.command.clone();
        if !self.flags.is_empty() {
            out.push_str(" [");
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(&f.text)).collect();
            out.push_str(&quoted.join(" "));
            out.push(']');
        }
        for arg in &self.args {
            out.push(' ');
            match arg {
                Arg::Word(w) => out.push_str(&go_quote(w)),
                Arg::Instruction(inner) => {
                    out.push('(');
                    out.push_str(&inner.dump());
                    out.push(')');
                }
            }
        }
        out.trim().to_string()
    }
}

/// A parsed Containerfile before instructions are typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxTree {
    pub directives: Directives,
    /// The escape token in force (`\` unless `# escape=`` ` ``).
    pub escape: char,
    pub instructions: Vec<RawInstruction>,
    /// Lines that were blank or whitespace inside a continuation (BuildKit warns).
    pub empty_continuation_lines: Vec<usize>,
}

impl SyntaxTree {
    /// BuildKit's dump format: one `(instruction)` line each, `\n`-terminated.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for instruction in &self.instructions {
            out.push('(');
            out.push_str(&instruction.dump());
            out.push_str(")\n");
        }
        out
    }
}

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

struct DirectiveParser {
    done: bool,
    directives: Directives,
}

impl DirectiveParser {
    /// Offers a (left-trimmed) line; returns the new escape token if it set one.
    fn offer(&mut self, line: &str, line_no: usize) -> Result<Option<char>, ParseError> {
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

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Removes a line-continuation escape token at the end of `line`. Returns the kept text
/// and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    match before.chars().next_back() {
        None => ("", false),
        // An escaped escape token is literal: no continuation.
        Some(c) if c == escape => (line, true),
        Some(_) => (before, false),
    }
}

/// Physical lines (without `\n`, keeping `\r`), read forward one at a time. `index` is
/// the number of lines read so far, i.e. the 1-based number of the last line returned.
struct PhysicalLines<'a> {
    rest: Option<&'a str>,
    index: usize,
}

impl<'a> PhysicalLines<'a> {
    fn new(source: &'a str) -> PhysicalLines<'a> {
        PhysicalLines {
            rest: (!source.is_empty()).then_some(source),
            index: 0,
        }
    }

    fn next_line(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let line = match rest.find('\n') {
            Some(end) => {
                let next = &rest[end + 1..];
                // A final `\n` does not start another line.
                self.rest = (!next.is_empty()).then_some(next);
                &rest[..end]
            }
            None => {
                self.rest = None;
                rest
            }
        };
        self.index += 1;
        Some(line)
    }
}

/// Parses a Containerfile into its syntax tree (BuildKit's line parser).
pub fn parse_syntax(source: &str) -> Result<SyntaxTree, ParseError> {
    let mut lines = PhysicalLines::new(source);
    let mut escape = '\\';
    let mut directives = DirectiveParser {
        done: false,
        directives: Directives::default(),
    };
    let mut instructions = Vec::new();
    let mut empty_continuation_lines = Vec::new();
    while let Some(mut raw) = lines.next_line() {
        let index = lines.index;
        let mut bom_chars = 0;
        if index == 1 {
            if let Some(stripped) = raw.strip_prefix('\u{feff}') {
                raw = stripped;
                bom_chars = 1;
            }
        }
        let line_no = index;
        let token = trim_newline(raw);
        let trimmed = token.trim_start();
        let lead_columns = token[..token.len() - trimmed.len()].chars().count() + bom_chars;
        if let Some(new_escape) = directives.offer(trimmed, line_no)? {
            escape = new_escape;
        }
        let first = if trimmed.starts_with('#') {
            ""
        } else {
            trimmed
        };
        let (first_piece, mut ended) = trim_continuation(first, escape);
        if ended && first_piece.is_empty() {
            continue;
        }
        let start_line = line_no;
        let mut logical = String::from(first_piece);
        let first_piece = Piece {
            logical: 0,
            line: line_no,
            column: lead_columns,
        };
        let mut pieces = Vec::new();
        let mut last_line = line_no;
        while !ended {
            let Some(raw) = lines.next_line() else {
                break;
            };
            let index = lines.index;
            last_line = index;
            let token = trim_newline(raw);
            if is_comment(raw) {
                continue;
            }
            if token.trim_start().is_empty() {
                empty_continuation_lines.push(index);
                continue;
            }
            let (piece, end) = trim_continuation(token, escape);
            ended = end;
            pieces.push(Piece {
                logical: logical.len(),
                line: index,
                column: 0,
            });
            logical.push_str(piece);
        }
        let mut instruction =
            parse_logical_line(logical, escape, 0, (first_piece, pieces), start_line, 0)?;
        instruction.end_line = last_line;
        if can_contain_heredoc(&instruction) && instruction.original.contains("<<") {
            let markers = heredocs_from_line(&instruction.original).map_err(|message| {
                let mut e = instruction.error(0, message);
                e.line = start_line;
                e
            })?;
            for marker in markers {
                let body_start = lines.index + 1;
                let mut content = String::new();
                let mut terminated = false;
                while let Some(raw) = lines.next_line() {
                    let mut candidate = trim_newline(raw);
                    if marker.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == marker.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                    content.push('\n');
                }
                if !terminated {
                    return Err(ParseError {
                        line: start_line,
                        column: 1,
                        end_line: lines.index,
                        message: format!("unterminated heredoc {}", marker.name),
                        hint: Some(format!(
                            "end the heredoc with a line that is exactly `{}`",
                            marker.name
                        )),
                    });
                }
                instruction.heredocs.push(Heredoc {
                    name: marker.name,
                    content,
                    expand: marker.expand,
                    chomp: marker.chomp,
                    file_descriptor: marker.file_descriptor,
                    start_line: body_start,
                });
            }
            instruction.end_line = lines.index;
        }
        instructions.push(instruction);
    }
    if instructions.is_empty() {
        return Err(ParseError::new(1, 1, "file with no instructions")
            .with_hint("a Containerfile needs at least a FROM instruction"));
    }
    Ok(SyntaxTree {
        directives: directives.directives,
        escape,
        instructions,
        empty_continuation_lines,
    })
}

fn can_contain_heredoc(instruction: &RawInstruction) -> bool {
    let mut node = instruction;
    if node.command == "onbuild" {
        if let Some(Arg::Instruction(inner)) = node.args.first() {
            node = inner;
        }
    }
    matches!(node.command.as_str(), "run" | "copy" | "add") && !node.json
}

/// A heredoc marker (`<<EOF`, `3<<-"EOF"`) found in an instruction line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocMarker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub file_descriptor: u32,
}

/// Heredoc markers in a logical line, in order.
fn heredocs_from_line(line: &str) -> Result<Vec<HeredocMarker>, String> {
    let mut lexer = ShellLexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset = true;
    // Like BuildKit, a line that does not lex as shell words has no heredocs.
    let words = lexer.process_words(line, &NoEnv).unwrap_or_default();
    let mut markers = Vec::new();
    for word in words {
        if let Some(marker) = parse_heredoc_marker(&word)? {
            markers.push(marker);
        }
    }
    Ok(markers)
}

/// Parses one shell word as a heredoc marker: `^(\d*)<<(-?)\s*([^<]*)$`, the tail
/// unquoted to the delimiter. `Ok(None)` when the word is not a marker; an error for
/// unbalanced quotes in the delimiter.
pub fn parse_heredoc_marker(word: &str) -> Result<Option<HeredocMarker>, String> {
    if !word.contains("<<") {
        return Ok(None);
    }
    let Ok(mut pairs) = Grammar::parse(Rule::heredoc_marker, word) else {
        return Ok(None);
    };
    let Some(marker) = pairs.next() else {
        return Ok(None);
    };
    let mut fd = 0u32;
    let mut chomp = false;
    let mut tail = "";
    for part in marker.into_inner() {
        match part.as_rule() {
            Rule::heredoc_fd => fd = part.as_str().parse().unwrap_or(0),
            Rule::heredoc_chomp => chomp = true,
            Rule::heredoc_name => tail = part.as_str(),
            _ => {}
        }
    }
    if tail.is_empty() {
        return Ok(None);
    }
    if !tail.contains(['\'', '"', '\\', '$']) && !tail.contains(char::is_whitespace) {
        // Nothing to unquote: the tail is the delimiter.
        return Ok(Some(HeredocMarker {
            name: tail.to_string(),
            expand: true,
            chomp,
            file_descriptor: fd,
        }));
    }
    let mut lexer = ShellLexer::new('\\');
    lexer.skip_unset = true;
    let words = lexer
        .process_words(tail, &NoEnv)
        .map_err(|e| format!("invalid heredoc delimiter: {e}"))?;
    if words.len() != 1 {
        return Ok(None);
    }
    lexer.raw_quotes = true;
    let raw_words = lexer
        .process_words(tail, &NoEnv)
        .map_err(|e| format!("invalid heredoc delimiter: {e}"))?;
    if raw_words.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {tail}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw_words[0]);
    Ok(Some(HeredocMarker {
        name: words[0].clone(),
        expand,
        chomp,
        file_descriptor: fd,
    }))
}

/// Go's `strings.ToLower`: simple per-character lowercase mapping.
fn go_lowercase(s: &str) -> String {
    s.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

/// BuildKit's `[\t\v\f\r ]`.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{0B}' | '\u{0C}' | '\r')
}

/// The keyword, decoded flag words and the offset where the rest starts, all relative to
/// `line`.
struct Split {
    keyword: (usize, usize),
    flags: Vec<RawFlag>,
    rest_offset: usize,
}

/// Splits keyword, flags and rest. Lines whose arguments do not start with `--` have no
/// flags, and their split is plain (keyword up to the first separator); only lines with
/// flags go through the grammar. `split_with_grammar` gives the same result for every
/// line (a test checks that), it is just slower per line.
fn split_instruction(line: &str) -> Result<Split, String> {
    let keyword_end = line.find(is_separator).unwrap_or(line.len());
    let after = &line[keyword_end..];
    let args = after.trim_start();
    if args.starts_with("--") {
        return split_with_grammar(line);
    }
    let rest_offset = if after.starts_with(is_separator) {
        line.len() - after.trim_start_matches(is_separator).len()
    } else {
        line.len()
    };
    Ok(Split {
        keyword: (0, keyword_end),
        flags: Vec::new(),
        rest_offset,
    })
}

fn split_with_grammar(line: &str) -> Result<Split, String> {
    let pairs =
        Grammar::parse(Rule::line, line).map_err(|e| format!("cannot parse instruction: {e}"))?;
    let mut split = Split {
        keyword: (0, 0),
        flags: Vec::new(),
        rest_offset: line.len(),
    };
    for instruction in pairs {
        if instruction.as_rule() != Rule::instruction {
            continue;
        }
        // The grammar matches keyword and flags; the arguments follow.
        split.rest_offset = instruction.as_span().end();
        for part in instruction.into_inner() {
            match part.as_rule() {
                Rule::keyword => split.keyword = (part.as_span().start(), part.as_span().end()),
                Rule::flags => {
                    for flag in part.into_inner() {
                        let end = flag.as_span().end();
                        let offset = flag.as_span().start();
                        let text = decode_flag(flag);
                        if text == "--" {
                            // `--` ends the flags; what follows is the rest.
                            split.rest_offset = end;
                            return Ok(split);
                        }
                        split.flags.push(RawFlag { text, offset });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(split)
}

fn decode_flag(flag: Pair<'_, Rule>) -> String {
    let mut out = String::new();
    fn walk(pair: Pair<'_, Rule>, out: &mut String) {
        match pair.as_rule() {
            Rule::flag_text | Rule::dq_text | Rule::sq_text | Rule::escaped_char => {
                out.push_str(pair.as_str())
            }
            _ => {
                for inner in pair.into_inner() {
                    walk(inner, out);
                }
            }
        }
    }
    for part in flag.into_inner() {
        walk(part, &mut out);
    }
    out
}

/// Parses one logical line (already joined) into an instruction.
fn parse_logical_line(
    line: String,
    escape: char,
    origin: usize,
    (first_piece, more_pieces): (Piece, Vec<Piece>),
    start_line: usize,
    depth: usize,
) -> Result<RawInstruction, ParseError> {
    let trimmed_start = line.len() - line.trim_start().len();
    let trimmed_end = line.trim_end().len().max(trimmed_start);
    let line_len = line.len();
    let mut instruction = RawInstruction {
        keyword: String::new(),
        command: String::new(),
        original: line,
        flags: Vec::new(),
        args: Vec::new(),
        json: false,
        rest_offset: line_len,
        heredocs: Vec::new(),
        start_line,
        end_line: start_line,
        origin,
        first_piece,
        more_pieces,
    };
    let original = std::mem::take(&mut instruction.original);
    let result = fill_instruction(
        &mut instruction,
        &original,
        (trimmed_start, trimmed_end),
        escape,
        depth,
    );
    instruction.original = original;
    match result {
        Ok(()) => Ok(instruction),
        Err(FillError::At(offset, message)) => Err(instruction.error(offset, message)),
        Err(FillError::Ready(e)) => Err(e),
    }
}

/// An error found while `original` is lent out; positioned once it is back.
enum FillError {
    At(usize, String),
    Ready(ParseError),
}

fn fill_instruction(
    instruction: &mut RawInstruction,
    line: &str,
    (trimmed_start, trimmed_end): (usize, usize),
    escape: char,
    depth: usize,
) -> Result<(), FillError> {
    let trimmed = &line[trimmed_start..trimmed_end];
    let origin = instruction.origin;
    let start_line = instruction.start_line;
    let split = split_instruction(trimmed).map_err(|m| FillError::At(0, m))?;
    instruction.keyword = trimmed[split.keyword.0..split.keyword.1].to_string();
    instruction.command = go_lowercase(&instruction.keyword);
    instruction.flags = split
        .flags
        .into_iter()
        .map(|f| RawFlag {
            text: f.text,
            offset: f.offset + trimmed_start,
        })
        .collect();
    let rest_raw = &trimmed[split.rest_offset.min(trimmed.len())..];
    let rest = rest_raw.trim();
    instruction.rest_offset =
        trimmed_start + split.rest_offset + (rest_raw.len() - rest_raw.trim_start().len());
    let rest_offset = instruction.rest_offset;
    match instruction.command.as_str() {
        "from" | "expose" => instruction.args = split_whitespace(rest),
        "add" | "copy" | "volume" => match parse_json_array(rest) {
            Json::Array(items) => {
                instruction.args = items.into_iter().map(Arg::Word).collect();
                instruction.json = true;
            }
            Json::NotStrings => {
                return Err(FillError::At(rest_offset, NOT_STRING_ARRAY.to_string()));
            }
            Json::Other => instruction.args = split_whitespace(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            let (args, json) =
                parse_maybe_json(rest).map_err(|m| FillError::At(rest_offset, m.to_string()))?;
            instruction.args = args;
            instruction.json = json;
        }
        "healthcheck" => {
            if let Some(sep) = rest.find(char::is_whitespace) {
                let kind = &rest[..sep];
                let command = rest[sep..].trim_start();
                let (args, json) = parse_maybe_json(command)
                    .map_err(|m| FillError::At(rest_offset, m.to_string()))?;
                instruction.args = std::iter::once(Arg::Word(kind.to_string()))
                    .chain(args)
                    .collect();
                instruction.json = json;
            } else if !rest.is_empty() {
                instruction.args = vec![Arg::Word(rest.to_string())];
            }
        }
        "env" | "label" => {
            let key = instruction.command.to_uppercase();
            instruction.args = parse_name_value(rest, &key, escape)
                .map_err(|m| FillError::At(rest_offset, m.to_string()))?;
        }
        "arg" => {
            instruction.args = word_slices(rest, escape)
                .into_iter()
                .map(|w| Arg::Word(w.to_string()))
                .collect();
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                instruction.args = vec![Arg::Word(rest.to_string())];
            }
        }
        "onbuild" => {
            if depth >= MAX_ONBUILD_NESTING {
                // BuildKit rejects any chaining later; stop before the recursion gets deep.
                return Err(FillError::At(
                    rest_offset,
                    "ONBUILD instructions nested too deeply".to_string(),
                ));
            }
            if !rest.is_empty() {
                let inner = parse_logical_line(
                    rest.to_string(),
                    escape,
                    origin + rest_offset,
                    (
                        instruction.first_piece.clone(),
                        instruction.more_pieces.clone(),
                    ),
                    start_line,
                    depth + 1,
                )
                .map_err(FillError::Ready)?;
                instruction.args = vec![Arg::Instruction(Box::new(inner))];
            }
        }
        _ => instruction.args = vec![Arg::Word(String::new())],
    }
    Ok(())
}

/// How many ONBUILDs may nest in one line (`ONBUILD ONBUILD ...`) before parsing stops.
const MAX_ONBUILD_NESTING: usize = 16;

const NOT_STRING_ARRAY: &str = "dockerfile JSON array must contain only strings";

fn split_whitespace(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_separator)
        .filter(|w| !w.is_empty())
        .map(|w| Arg::Word(w.to_string()))
        .collect()
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<Arg>, bool), &'static str> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json_array(rest) {
        Json::Array(items) => Ok((items.into_iter().map(Arg::Word).collect(), true)),
        Json::NotStrings => Err(NOT_STRING_ARRAY),
        Json::Other => Ok((vec![Arg::Word(rest.to_string())], false)),
    }
}

enum Json {
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
fn parse_json_array(rest: &str) -> Json {
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
fn word_slices(rest: &str, escape: char) -> Vec<&str> {
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
fn parse_name_value(rest: &str, key: &str, escape: char) -> Result<Vec<Arg>, String> {
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

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("foo \\", '\\'), ("foo ", false));
        assert_eq!(
            trim_continuation("trailing\\\\", '\\'),
            ("trailing\\\\", true)
        );
        assert_eq!(trim_continuation("\\  ", '\\'), ("", false));
        assert_eq!(trim_continuation("x", '\\'), ("x", true));
    }

    #[test]
    fn flags_and_terminator() {
        let tree = parse_syntax("COPY --a=\"b c\" -- --d /x\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.dump(), "(copy [\"--a=b c\"] \"--d\" \"/x\")\n");
        // Flags always take `\\` as their escape, whatever the escape directive says.
        let src = "# escape=`\nFROM x\nRUN --mount=target=C:\\cache,x=a\\\\b --y=`q dir\n";
        let tree = parse_syntax(src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tree.instructions[1].dump(),
            "run [\"--mount=target=C:cache,x=a\\\\b\" \"--y=`q\"] \"dir\""
        );
    }

    #[test]
    fn plain_split_matches_the_grammar() {
        let lines = [
            "RUN echo hi",
            "RUN",
            "CMD [\"a\"]",
            "ENV \u{a0}A=b",
            "RUN \t  \u{2003}x  y",
            "COPY --from=a --chown=\"x y\" a b",
            "COPY -- a b",
            "RUN --mount=type=cache,target=/x\\ y make",
            "HEALTHCHECK --interval=5s CMD x",
            "X\u{a0}Y z",
            "",
        ];
        for line in lines {
            let fast = split_instruction(line).unwrap_or_else(|e| panic!("{e}"));
            let slow = split_with_grammar(line).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(fast.keyword, slow.keyword, "{line:?}");
            assert_eq!(fast.flags, slow.flags, "{line:?}");
            assert_eq!(fast.rest_offset, slow.rest_offset, "{line:?}");
        }
    }

    #[test]
    fn heredoc_bodies_are_consumed() {
        let src = "FROM a\nCOPY <<X <<Y /dest\nY\nX\nX\nY\nRUN <<-EOT\n\tfoo\n\tEOT\n";
        let tree = parse_syntax(src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.instructions.len(), 3);
        let copy = &tree.instructions[1];
        assert_eq!(copy.heredocs[0].content, "Y\n");
        assert_eq!(copy.heredocs[1].content, "X\n");
        assert_eq!(copy.end_line, 6);
        let run = &tree.instructions[2];
        assert_eq!(run.heredocs[0].chomped_content(), "foo\n");
        assert!(parse_syntax("FROM a\nRUN <<EOF\nnope\n").is_err());
    }

    #[test]
    fn deep_onbuild_chains_are_an_error_not_a_crash() {
        let deep = format!("FROM x\n{}RUN y\n", "ONBUILD ".repeat(100_000));
        assert!(parse_syntax(&deep).is_err());
        let tree =
            parse_syntax("FROM x\nONBUILD ONBUILD RUN y\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.instructions[1].dump(), "onbuild (onbuild (run \"y\"))");
    }

    #[test]
    fn deep_json_is_handled_without_recursion() {
        let open = "[".repeat(100_000);
        let tree = parse_syntax(&format!("CMD {open}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!tree.instructions[0].json);
        let closed = format!("CMD {open}{}\n", "]".repeat(100_000));
        assert!(parse_syntax(&closed).is_err());
    }

    #[test]
    fn which_lines_take_heredocs() {
        let count = |src: &str| -> Vec<usize> {
            parse_syntax(src)
                .unwrap_or_else(|e| panic!("{src:?}: {e}"))
                .instructions
                .iter()
                .map(|i| i.heredocs.len())
                .collect()
        };
        assert_eq!(count("RUN <<  EOF  > foo\nx\nEOF\n"), vec![1]);
        assert_eq!(count("RUN \"<<NOHEREDOC\"\nRUN '<<EOF'\n"), vec![0, 0]);
        assert_eq!(count("RUN [\"<<EOF\"]\nUSER <<X\n"), vec![0, 0]);
        assert_eq!(count("ONBUILD RUN <<EOF\nbody\nEOF\n"), vec![1]);
        assert_eq!(count("ADD <<a <<b /d\n1\na\n2\nb\n"), vec![2]);
        assert_eq!(count("RUN 3<<EMPTY2\nEMPTY2\n"), vec![1]);
        // A body is raw: comments, continuations and instruction words stay in it.
        let tree = parse_syntax("RUN <<EOF\n# internal comment\nFROM x \\\nEOF\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.instructions.len(), 1);
        assert_eq!(
            tree.instructions[0].heredocs[0].content,
            "# internal comment\nFROM x \\\n"
        );
        assert_eq!(tree.instructions[0].heredocs[0].start_line, 2);
        assert_eq!(tree.instructions[0].end_line, 4);
    }

    #[test]
    fn heredoc_markers() {
        let m = |w: &str| parse_heredoc_marker(w);
        let eof = m("<<EOF")
            .ok()
            .flatten()
            .map(|h| (h.name, h.expand, h.chomp));
        assert_eq!(eof, Some(("EOF".to_string(), true, false)));
        let q = m("<<-'EOF'")
            .ok()
            .flatten()
            .map(|h| (h.name, h.expand, h.chomp));
        assert_eq!(q, Some(("EOF".to_string(), false, true)));
        assert_eq!(
            m("<<eo\\'f").ok().flatten().map(|h| (h.name, h.expand)),
            Some(("eo'f".to_string(), true))
        );
        assert_eq!(
            m("<<'e'o\\'f").ok().flatten().map(|h| (h.name, h.expand)),
            Some(("eo'f".to_string(), false))
        );
        assert_eq!(
            m("<<'one two'").ok().flatten().map(|h| h.name),
            Some("one two".to_string())
        );
        assert_eq!(
            m("<<$EOF").ok().flatten().map(|h| h.name),
            Some("$EOF".to_string())
        );
        assert_eq!(
            m("3<<EMPTY2").ok().flatten().map(|h| h.file_descriptor),
            Some(3)
        );
        assert_eq!(
            m("<< -EOF").ok().flatten().map(|h| (h.name, h.chomp)),
            Some(("-EOF".to_string(), false))
        );
        assert_eq!(m("<<EO\"F\"").ok().flatten().map(|h| h.expand), Some(false));
        for not in ["<<", "<<-", "<EOF", "<<<EOF", "EOF", "", "<<EOF sh"] {
            assert_eq!(m(not), Ok(None), "{not}");
        }
        for bad in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(m(bad).is_err(), "{bad}");
        }
    }
}
