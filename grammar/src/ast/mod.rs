//! The typed Containerfile: every instruction with its flags parsed and validated, grouped
//! into build stages. Built from the [`crate::syntax`] tree by [`parse`].
//!
//! Values are kept as written (not variable-expanded): expansion depends on build
//! arguments and the stage's environment, which the builder (or `--check`) supplies
//! through [`crate::shell::ShellLexer`]. Every instruction keeps its
//! [`RawInstruction`](crate::syntax::RawInstruction) for positions, the original text and
//! heredoc bodies.
//!
//! * `tree`: the typed tree (stages, instructions and their values).
//! * `stages`: [`parse`], typing a file and grouping it into stages.
//! * `instruction`: [`type_instruction`], one instruction by its keyword; RUN (`run`),
//!   COPY/ADD (`copy`) and HEALTHCHECK (`healthcheck`) have modules of their own.
//! * `flags`: the `--flag` words an instruction accepts; `usage`: error hints.

mod copy;
mod flags;
mod healthcheck;
mod instruction;
mod run;
mod stages;
mod tree;
mod usage;

pub use healthcheck::parse_go_duration;
pub use instruction::type_instruction;
pub use run::parse_mount;
pub use stages::parse;
pub(crate) use stages::{before_from_error, no_from_error};
pub use tree::{
    ArgDefinition, CacheSharing, CommandLine, Containerfile, CopyInstruction, CopySource,
    FromInstruction, Healthcheck, HealthcheckCommand, Instruction, InstructionKind, KeyValue,
    Mount, MountType, NetworkMode, RunInstruction, SecurityMode, Stage,
};
