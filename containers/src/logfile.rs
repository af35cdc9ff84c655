//! The container log's format (`containers/<id>/container.log`): one record per line, as
//! the CRI log format that Podman's k8s-file driver and Kubernetes use:
//! `<RFC 3339 time, ns> <stdout|stderr> <F|P> <bytes>`. `F` ends a line (the newline was
//! the record's own), `P` is part of one (the output had no newline yet). Keeping each
//! stream and a time per line is what `logs --timestamps`, `--since` and the Docker API's
//! multiplexed stream need; the bytes are kept as written (no escaping but the newline).

use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::logconfig::Rotation;

pub use gcr_runtime::OutputStream;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub stream: OutputStream,
    /// RFC 3339 with nanoseconds, UTC (`2026-12-07T12:00:00.123456789Z`).
    pub time: &'a str,
    /// The output, with its newline when the record ends a line.
    pub data: Vec<u8>,
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

/// The current time as the log writes it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// The records for one chunk of a stream's output, as bytes to append to the log.
pub fn encode(stream: OutputStream, time: &str, chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 48);
    for piece in chunk.split_inclusive(|b| *b == b'\n') {
        let (tag, body) = match piece.strip_suffix(b"\n") {
            Some(line) => ("F", line),
            None => ("P", piece),
        };
        let _ = write!(out, "{time} {} {tag} ", stream_name(stream));
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}

/// The log file at `path` as the supervisor's tee writes it: records appended; with a size
/// cap rotated as Docker's json-file driver does: before a record would take the file over
/// the cap, `container.log` becomes `container.log.1` (`.1` becomes `.2`, ..., the oldest
/// beyond `max_files` goes) and a new file starts. A reader that holds the old file reads it
/// to its end, then sees the path name another file (see [`replaced`]).
pub struct RotatingLog {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    rotation: Rotation,
}

/// The name of the `n`th rotated file of the log at `path` (1: the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The files of the log at `path` that exist, oldest first (the one being written last).
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = (1..)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    found.reverse();
    found.push(path.to_path_buf());
    found
}

/// Whether `path` now names another file than `file` (the log rotated since it was opened).
pub fn replaced(path: &Path, file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(now), Ok(open)) => now.ino() != open.ino() || now.dev() != open.dev(),
        _ => false,
    }
}

/// The file that came after `file` in the log at `path` (rotated since it was opened, maybe
/// more than once): the rotated file newer than it, or the one being written; when `file`
/// was rotated away entirely, the oldest left (the fewest lines lost).
pub fn successor(path: &Path, file: &std::fs::File) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(open) = file.metadata() else {
        return path.to_path_buf();
    };
    let kept = files(path);
    let same = |p: &PathBuf| {
        std::fs::metadata(p).is_ok_and(|m| m.ino() == open.ino() && m.dev() == open.dev())
    };
    match kept.iter().position(same) {
        Some(at) if at + 1 < kept.len() => kept[at + 1].clone(),
        Some(_) => path.to_path_buf(),
        None => kept[0].clone(),
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl RotatingLog {
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// Appends the records of one chunk of a stream's output.
    pub fn write(&mut self, stream: OutputStream, chunk: &[u8]) {
        let time = now_rfc3339();
        let Some(max) = self.rotation.max_size else {
            let records = encode(stream, &time, chunk);
            self.size += records.len() as u64;
            let _ = self.file.write_all(&records);
            return;
        };
        // Whole records only, so that every file starts and ends at a record's bounds.
        let mut batch = Vec::new();
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let record = encode(stream, &time, piece);
            let size = self.size + (batch.len() + record.len()) as u64;
            if size > max && self.size + batch.len() as u64 > 0 {
                let _ = self.file.write_all(&batch);
                batch.clear();
                self.rotate();
            }
            batch.extend_from_slice(&record);
        }
        self.size += batch.len() as u64;
        let _ = self.file.write_all(&batch);
    }

    fn rotate(&mut self) {
        let keep = self.rotation.max_files;
        if keep <= 1 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            let _ = std::fs::rename(&self.path, rotated(&self.path, 1));
        }
        // Should the new file not open, the old one goes on (a log over its cap, not a lost one).
        if let Ok(file) = open_append(&self.path) {
            self.file = file;
            self.size = 0;
        }
    }
}

/// A log writer for [`gcr_runtime::OutputTee`]: each chunk appended as records to the log
/// at `path`, rotated as `rotation` says.
pub fn writer(
    path: &Path,
    rotation: Rotation,
) -> std::io::Result<impl FnMut(OutputStream, &[u8]) + Send + 'static> {
    let mut log = RotatingLog::open(path, rotation)?;
    Ok(move |stream, chunk: &[u8]| log.write(stream, chunk))
}

/// Parses one record line (without its newline); None for a line that is not one (a log
/// written by an older gcr held raw output: such a line counts as stdout of unknown time).
pub fn parse(line: &[u8]) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => OutputStream::Stdout,
        b"stderr" => OutputStream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let body = parts.next().unwrap_or_default();
    if !time.ends_with('Z') || chrono::DateTime::parse_from_rfc3339(time).is_err() {
        return None;
    }
    let mut data = body.to_vec();
    match tag {
        b"F" => data.push(b'\n'),
        b"P" => {}
        _ => return None,
    }
    Some(LogRecord { stream, time, data })
}

/// The records of whole lines in `bytes` (a line still being written stays for later);
/// returns them and how many bytes they took.
pub fn records(bytes: &[u8]) -> (Vec<LogRecord<'_>>, usize) {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), 0);
    };
    let lines = bytes[..end].split(|b| *b == b'\n');
    let records = lines
        .map(|line| {
            parse(line).unwrap_or_else(|| LogRecord {
                stream: OutputStream::Stdout,
                time: "",
                data: [line, b"\n"].concat(),
            })
        })
        .collect();
    (records, end + 1)
}

/// A `--since`/`--until` value as the log's time text: a Unix time (seconds, a fraction
/// allowed: what the Docker API sends), an RFC 3339 time, or a duration before now (`10m`,
/// `1h30m`, `45s`), as Docker takes them.
pub fn parse_time(flag: &str, text: &str) -> crate::Result<String> {
    let format = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            let nanos = (seconds.fract() * 1e9) as u32;
            if let Some(t) = chrono::DateTime::from_timestamp(seconds.trunc() as i64, nanos) {
                return Ok(format(t));
            }
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(format(t.with_timezone(&chrono::Utc)));
    }
    if let Some(ago) = parse_duration(text) {
        return Ok(format(chrono::Utc::now() - ago));
    }
    Err(crate::ContainerError::Invalid(format!(
        "invalid {flag} {text:?}: give a Unix time, an RFC 3339 time or a duration such as 10m"
    )))
}

/// Go's duration form, in the units a log query uses: `1h30m`, `10m`, `45s`, `500ms`.
fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let mut total = chrono::Duration::zero();
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            _ => return None,
        };
        total += chrono::Duration::milliseconds((value * millis) as i64);
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_records_and_back() {
        let time = "2026-12-07T12:00:00.000000001Z";
        let mut log = encode(OutputStream::Stdout, time, b"one\ntwo\nthr");
        log.extend(encode(OutputStream::Stderr, time, b"oops\n"));
        log.extend(encode(OutputStream::Stdout, time, b"ee\n"));
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.starts_with("2026-12-07T12:00:00.000000001Z stdout F one\n"));
        let (records, used) = records(&log);
        assert_eq!(used, log.len());
        let stdout: Vec<u8> = records
            .iter()
            .filter(|r| r.stream == OutputStream::Stdout)
            .flat_map(|r| r.data.clone())
            .collect();
        assert_eq!(stdout, b"one\ntwo\nthree\n");
        assert_eq!(records[3].stream, OutputStream::Stderr);
        assert_eq!(records[3].data, b"oops\n");
        assert_eq!(records[0].time, time);
    }

    #[test]
    fn times_as_docker_takes_them() {
        assert_eq!(
            parse_time("--since", "1700000000").unwrap(),
            "2023-11-14T22:13:20.000000000Z"
        );
        assert_eq!(
            parse_time("--since", "2026-12-07T12:00:00+01:00").unwrap(),
            "2026-12-07T11:00:00.000000000Z"
        );
        let ago = parse_time("--since", "1h30m").unwrap();
        assert!(ago < now_rfc3339());
        assert!(parse_time("--since", "yesterday").is_err());
        assert!(parse_time("--since", "10x").is_err());
    }

    #[test]
    fn a_line_being_written_waits_and_raw_lines_are_stdout() {
        let (records_now, used) = records(b"2026-12-07T12:00:00Z stdout F a\n2026-12-07T12:0");
        assert_eq!(records_now.len(), 1);
        assert_eq!(used, "2026-12-07T12:00:00Z stdout F a\n".len());
        let (raw, _) = records(b"plain old output\n");
        assert_eq!(raw[0].stream, OutputStream::Stdout);
        assert_eq!(raw[0].data, b"plain old output\n");
        assert!(parse(b"2026-12-07T12:00:00Z stdin F x").is_none());
        assert!(parse(b"garbage stdout F x").is_none());
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    #[test]
    fn rotation_keeps_max_files_of_about_max_size_and_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let rotation = Rotation {
            max_size: Some(1000),
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, rotation).unwrap();
        for n in 0..200 {
            log.write(OutputStream::Stdout, format!("line {n:04}\n").as_bytes());
        }
        let kept = files(&path);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(!rotated(&path, 3).exists());
        let mut text = Vec::new();
        for file in &kept {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                bytes.len() <= 1000,
                "{} has {}",
                file.display(),
                bytes.len()
            );
            assert!(bytes.ends_with(b"\n"));
            text.extend(bytes);
        }
        let (records, _) = records(&text);
        let lines: Vec<u8> = records.iter().flat_map(|r| r.data.clone()).collect();
        let lines = String::from_utf8(lines).unwrap();
        assert!(lines.ends_with("line 0199\n"));
        assert!(!lines.contains("line 0000\n"));
        // In order across the files.
        let numbers: Vec<u32> = lines.lines().map(|l| l[5..].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn one_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let rotation = Rotation {
            max_size: Some(100),
            max_files: 1,
        };
        let mut log = RotatingLog::open(&path, rotation).unwrap();
        for n in 0..20 {
            log.write(OutputStream::Stderr, format!("{n}\n").as_bytes());
        }
        assert_eq!(files(&path), vec![path.clone()]);
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }
}
