//! `gcr version` and `gcr info`: what scripts written for Docker ask of the engine, with
//! `--format` templates as Docker's (`{{.Server.Version}}`, `{{.Rootless}}`, ...).

use clap::Args;
use serde_json::{json, Value};

use crate::context::Context;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// A Go template, e.g. '{{.Client.Version}}', or json
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A Go template, e.g. '{{.CgroupVersion}}', or json
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

/// Prints `value` through `format` (a template or `json`), or as `lines` when none is given.
fn show(value: &Value, format: Option<&str>, lines: impl FnOnce(&Value)) -> anyhow::Result<u8> {
    match format {
        None => lines(value),
        Some("json") => println!("{value}"),
        Some(template) => println!(
            "{}",
            crate::template::Template::parse(template)?.render(value)?
        ),
    }
    Ok(0)
}

pub fn version(args: VersionArgs) -> anyhow::Result<u8> {
    let (os, arch) = gcr_containers::engine::platform();
    let engine = gcr_containers::engine::version();
    let side = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": engine["ApiVersion"],
        "Os": os,
        "Arch": arch,
        "GoVersion": Value::Null,
    });
    // No daemon: the client is the engine, so both sides are gcr itself.
    let value = json!({ "Client": side, "Server": side, "Version": env!("CARGO_PKG_VERSION") });
    show(&value, args.format.as_deref(), |v| {
        println!("Version:  {}", v["Version"].as_str().unwrap_or_default());
        println!("OS/Arch:  {os}/{arch}");
        println!("Engine:   none (gcr runs containers itself, without a daemon)");
    })
}

pub fn info(ctx: &Context, args: InfoArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let mut value = gcr_containers::engine::info(&store)?;
    // gcr info says what the machine has (hybrid included); the API says 1 or 2 as Docker.
    value["CgroupVersion"] = json!(gcr_containers::engine::cgroup_version());
    show(&value, args.format.as_deref(), |v| {
        for key in [
            "ServerVersion",
            "DockerRootDir",
            "Driver",
            "Images",
            "Containers",
            "ContainersRunning",
            "ContainersStopped",
            "CgroupVersion",
            "Rootless",
            "DefaultNetwork",
            "KernelVersion",
            "OperatingSystem",
            "Architecture",
            "NCPU",
        ] {
            let shown = match &v[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{key}: {shown}");
        }
    })
}
