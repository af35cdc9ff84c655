//! Transfer progress for pull and push: one bar per blob on a terminal, plain lines
//! otherwise, nothing when quiet.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::format::short_id;

pub struct Transfers {
    quiet: bool,
    terminal: bool,
    multi: MultiProgress,
    style: ProgressStyle,
    bars: HashMap<String, ProgressBar>,
}

impl Transfers {
    pub fn new(quiet: bool) -> Transfers {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal && !quiet {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {msg:<12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Transfers {
            quiet,
            terminal,
            multi,
            style,
            bars: HashMap::new(),
        }
    }

    fn bar(&self, key: &str, size: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(self.style.clone());
        bar.set_prefix(short_id(key));
        bar
    }

    /// A blob transfer begins (`message`: what the bar says meanwhile).
    pub fn started(&mut self, key: &str, size: u64, message: &'static str) {
        if self.quiet {
        } else if self.terminal {
            let bar = self.bar(key, size);
            bar.set_message(message);
            self.bars.insert(key.to_string(), bar);
        } else {
            eprintln!("Copying blob {} ({size} bytes)", short_id(key));
        }
    }

    pub fn progress(&self, key: &str, bytes_done: u64) {
        if let Some(bar) = self.bars.get(key) {
            bar.set_position(bytes_done);
        }
    }

    /// A transfer ends (`message`: done, pushed).
    pub fn done(&self, key: &str, message: &'static str) {
        if self.quiet {
            return;
        }
        match self.bars.get(key) {
            Some(bar) => bar.finish_with_message(message),
            None => eprintln!("Copying blob {} done", short_id(key)),
        }
    }

    /// A blob that needs no transfer (`message`: why).
    pub fn settled(&self, key: &str, message: String, line: String) {
        if self.quiet {
        } else if self.terminal {
            self.bar(key, 0).finish_with_message(message);
        } else {
            eprintln!("Copying blob {} {line}", short_id(key));
        }
    }

    /// A line said in both modes (e.g. a retry), above the bars on a terminal.
    pub fn note(&self, line: String) {
        if self.quiet {
        } else if self.terminal {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// A line said only off a terminal (the bars say it otherwise).
    pub fn plain(&self, line: String) {
        if !self.quiet && !self.terminal {
            eprintln!("{line}");
        }
    }

    /// Ends the display: indicatif leaves the cursor at the end of the last bar, and what
    /// follows goes below it.
    pub fn finish(self) {
        if self.terminal && !self.quiet && !self.bars.is_empty() {
            eprintln!();
        }
    }
}
