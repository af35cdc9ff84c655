//! BuildKit conformance: the Dockerfile parser corpus and the shell-lexer data files from
//! shared/conformance (see the READMEs there for the formats).

use std::path::PathBuf;

use gcr_grammar::{parse_syntax, ShellLexer};

/// The conformance folder: $GCR_CONFORMANCE_DIR, else ../shared/conformance beside the
/// repository. None (skip) when missing outside CI; a failure in CI.
fn conformance_dir() -> Option<PathBuf> {
    let dir = match std::env::var("GCR_CONFORMANCE_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!(
            "conformance corpus not found at {} (set GCR_CONFORMANCE_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "SKIP: conformance corpus not found at {} (set GCR_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn case_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn dockerfile_parser_corpus() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let root = root.join("dockerfile-parser");
    let mut failures = Vec::new();
    let cases = case_dirs(&root.join("testfiles"));
    for case in &cases {
        let source = read(&case.join("Dockerfile"));
        let expected = read(&case.join("result"));
        match parse_syntax(&source) {
            Ok(tree) => {
                let got = tree.dump();
                if got != expected {
                    failures.push(format!(
                        "{}: dump differs\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error: {e}", case.display())),
        }
    }
    let negatives = case_dirs(&root.join("testfiles-negative"));
    for case in &negatives {
        let source = read(&case.join("Dockerfile"));
        if let Ok(tree) = parse_syntax(&source) {
            failures.push(format!(
                "{}: negative case parsed:\n{}",
                case.display(),
                tree.dump()
            ));
        }
    }
    assert_eq!(cases.len(), 33, "expected 33 positive cases");
    assert_eq!(negatives.len(), 4, "expected 4 negative cases");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + negatives.len(),
        failures.join("\n")
    );
    eprintln!(
        "dockerfile parser corpus: {}/{} passed",
        cases.len() + negatives.len(),
        cases.len() + negatives.len()
    );
}

#[test]
fn dockerfile_parser_line_numbers() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let source = read(&root.join("dockerfile-parser/testfile-line/Dockerfile"));
    let tree = parse_syntax(&source).unwrap_or_else(|e| panic!("parse: {e}"));
    let spans: Vec<(usize, usize)> = tree
        .instructions
        .iter()
        .map(|i| (i.start_line, i.end_line))
        .collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
}

fn shell_env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn shell_lexer_env_var_test() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let data = read(&root.join("shell-lexer/envVarTest"));
    let env = shell_env();
    let lexer = ShellLexer::new('\\');
    let mut ran = 0;
    let mut failures = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "line {}: {line}", n + 1);
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        if platform == "W" {
            continue;
        }
        ran += 1;
        let got = lexer.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(v), e) => e != "error" && v == e,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert_eq!(ran, 228, "applicable envVarTest lines");
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shell_lexer_words_test() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let data = read(&root.join("shell-lexer/wordsTest"));
    let lexer = ShellLexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut ran = 0;
    let mut failures = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(def) = line.strip_prefix("ENV ") {
            let def = def.trim_start_matches(' ');
            let (k, v) = def.split_once('=').unwrap_or((def, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("line {}", n + 1));
        let input = input.trim();
        let expected = expected.trim_start_matches(' ');
        ran += 1;
        let got = lexer.process_words(input, &env);
        let ok = match &got {
            Err(_) => expected == "error",
            Ok(words) => expected != "error" && words.join(",") == expected,
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert_eq!(ran, 24, "wordsTest cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
