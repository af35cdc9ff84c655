//! Any word: expansion (both modes, all lexer options) and ignore patterns must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![
        ("FOO".to_string(), "a*b/c?d".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    for escape in ['\\', '`'] {
        let mut lexer = gcr_grammar::ShellLexer::new(escape);
        let _ = lexer.process_word(text, &env);
        let _ = lexer.process_words(text, &env);
        lexer.raw_quotes = true;
        lexer.raw_escapes = true;
        lexer.skip_unset = true;
        let _ = lexer.process_words(text, &env);
    }
    let _ = gcr_grammar::parse_heredoc_marker(text);
    let patterns = gcr_grammar::parse_ignore_file(text);
    if let Ok(matcher) = gcr_grammar::IgnoreMatcher::new(&patterns) {
        for path in ["a", "a/b/c.txt", ".", text] {
            let _ = matcher.matches(path);
        }
    }
});
