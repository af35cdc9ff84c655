//! Ignore-file matching: the tables of shared/conformance/shell-lexer/README.md
//! (moby/patternmatcher behaviour).

use gcr_grammar::{parse_ignore_file, pick_ignore_file, IgnoreFileLocation, IgnoreMatcher};

fn matcher(patterns: &[&str]) -> IgnoreMatcher {
    IgnoreMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

#[test]
fn reading_the_file() {
    let contents = "\u{feff}test1\n/test2\n/a/file/here\n\n# this is a comment\n! /inverted/abs/path\n!\n! \n  # x\n";
    assert_eq!(
        parse_ignore_file(contents),
        vec![
            "test1",
            "test2",
            "a/file/here",
            "!inverted/abs/path",
            "!",
            "!",
            "# x"
        ]
    );
    assert_eq!(parse_ignore_file("a//b/./c/../d/\n"), vec!["a/b/d"]);
}

#[test]
fn single_patterns() {
    let cases: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "dir/file", true),
        ("**", "/", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/dir2/file", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("a\\*b", "a*b", true),
        ("a\\*b", "ab", false),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("[a-ζ]*", "α", true),
        ("[\\-x]", "-", true),
        ("[\\-x]", "x", true),
    ];
    let mut failures = Vec::new();
    for &(pattern, path, expected) in cases {
        if matcher(&[pattern]).matches(path) != expected {
            failures.push(format!("{pattern:?} on {path:?}: expected {expected}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_patterns_are_errors() {
    for bad in [
        "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "!",
    ] {
        assert!(
            IgnoreMatcher::new(&[bad]).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn several_patterns() {
    let whl = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
    let cases: &[(&[&str], &str, bool)] = &[
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (&["**", "!dist/*.whl"], whl, false),
        (&["*.go"], ".", false),
        (&[], "anything", false),
        (&["docs"], "docs/README.md", true),
    ];
    for &(patterns, path, expected) in cases {
        assert_eq!(
            matcher(patterns).matches(path),
            expected,
            "{patterns:?} on {path:?}"
        );
    }
}

#[test]
fn ignore_file_choice() {
    let pick = |present: &[&str]| {
        pick_ignore_file("app.Containerfile", |c| present.contains(&c.name.as_str()))
            .map(|c| (c.location, c.name))
    };
    assert_eq!(
        pick(&[".dockerignore", "app.Containerfile.dockerignore"]),
        Some((
            IgnoreFileLocation::BesideContainerfile,
            "app.Containerfile.dockerignore".to_string()
        ))
    );
    assert_eq!(
        pick(&[".dockerignore", ".containerignore"]),
        Some((IgnoreFileLocation::Context, ".containerignore".to_string()))
    );
    assert_eq!(pick(&[]), None);
}
