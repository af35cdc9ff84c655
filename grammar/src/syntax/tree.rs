//! The syntax tree: directives, raw instructions with their flags, arguments, heredoc
//! bodies and source positions, and parse errors.

use crate::quote::go_quote;

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
pub(super) struct Piece {
    pub(super) logical: usize,
    pub(super) line: usize,
    pub(super) column: usize,
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
    pub(super) origin: usize,
    /// Where the logical line starts, and where each continuation line's text begins.
    pub(super) first_piece: Piece,
    pub(super) more_pieces: Vec<Piece>,
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

    pub(super) fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
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
