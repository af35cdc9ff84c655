//! The line-level Containerfile parser: BuildKit's `parser.Parse`.
//!
//! It turns source text into a [`SyntaxTree`]: parser directives plus one
//! [`RawInstruction`] per logical line, with its keyword, `--flags`, argument chain, heredoc
//! bodies and source positions. Instructions are not validated here (an unknown keyword
//! is kept); [`crate::ast`] types them. [`SyntaxTree::dump`] prints BuildKit's test format.
//!
//! * `tree`: the syntax tree and [`ParseError`].
//! * `file`: [`parse_syntax`], physical lines to logical ones; `directives` and `heredoc`
//!   (markers and bodies) are read there.
//! * `line`: one logical line split into keyword, flags and arguments; the arguments by
//!   kind in `json` (exec form) and `words` (word lists, ENV/LABEL pairs).
//! * `grammar`: the pest grammar those use.

mod directives;
mod file;
mod grammar;
mod heredoc;
mod json;
mod line;
mod tree;
mod words;

pub use file::parse_syntax;
pub use heredoc::{parse_heredoc_marker, HeredocMarker};
pub use tree::{
    Arg, Directive, Directives, Heredoc, ParseError, RawFlag, RawInstruction, SyntaxTree,
};
pub use words::parse_words;
