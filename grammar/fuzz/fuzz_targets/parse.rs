//! Any input: the line parser, the typed parser and the checker must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = gcr_grammar::parse_syntax(source) {
        let _ = tree.dump();
        for instruction in &tree.instructions {
            for offset in [0, instruction.rest_offset, instruction.original.len()] {
                let _ = instruction.position_of(offset);
            }
        }
    }
    let _ = gcr_grammar::parse(source);
    let args = vec![("A".to_string(), "x y".to_string())];
    for diagnostic in gcr_grammar::check_containerfile(source, "Containerfile", &args, Some("t")) {
        let _ = diagnostic.render();
    }
});
