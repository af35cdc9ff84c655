//! `check_containerfile` and `parse` on realistic files (tests/fixtures-dockerfiles, modelled
//! on official images) and on each class of semantic error.

use std::path::PathBuf;

use gcr_grammar::{
    check_containerfile, parse, CommandLine, CopySource, Diagnostic, Healthcheck, InstructionKind,
    MountType,
};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures-dockerfiles")
}

fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::render)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn official_style_files_check_clean() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("read fixtures: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".Dockerfile"))
        .collect();
    names.sort();
    assert!(names.len() >= 11, "fixtures missing: {names:?}");
    for name in &names {
        let source = fixture(name);
        let diagnostics = check_containerfile(&source, name, &[], None);
        assert!(
            diagnostics.is_empty(),
            "{name}:\n{}",
            render_all(&diagnostics)
        );
        parse(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn buildkit_file_structure() {
    let source = fixture("buildkit.Dockerfile");
    let file = parse(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        file.directives.syntax.as_ref().map(|d| d.value.as_str()),
        Some("docker/dockerfile-upstream:master")
    );
    assert_eq!(file.meta_args.len(), 6);
    let names: Vec<Option<&str>> = file.stages.iter().map(|s| s.name()).collect();
    assert!(names.contains(&Some("buildkit-rootless")));
    assert_eq!(names.last(), Some(&None));
    let runc = file
        .stages
        .iter()
        .find(|s| s.name() == Some("runc"))
        .unwrap_or_else(|| panic!("no runc stage"));
    let run = runc
        .instructions
        .iter()
        .find_map(|i| match &i.kind {
            InstructionKind::Run(r) if !r.mounts.is_empty() => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no RUN --mount in runc"));
    assert_eq!(run.mounts.len(), 2);
    assert_eq!(run.mounts[0].from.as_deref(), Some("runc-src"));
    assert_eq!(run.mounts[1].kind, MountType::Cache);
    assert_eq!(run.heredocs.len(), 1);
    assert!(run.heredocs[0]
        .content
        .contains("xx-verify --static /usr/bin/runc"));
    assert_eq!(run.command, CommandLine::Shell("<<EOT".to_string()));

    let version = file
        .stages
        .iter()
        .find(|s| s.name() == Some("buildkit-version"))
        .unwrap_or_else(|| panic!("no buildkit-version stage"));
    let InstructionKind::Run(run) = &version.instructions[0].kind else {
        panic!("expected RUN");
    };
    assert!(!run.heredocs[0].expand, "quoted delimiter must not expand");

    let export = file
        .stages
        .iter()
        .find(|s| s.name() == Some("buildkit-export"))
        .unwrap_or_else(|| panic!("no buildkit-export stage"));
    let copy = export
        .instructions
        .iter()
        .find_map(|i| match &i.kind {
            InstructionKind::Copy(c)
                if matches!(c.sources.first(), Some(CopySource::Heredoc(_))) =>
            {
                Some(c)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no COPY heredoc"));
    let CopySource::Heredoc(doc) = &copy.sources[0] else {
        panic!("expected heredoc");
    };
    assert!(doc.chomp && !doc.expand);
    assert_eq!(
        doc.chomped_content(),
        "# default configuration written by the image\n[worker.oci]\n  gc = true\n"
    );
    assert_eq!(copy.destination, "/etc/buildkit/buildkitd.toml");

    let linux = file
        .stages
        .iter()
        .find(|s| s.name() == Some("buildkit-linux"))
        .unwrap_or_else(|| panic!("no buildkit-linux stage"));
    let health = linux
        .instructions
        .iter()
        .find_map(|i| match &i.kind {
            InstructionKind::Healthcheck(Healthcheck::Check(h)) => Some(h),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no HEALTHCHECK"));
    assert_eq!(health.interval, Some(std::time::Duration::from_secs(30)));
    assert_eq!(health.retries, Some(3));
    let diagnostics = check_containerfile(&source, "Dockerfile", &[], Some("buildkit-rootless"));
    assert!(diagnostics.is_empty(), "{}", render_all(&diagnostics));
}

#[test]
fn windows_file_uses_backtick_escape() {
    let source = fixture("windows.Dockerfile");
    let file = parse(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.escape, '`');
    let stage = &file.stages[0];
    let shell = stage
        .instructions
        .iter()
        .find_map(|i| match &i.kind {
            InstructionKind::Shell(words) => Some(words.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SHELL"));
    assert_eq!(shell[0], "powershell");
    let workdir = stage.instructions.iter().find_map(|i| match &i.kind {
        InstructionKind::Workdir(w) => Some(w.clone()),
        _ => None,
    });
    assert_eq!(workdir.as_deref(), Some("C:\\app"));
    // The long RUN is one instruction spanning its continuation lines.
    let run = stage
        .instructions
        .iter()
        .find(|i| matches!(i.kind, InstructionKind::Run(_)))
        .unwrap_or_else(|| panic!("no RUN"));
    assert!(run.end_line() - run.start_line() > 30);
}

/// Checks `source` and returns the rendered diagnostics, asserting at least one error.
fn errors(source: &str) -> String {
    errors_with(source, &[], None)
}

fn errors_with(source: &str, args: &[(&str, &str)], target: Option<&str>) -> String {
    let args: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let diagnostics = check_containerfile(source, "Containerfile", &args, target);
    assert!(
        diagnostics.iter().any(Diagnostic::is_error),
        "expected an error for:\n{source}"
    );
    render_all(&diagnostics)
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

#[test]
fn empty_and_comment_only_files() {
    assert_contains(&errors(""), "Containerfile:1:1: file with no instructions");
    assert_contains(&errors("# just a comment\n\n"), "file with no instructions");
    assert_contains(&errors("ARG A=1\n"), "no FROM instruction");
}

#[test]
fn instruction_before_from() {
    let out = errors("ARG BASE=alpine\nRUN echo hi\nFROM $BASE\n");
    assert_contains(&out, "Containerfile:2:1: RUN comes before the first FROM");
    assert_contains(&out, "hint: only ARG may come before the first FROM");
}

#[test]
fn unknown_instruction_has_a_suggestion() {
    let out = errors("FROM alpine\nFORM alpine\n");
    assert_eq!(
        out,
        "Containerfile:2:1: unknown instruction: FORM\n 2 | FORM alpine\n   | ^\n  hint: did you mean FROM?"
    );
}

#[test]
fn stage_names() {
    let out = errors("FROM alpine AS build\nFROM alpine AS Build\n");
    assert_contains(&out, "Containerfile:2:16: duplicate stage name \"build\"");
    assert_contains(&out, "already defined on line 1");
    let out = errors("FROM alpine AS 1st\n");
    assert_contains(&out, "invalid name for build stage: \"1st\"");
    assert_contains(
        &errors("FROM alpine AS\n"),
        "FROM requires either one or three arguments",
    );
    assert_contains(
        &errors("FROM alpine XX foo\n"),
        "FROM requires either one or three arguments",
    );
}

#[test]
fn copy_from_own_or_later_stage() {
    let out = errors("FROM alpine AS a\nCOPY --from=a /x /y\n");
    assert_contains(
        &out,
        "Containerfile:2:6: COPY --from=a refers to the current stage",
    );
    let out =
        errors("FROM alpine AS a\nCOPY --from=b /x /y\nFROM alpine AS b\nCOPY --from=a /x /y\n");
    assert_contains(
        &out,
        "COPY --from=b refers to a later stage (defined on line 3)",
    );
    assert!(!out.contains("--from=a"), "{out}");
    let out = errors("FROM alpine\nCOPY --from=1 /x /y\nFROM alpine\n");
    assert_contains(
        &out,
        "COPY --from=1 refers to stage 1, which does not come before this stage",
    );
    let out = errors("FROM alpine AS a\nRUN --mount=from=a,target=/m true\n");
    assert_contains(&out, "RUN --mount from=a refers to the current stage");
    // An earlier stage (by name or index) and an image are fine.
    let ok = check_containerfile(
        "FROM alpine AS a\nFROM alpine\nCOPY --from=a /x /y\nCOPY --from=0 /x /y\nCOPY --from=busybox:latest /bin/sh /sh\n",
        "Containerfile",
        &[],
        None,
    );
    assert!(ok.is_empty(), "{}", render_all(&ok));
    // A stage name given through an ARG is resolved before the check.
    let out =
        errors("ARG SRC=b\nFROM alpine AS a\nARG SRC\nCOPY --from=$SRC /x /y\nFROM alpine AS b\n");
    assert_contains(
        &out,
        "Containerfile:4:6: COPY --from=b refers to a later stage",
    );
}

#[test]
fn unknown_and_bad_flags() {
    let out = errors("FROM alpine\nCOPY --form=a /x /y\n");
    assert_contains(&out, "Containerfile:2:6: unknown flag: --form");
    assert_contains(&out, "hint: COPY accepts --from, --chown");
    assert_contains(
        &errors("FROM alpine\nRUN --mount=type=cache echo\n"),
        "mount target is required",
    );
    assert_contains(
        &errors("FROM alpine\nRUN --network=bridge true\n"),
        "unsupported network mode \"bridge\"",
    );
    assert_contains(
        &errors("FROM alpine\nCOPY --link=maybe a b\n"),
        "expecting boolean value for flag link, not: maybe",
    );
    assert_contains(
        &errors("FROM alpine\nCOPY --from a b\n"),
        "missing a value on flag: --from",
    );
    assert_contains(
        &errors("FROM alpine\nADD --from=x a b\n"),
        "unknown flag: --from",
    );
    assert_contains(
        &errors("FROM alpine\nCMD --doit [\"a\"]\n"),
        "hint: CMD takes no flags",
    );
    assert_contains(
        &errors("FROM alpine\nCOPY --chmod=999 a b\n"),
        "invalid chmod parameter \"999\"",
    );
}

#[test]
fn bad_healthcheck_values() {
    let out = errors("FROM alpine\nHEALTHCHECK --interval=5 CMD true\n");
    assert_contains(
        &out,
        "Containerfile:2:13: invalid --interval \"5\": missing unit",
    );
    assert_contains(&out, "hint: durations look like 30s");
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK --timeout=10q CMD true\n"),
        "unknown unit \"q\"",
    );
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK --interval=1us CMD true\n"),
        "cannot be less than 1ms",
    );
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK --retries=-1 CMD true\n"),
        "invalid --retries",
    );
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK CMD\n"),
        "Missing command after HEALTHCHECK CMD",
    );
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK --interval=5s NONE\n"),
        "HEALTHCHECK NONE takes no arguments",
    );
    assert_contains(
        &errors("FROM alpine\nHEALTHCHECK CONNECT x\n"),
        "Unknown type \"CONNECT\"",
    );
}

#[test]
fn chained_and_forbidden_onbuild() {
    assert_contains(
        &errors("FROM alpine\nONBUILD ONBUILD RUN true\n"),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
    assert_contains(
        &errors("FROM alpine\nONBUILD FROM alpine\n"),
        "FROM isn't allowed as an ONBUILD trigger",
    );
    let file =
        parse("FROM alpine\nONBUILD COPY --chown=1:1 . /app\n").unwrap_or_else(|e| panic!("{e}"));
    let InstructionKind::Onbuild(trigger) = &file.stages[0].instructions[0].kind else {
        panic!("expected ONBUILD");
    };
    assert!(matches!(&trigger.kind, InstructionKind::Copy(c) if c.chown.as_deref() == Some("1:1")));
    assert_eq!(trigger.raw.original, "COPY --chown=1:1 . /app");
}

#[test]
fn expansion_errors_and_blank_base() {
    let out = errors("FROM alpine\nENV A=\"${B:?must be set}\"\n");
    assert_contains(&out, "B: must be set");
    assert_contains(&errors("FROM alpine\nWORKDIR ${X\n"), "missing '}'");
    let out = errors("ARG IMAGE\nFROM $IMAGE\n");
    assert_contains(
        &out,
        "Containerfile:2:6: base name ($IMAGE) should not be blank",
    );
    // A build argument fills it in.
    let ok = check_containerfile(
        "ARG IMAGE\nFROM $IMAGE\n",
        "Containerfile",
        &[("IMAGE".to_string(), "alpine".to_string())],
        None,
    );
    assert!(ok.is_empty(), "{}", render_all(&ok));
    assert_contains(
        &errors("FROM alpine AS x\nFROM x AS y\nFROM y AS y2\nFROM z AS z\n"),
        "circular dependency",
    );
}

#[test]
fn syntax_errors_are_positioned() {
    let out = errors("FROM alpine\nRUN <<EOF\necho never ends\n");
    assert_contains(&out, "Containerfile:2:1: unterminated heredoc EOF");
    let out = errors("# escape=x\nFROM alpine\n");
    assert_contains(
        &out,
        "Containerfile:1:1: invalid escape token 'x' does not match ` or \\",
    );
    assert_contains(
        &errors("FROM alpine\nENV PATH\n"),
        "Containerfile:2:5: ENV must have two arguments",
    );
    assert_contains(
        &errors("FROM alpine\nCMD [\"a\", [\"b\"]]\n"),
        "dockerfile JSON array must contain only strings",
    );
    assert_contains(
        &errors("FROM alpine\nSHELL /bin/sh -c\n"),
        "SHELL requires the arguments to be in JSON form",
    );
    assert_contains(
        &errors("FROM alpine\nSTOPSIGNAL SIGFOO\n"),
        "invalid signal: SIGFOO",
    );
    assert_contains(
        &errors("FROM alpine\nEXPOSE 80/xyz\n"),
        "invalid port specification: \"80/xyz\"",
    );
}

#[test]
fn errors_inside_continuations_point_at_their_physical_line() {
    let out = errors(
        "FROM alpine\nRUN --mount=type=cache,target=/x \\\n    --network=bridge \\\n    true\n",
    );
    assert_contains(
        &out,
        "Containerfile:3:5: unsupported network mode \"bridge\"",
    );
    assert_contains(&out, " 3 |     --network=bridge \\\n   |     ^");
}

#[test]
fn target_must_exist() {
    let out = errors_with(
        "FROM alpine AS build\nFROM alpine AS final\n",
        &[],
        Some("tests"),
    );
    assert_eq!(
        out,
        "Containerfile: target stage \"tests\" could not be found\n  hint: named stages: build, final"
    );
    let ok = check_containerfile(
        "FROM alpine AS build\n",
        "Containerfile",
        &[],
        Some("BUILD"),
    );
    assert!(ok.is_empty());
}

#[test]
fn crlf_and_bom_files() {
    let source = "\u{feff}FROM alpine\r\nRUN echo \\\r\n  hi\r\nFORM x\r\n";
    let out = errors(source);
    assert_eq!(
        out,
        "Containerfile:4:1: unknown instruction: FORM\n 4 | FORM x\n   | ^\n  hint: did you mean FROM?"
    );
    let file =
        parse("\u{feff}FROM alpine\r\nRUN echo \\\r\n  hi\r\n").unwrap_or_else(|e| panic!("{e}"));
    let InstructionKind::Run(run) = &file.stages[0].instructions[0].kind else {
        panic!("expected RUN");
    };
    assert_eq!(run.command, CommandLine::Shell("echo   hi".to_string()));
}

#[test]
fn warnings_do_not_fail() {
    let diagnostics = check_containerfile(
        "FROM alpine\nRUN echo a \\\n\n  b\n",
        "Containerfile",
        &[],
        None,
    );
    assert_eq!(diagnostics.len(), 1);
    assert!(!diagnostics[0].is_error());
    assert!(diagnostics[0]
        .render()
        .starts_with("Containerfile:3:1: warning: empty continuation line"));
}
