//! gcr-grammar: the Containerfile language, pure (strings in, values or positioned errors
//! out; no I/O, no async).
//!
//! * [`syntax`]: the pest-based line parser (BuildKit-conformant syntax tree and dump).
//! * [`shell`]: the shell-word lexer and variable expansion.
//! * [`ignore`]: `.containerignore` / `.dockerignore` matching.

mod quote;
pub mod shell;
pub mod syntax;

pub use quote::go_quote;
pub use shell::{EnvLookup, ExpandError, Expansion, NoEnv, ShellLexer};
pub use syntax::{
    parse_heredoc_marker, parse_syntax, parse_words, Arg, Directive, Directives, Heredoc,
    HeredocMarker, ParseError, RawFlag, RawInstruction, SyntaxTree,
};
