//! A Containerfile typed instruction by instruction and grouped into build stages.

use super::instruction::type_instruction;
use super::tree::{Containerfile, Instruction, InstructionKind, Stage};
use crate::syntax::{parse_syntax, ParseError};

/// Parses and types a Containerfile. Fails on the first error (syntax, unknown
/// instruction or flag, bad value, instruction before FROM).
pub fn parse(source: &str) -> Result<Containerfile, ParseError> {
    let tree = parse_syntax(source)?;
    // Size every stage's list up front: instructions are large, regrowing copies them.
    let mut stage_sizes = Vec::new();
    for raw in &tree.instructions {
        if raw.command == "from" {
            stage_sizes.push(0usize);
        } else if let Some(size) = stage_sizes.last_mut() {
            *size += 1;
        }
    }
    // Allocated together, before typing: big allocations are cheaper while the allocator
    // holds few freed small blocks.
    let mut stage_lists = stage_sizes
        .iter()
        .map(|&n| Vec::with_capacity(n))
        .collect::<Vec<Vec<Instruction>>>()
        .into_iter();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::with_capacity(stage_sizes.len());
    for raw in tree.instructions {
        let instruction = type_instruction(raw)?;
        match (&instruction.kind, stages.last_mut()) {
            (InstructionKind::From(_), _) => stages.push(Stage {
                index: stages.len(),
                from: instruction,
                instructions: stage_lists.next().unwrap_or_default(),
            }),
            (_, Some(stage)) => stage.instructions.push(instruction),
            (InstructionKind::Arg(_), None) => meta_args.push(instruction),
            (_, None) => return Err(before_from_error(&instruction)),
        }
    }
    if stages.is_empty() {
        return Err(no_from_error());
    }
    Ok(Containerfile {
        directives: tree.directives,
        escape: tree.escape,
        meta_args,
        stages,
        empty_continuation_lines: tree.empty_continuation_lines,
    })
}

pub(crate) fn before_from_error(instruction: &Instruction) -> ParseError {
    instruction
        .raw
        .error_at(
            0,
            format!("{} comes before the first FROM", instruction.name()),
        )
        .with_hint("only ARG may come before the first FROM; add a FROM line above it")
}

pub(crate) fn no_from_error() -> ParseError {
    ParseError::new(1, 1, "no FROM instruction")
        .with_hint("a Containerfile needs at least one stage: FROM <image>")
}
