//! One logical line: keyword, `--flags` and the arguments, split as the keyword says.

use pest::iterators::Pair;
use pest::Parser;

use super::grammar::{Grammar, Rule};
use super::json::{parse_json_array, parse_maybe_json, Json, NOT_STRING_ARRAY};
use super::tree::{Arg, ParseError, Piece, RawFlag, RawInstruction};
use super::words::{is_separator, parse_name_value, split_whitespace, word_slices};

/// Go's `strings.ToLower`: simple per-character lowercase mapping.
fn go_lowercase(s: &str) -> String {
    s.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
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
pub(super) fn parse_logical_line(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_syntax;

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
    fn deep_onbuild_chains_are_an_error_not_a_crash() {
        let deep = format!("FROM x\n{}RUN y\n", "ONBUILD ".repeat(100_000));
        assert!(parse_syntax(&deep).is_err());
        let tree =
            parse_syntax("FROM x\nONBUILD ONBUILD RUN y\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.instructions[1].dump(), "onbuild (onbuild (run \"y\"))");
    }
}
