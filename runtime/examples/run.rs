//! A minimal front end for trying the runtime by hand and timing it:
//! `run ROOTFS [--overlay] [--init] [--tty] [--repeat N] -- COMMAND...` (as root, or rootless).

use std::path::PathBuf;

use gcr_runtime::{docker_default_spec, run_container, RootfsSource, RunOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: run ROOTFS [--overlay] [--init] [--tty] [--interactive] [--repeat N] -- COMMAND...");
        std::process::exit(2);
    };
    let (flags, command) = (&args[..split], &args[split + 1..]);
    let Some(rootfs) = flags.first() else {
        eprintln!("missing ROOTFS");
        std::process::exit(2);
    };
    if !nix::unistd::Uid::effective().is_root() {
        if let Err(e) = gcr_runtime::userns::enter_rootless_userns() {
            eprintln!("error: {e}");
            std::process::exit(125);
        }
    }
    let repeat: usize = flags
        .iter()
        .position(|f| f == "--repeat")
        .and_then(|i| flags.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut spec = docker_default_spec();
    if flags.iter().any(|f| f == "--no-cgroupfs") {
        let mounts = spec.mounts().clone().unwrap_or_default();
        spec.set_mounts(Some(
            mounts
                .into_iter()
                .filter(|m| m.typ().as_deref() != Some("cgroup"))
                .collect(),
        ));
    }
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(command.to_vec()));
    spec.set_process(Some(process));
    let state = std::env::temp_dir().join(format!("gcr-run-example-{}", std::process::id()));
    // --overlay: the rootfs becomes the lower dir of an overlay with a fresh upper dir.
    let source = if flags.iter().any(|f| f == "--overlay") {
        let (upper, work) = (state.join("upper"), state.join("work"));
        for d in [&upper, &work] {
            let _ = std::fs::create_dir_all(d);
        }
        RootfsSource::Overlay {
            lower: vec![PathBuf::from(rootfs)],
            upper,
            work,
            userxattr: gcr_runtime::userns::rootless_ids().is_some(),
        }
    } else {
        RootfsSource::Directory(PathBuf::from(rootfs))
    };
    let mut opts = RunOptions::new(
        source,
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        &state,
    );
    opts.init = flags.iter().any(|f| f == "--init");
    opts.tty = flags.iter().any(|f| f == "--tty");
    opts.stdin = flags.iter().any(|f| f == "--interactive") || opts.tty;
    let mut code = 0;
    let start = std::time::Instant::now();
    for _ in 0..repeat {
        code = match run_container(&spec, &opts) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        };
    }
    if repeat > 1 {
        eprintln!(
            "{repeat} runs, {:.2} ms each",
            start.elapsed().as_secs_f64() * 1000.0 / repeat as f64
        );
    }
    let _ = std::fs::remove_dir_all(&state);
    std::process::exit(code);
}
