//! runc's `--log FILE --log-format text|json`: callers (containerd's shim, conmon) read the
//! last error from the log file, so errors go there as well as to stderr.

use std::io::Write;
use std::path::PathBuf;

use crate::Global;

pub struct Log {
    file: Option<PathBuf>,
    json: bool,
    debug: bool,
}

impl Log {
    pub fn new(global: &Global) -> Log {
        Log {
            file: global.log.clone(),
            json: global.log_format == "json",
            debug: global.debug,
        }
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let line = if self.json {
            serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    pub fn error(&self, msg: &str) {
        self.write("error", msg);
        eprintln!("gcr-oci: {msg}");
    }

    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
        if self.file.is_none() {
            eprintln!("gcr-oci: warning: {msg}");
        }
    }

    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
            if self.file.is_none() {
                eprintln!("gcr-oci: debug: {msg}");
            }
        }
    }
}
