//! `gcr logs` and `gcr attach`: a container's output.

use anyhow::Context as _;
use clap::Args;

use crate::context::{status_byte, Context};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container ends
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for everything)
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    tail: String,
    /// Show the time of each line (RFC 3339, nanoseconds)
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines from this time on (Unix time, RFC 3339, or a duration ago such as 10m)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only lines before this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Show the extra attributes the container's --log-opt labels=, env= chose before each line
    #[arg(long)]
    details: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr logs`: what a container (detached, or kept) wrote to stdout and stderr.
pub fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    let options = gcr_containers::LogOptions {
        tail: gcr_containers::Tail::parse(&args.tail)?,
        follow: args.follow,
        since: args
            .since
            .map(|t| gcr_containers::logfile::parse_time("--since", &t))
            .transpose()?,
        until: args
            .until
            .map(|t| gcr_containers::logfile::parse_time("--until", &t))
            .transpose()?,
        details: args.details,
        ..Default::default()
    };
    let mut sink = terminal_sink(args.timestamps);
    gcr_containers::logs(&c, &options, &mut sink)?;
    Ok(0)
}

/// Each record to gcr's own stdout or stderr, as the container wrote it (with its time first
/// when asked, as `docker logs -t`).
fn terminal_sink(
    timestamps: bool,
) -> impl FnMut(&gcr_containers::logfile::LogRecord) -> gcr_containers::Result<()> {
    use gcr_containers::logfile::OutputStream;
    let mut at_line_start = [true, true];
    move |record| {
        let index = usize::from(record.stream == OutputStream::Stderr);
        let mut data = Vec::with_capacity(record.data.len() + 32);
        if timestamps && at_line_start[index] && !record.time.is_empty() {
            data.extend_from_slice(record.time.as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(&record.data);
        at_line_start[index] = record.data.ends_with(b"\n");
        let shown = gcr_containers::logfile::LogRecord {
            data,
            ..record.clone()
        };
        match record.stream {
            OutputStream::Stdout => {
                gcr_containers::write_record(&mut std::io::stdout().lock(), &shown)
            }
            OutputStream::Stderr => {
                gcr_containers::write_record(&mut std::io::stderr().lock(), &shown)
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach standard input (gcr's background containers never keep one open)
    #[arg(long)]
    no_stdin: bool,
    /// Forward the signals gcr receives (SIGINT, SIGTERM, ...) to the container
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `gcr attach`: the output of a running background container from now on, with gcr's
/// signals forwarded to it, until it ends; gcr then exits with its status.
pub fn attach(ctx: &Context, args: AttachArgs) -> anyhow::Result<u8> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let store = ctx.open_store()?;
    let c = gcr_containers::lookup(&store, &args.container)?;
    // Forwarded signals are taken from a signalfd between two reads of the log (gcr is
    // single-threaded here, so blocking them for this thread blocks them for the process).
    let signals = if args.sig_proxy && c.alive() {
        let mut set = SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            set.add(signal);
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .context("cannot block signals to forward them")?;
        Some(
            nix::sys::signalfd::SignalFd::with_flags(
                &set,
                nix::sys::signalfd::SfdFlags::SFD_NONBLOCK
                    | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
            )
            .context("cannot make a signalfd")?,
        )
    } else {
        None
    };
    let mut forward = || {
        if let Some(fd) = &signals {
            while let Ok(Some(info)) = fd.read_signal() {
                if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                    if let Err(err) = c.signal(signal) {
                        eprintln!("warning: {err}");
                    }
                }
            }
        }
        Ok(())
    };
    let mut sink = terminal_sink(false);
    let code = gcr_containers::attach(&c, false, &mut sink, &mut forward)?;
    Ok(status_byte(code))
}
