//! `gcr build`: for now only `--check`, which parses and plans a Containerfile.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::Context;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Containerfile to build (default: Containerfile, then Dockerfile, in the context)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name for the image: NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Build-time variable: KEY=VALUE (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Build up to this stage
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Only parse and plan the build; read no context files and pull nothing
    #[arg(long)]
    check: bool,
    /// Build context directory
    #[arg(value_name = "CONTEXT", default_value = ".")]
    context: PathBuf,
}

/// The Containerfile to use: `-f` as given, else Containerfile then Dockerfile in the context.
fn containerfile_path(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    if let Some(file) = &args.file {
        return Ok(file.clone());
    }
    for name in ["Containerfile", "Dockerfile"] {
        let candidate = args.context.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no Containerfile or Dockerfile in {}: give one with -f FILE",
        args.context.display()
    )
}

pub fn build(_ctx: &Context, args: BuildArgs) -> anyhow::Result<u8> {
    if !args.check {
        bail!(
            "gcr build is not supported yet; `gcr build --check` parses and plans a Containerfile"
        );
    }
    let path = containerfile_path(&args)?;
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut build_args = Vec::new();
    for pair in &args.build_args {
        match pair.split_once('=') {
            Some((k, v)) => build_args.push((k.to_string(), v.to_string())),
            None => match std::env::var(pair) {
                Ok(v) => build_args.push((pair.clone(), v)),
                Err(_) => continue,
            },
        }
    }
    let file_name = path.display().to_string();
    let diagnostics =
        gcr_grammar::check_containerfile(&source, &file_name, &build_args, args.target.as_deref());
    for diagnostic in &diagnostics {
        eprintln!("{}", diagnostic.render());
    }
    if diagnostics.iter().any(|d| d.is_error()) {
        return Ok(1);
    }
    println!("{file_name}: ok");
    Ok(0)
}

impl BuildArgs {
    /// `--check` reads only the Containerfile; a real build needs the store.
    pub fn needs_store(&self) -> bool {
        !self.check
    }
}
