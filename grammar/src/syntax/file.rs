//! The file: physical lines joined into logical ones (continuations, comments, blank
//! lines), directives read, and heredoc bodies taken from the lines that follow.

use super::directives::DirectiveParser;
use super::heredoc::{can_contain_heredoc, heredocs_from_line};
use super::line::parse_logical_line;
use super::tree::{Directives, Heredoc, ParseError, Piece, SyntaxTree};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
