//! The pest grammar (containerfile.pest): instruction lines with flags, JSON arrays and
//! heredoc markers.

use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "containerfile.pest"]
pub(super) struct Grammar;
