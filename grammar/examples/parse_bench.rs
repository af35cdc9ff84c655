//! Parse-speed benchmark (run by bench/parse.sh): times parsing generated Containerfiles
//! of 10,000 lines, including shapes that would expose quadratic behaviour (one very
//! long continued instruction, many heredocs).

use std::time::{Duration, Instant};

/// A realistic mix: stages, RUN with continuations, ENV/LABEL, COPY with flags, heredocs.
fn mixed(lines: usize) -> String {
    let mut out = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\nFROM $BASE AS stage0\n",
    );
    let mut n = 3;
    let mut stage = 1;
    while n < lines {
        match n % 50 {
            0 => {
                out.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
                stage += 1;
                n += 1;
            }
            10 => {
                out.push_str("RUN set -eux; \\\n    apt-get update; \\\n    apt-get install -y --no-install-recommends ca-certificates curl; \\\n    rm -rf /var/lib/apt/lists/*\n");
                n += 4;
            }
            20 => {
                out.push_str("RUN --mount=type=cache,target=/root/.cache <<EOF\nset -e\necho building\nmake -j2\nEOF\n");
                n += 5;
            }
            30 => {
                out.push_str("ENV PATH=/usr/local/bin:$PATH LANG=C.UTF-8 GPG_KEY=\"A035C8C19219BA821ECEA86B64E628F8D684696D\"\n");
                n += 1;
            }
            40 => {
                out.push_str("COPY --from=stage0 --chown=1000:1000 --chmod=0755 /src/app /usr/local/bin/app\n");
                n += 1;
            }
            _ => {
                out.push_str(&format!("LABEL org.example.line{n}=\"value {n}\"\n"));
                n += 1;
            }
        }
    }
    out
}

/// One RUN continued over `lines` physical lines.
fn long_continuation(lines: usize) -> String {
    let mut out = String::from("FROM scratch\nRUN true");
    for i in 0..lines {
        out.push_str(&format!(" \\\n    && echo step {i}"));
    }
    out.push('\n');
    out
}

/// Many RUN instructions, each with a heredoc of a few lines.
fn many_heredocs(lines: usize) -> String {
    let mut out = String::from("FROM scratch\n");
    for i in 0..lines / 5 {
        out.push_str(&format!(
            "RUN <<EOF{i}\necho {i}\necho again\nEOF{i}\nCOPY <<-X /x{i}\n\tX\n"
        ));
    }
    out
}

/// (minimum, median) of the CPU time per parse (wall time where CPU time is unavailable);
/// the minimum is the figure least disturbed by other load.
fn timings(source: &str, iterations: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let cpu_start = cpu_time::ThreadTime::try_now().ok();
        let start = Instant::now();
        let parsed = if std::env::var_os("PARSE_BENCH_SYNTAX_ONLY").is_some() {
            gcr_grammar::parse_syntax(source).map(|_| ())
        } else {
            gcr_grammar::parse(source).map(|_| ())
        };
        let wall = start.elapsed();
        let cpu = cpu_start.map_or(wall, |t| t.elapsed());
        times.push(cpu);
        if let Err(e) = parsed {
            eprintln!("benchmark input failed to parse: {e}");
            std::process::exit(1);
        }
    }
    times.sort();
    (times[0], times[times.len() / 2])
}

fn main() {
    let lines: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let iterations = 41;
    for (name, source) in [
        ("mixed", mixed(lines)),
        ("long-continuation", long_continuation(lines)),
        ("many-heredocs", many_heredocs(lines)),
    ] {
        if let Ok(only) = std::env::var("PARSE_BENCH_ONLY") {
            if only != name {
                continue;
            }
        }
        let physical = source.lines().count();
        let (full, full_median) = timings(&source, iterations);
        let half_source = match name {
            "mixed" => mixed(lines / 2),
            "long-continuation" => long_continuation(lines / 2),
            _ => many_heredocs(lines / 2),
        };
        let (half, _) = timings(&half_source, iterations);
        let ratio = full.as_secs_f64() / half.as_secs_f64().max(1e-9);
        println!(
            "{name:18} {physical:6} lines  CPU time min {:7.3} ms  median {:7.3} ms  (half size min {:7.3} ms, ratio {ratio:.2}; ~2 is linear)",
            full.as_secs_f64() * 1e3,
            full_median.as_secs_f64() * 1e3,
            half.as_secs_f64() * 1e3,
        );
    }
}
