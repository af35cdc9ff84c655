//! The Go-only `lex_test.go` cases tabled in shared/conformance/shell-lexer/README.md.

use gcr_grammar::ShellLexer;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
    ShellLexer::new('\\')
        .process_word(input, &env(pairs))
        .map_err(|e| e.to_string())
}

fn ok(input: &str, pairs: &[(&str, &str)], expected: &str) {
    assert_eq!(
        word(input, pairs),
        Ok(expected.to_string()),
        "{input:?} {pairs:?}"
    );
}

fn err(input: &str, pairs: &[(&str, &str)]) {
    assert!(
        word(input, pairs).is_err(),
        "{input:?} {pairs:?} should fail"
    );
}

#[test]
fn default_and_alternative_values() {
    let e = [("FOO", "xxx"), ("BAR", "")];
    ok("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &e, "xxx  ccc");
    ok("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &e, "xxx bbb ccc");
    ok("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &e, "aaa bbb ");
    ok("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &e, "aaa  ");
    ok("${BAR?bbb}", &e, "");
    err("${BAR:?bbb}", &e);
    err("${BAZ?ccc}", &e);
    for bad in ["${FOO=aaa}", "${FOO=:aaa}", "${FOO=}"] {
        err(bad, &[]);
    }
}

#[test]
fn prefix_and_suffix_removal() {
    ok(
        "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
        &[("FOO", "()[]{}^$.*?|\\x")],
        "x",
    );
    ok("${FOO%%\\**}", &[("FOO", "xx**")], "xx");
    ok("${FOO#*x*y}", &[("FOO", "xxyy")], "y");
    for same in ["${FOO#*}", "${FOO#}", "${FOO##}", "${FOO%}"] {
        ok(same, &[("FOO", "xxyy")], "xxyy");
    }
    ok("${FOO##*x}", &[("FOO", "xxyy")], "yy");
    ok("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy");
    ok("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy");
    ok("${FOO#?\\?}", &[("FOO", "???y")], "?y");
    ok("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], "a");
    for bad in ["${FOO:#}", "${FOO:##}", "${FOO:%}", "${FOO:%%}"] {
        err(bad, &[("FOO", "xxyy")]);
    }
}

#[test]
fn replacement() {
    ok(
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
        "/foo.*/*.txt - /foo..*.txt",
    );
    ok(
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
        "/tmp/bar.txt - /bar.txt",
    );
    ok(
        "${FOO/$NEEDLE/$REPLACEMENT}",
        &[
            ("FOO", "http://google.de"),
            ("NEEDLE", "http://"),
            ("REPLACEMENT", "https://"),
        ],
        "https://google.de",
    );
    ok(
        "${FOO//\\//\\/}",
        &[("FOO", "/tmp/foo.txt")],
        "\\/tmp\\/foo.txt",
    );
    ok("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy");
    err("${FOO//ww}", &[("FOO", "xxyy")]);
    err("${FOO//}", &[("FOO", "xxyy")]);
    ok("${FOO///}", &[("FOO", "xxyy")], "xxyy");
    ok("${FOO///}", &[], "");
}

#[test]
fn platform_archive_name() {
    let input =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let base = [
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm"),
    ];
    let mut with_variant = base.to_vec();
    with_variant.push(("TARGETVARIANT", "v7"));
    ok(input, &with_variant, "something-v1.2.3.linux-arm-v7.tar.gz");
    let arm64 = [
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm64"),
    ];
    ok(input, &arm64, "something-v1.2.3.linux-arm64.tar.gz");
    let mut empty_variant = arm64.to_vec();
    empty_variant.push(("TARGETVARIANT", ""));
    ok(input, &empty_variant, "something-v1.2.3.linux-arm64.tar.gz");
}

#[test]
fn required_message_is_expanded() {
    for e in [vec![("ARG", "x"), ("VAR", "")], vec![("ARG", "x")]] {
        let got = word("${VAR:?message here$ARG}", &e);
        assert!(
            matches!(&got, Err(m) if m.contains("message herex")),
            "{got:?}"
        );
    }
    ok("${VAR?message here$ARG}", &[("ARG", "x"), ("VAR", "")], "");
}

#[test]
fn matched_and_unmatched_names() {
    let e = env(&[("FOO", "xxx"), ("BAR", "")]);
    let got = ShellLexer::new('\\')
        .process_word_with_matches("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &e)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.value, "xxx  ccc");
    assert_eq!(
        got.matched.into_iter().collect::<Vec<_>>(),
        vec!["BAR", "FOO"]
    );
    assert_eq!(got.unmatched.into_iter().collect::<Vec<_>>(), vec!["BAZ"]);
}

#[test]
fn environment_last_definition_wins() {
    ok("$A", &[("A", "1"), ("A", "2")], "2");
}
