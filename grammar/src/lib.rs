//! gcr-grammar: the Containerfile language, pure (strings in, values or positioned errors
//! out; no I/O, no async).
//!
//! * [`syntax`]: the pest-based line parser (BuildKit-conformant syntax tree and dump).
//! * [`shell`]: the shell-word lexer and variable expansion.
//! * [`ignore`]: `.containerignore` / `.dockerignore` matching.
#![deny(unsafe_code)]

pub mod ast;
pub mod check;
pub mod ignore;
mod quote;
pub mod shell;
pub mod syntax;

pub use ast::{
    parse, parse_go_duration, parse_mount, type_instruction, ArgDefinition, CacheSharing,
    CommandLine, Containerfile, CopyInstruction, CopySource, FromInstruction, Healthcheck,
    HealthcheckCommand, Instruction, InstructionKind, KeyValue, Mount, MountType, NetworkMode,
    RunInstruction, SecurityMode, Stage,
};
pub use check::{check_containerfile, platform_args, Diagnostic, Severity};
pub use ignore::{
    clean_path, ignore_file_candidates, parse_ignore_file, pick_ignore_file, IgnoreError,
    IgnoreFileCandidate, IgnoreFileLocation, IgnoreMatcher,
};
pub use quote::go_quote;
pub use shell::{EnvLookup, ExpandError, Expansion, NoEnv, ShellLexer};
pub use syntax::{
    parse_heredoc_marker, parse_syntax, parse_words, Arg, Directive, Directives, Heredoc,
    HeredocMarker, ParseError, RawFlag, RawInstruction, SyntaxTree,
};
