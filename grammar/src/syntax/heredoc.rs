//! Heredoc markers (`<<EOF`, `3<<-"EOF"`) in RUN, COPY and ADD lines.

use pest::Parser;

use super::grammar::{Grammar, Rule};
use super::tree::{Arg, RawInstruction};
use crate::shell::{NoEnv, ShellLexer};

pub(super) fn can_contain_heredoc(instruction: &RawInstruction) -> bool {
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
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<HeredocMarker>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_syntax;

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
