//! `gcr run`: wired to the runtime crate (in progress).

use anyhow::bail;
use clap::Args;

use crate::Context;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "IMAGE [COMMAND [ARG...]]")]
    args: Vec<String>,
}

pub fn run(_ctx: &Context, _args: RunArgs) -> anyhow::Result<u8> {
    bail!("gcr run is not supported yet")
}
