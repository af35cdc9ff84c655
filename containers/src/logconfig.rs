//! A container's logging driver and its options (`--log-driver`, `--log-opt`, the API's
//! HostConfig.LogConfig), as Docker takes them. gcr writes one format for every driver that
//! keeps a log (json-file, k8s-file, local: the records of [`crate::logfile`]); the driver
//! decides whether there is a log (`none` keeps none), its size cap and rotation, and which
//! attributes `logs --details` shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ContainerError, Result};

/// The drivers gcr knows; Docker's default is json-file.
const DRIVERS: [&str; 4] = ["json-file", "k8s-file", "local", "none"];

/// The options Docker's json-file driver takes (k8s-file and local take a subset; gcr
/// takes the same set for all three).
const OPTIONS: [&str; 8] = [
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

/// What a container was created with; recorded in its meta.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// json-file, k8s-file, local or none.
    pub driver: String,
    /// The `--log-opt` values as given (Docker shows them so in HostConfig.LogConfig.Config).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            driver: "json-file".into(),
            options: BTreeMap::new(),
        }
    }
}

/// Where and how big the supervisor writes a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would take the file over this size (bytes); None: never.
    pub max_size: Option<u64>,
    /// Files kept, the one being written included (at least 1).
    pub max_files: u32,
}

impl LogConfig {
    /// `--log-driver` (None: json-file) and the `--log-opt` flags: each `KEY=VALUE`, or
    /// several joined by commas (`max-size=10k,max-file=3`); a piece without `=` continues
    /// the value before it (`labels=a,b`).
    pub fn from_flags(driver: Option<&str>, flags: &[String]) -> Result<LogConfig> {
        let mut options = BTreeMap::new();
        for flag in flags {
            let mut last: Option<String> = None;
            for piece in flag.split(',') {
                match (piece.split_once('='), &last) {
                    (Some((key, value)), _) if !key.is_empty() => {
                        options.insert(key.to_string(), value.to_string());
                        last = Some(key.to_string());
                    }
                    (None, Some(key)) => {
                        if let Some(value) = options.get_mut(key) {
                            value.push(',');
                            value.push_str(piece);
                        }
                    }
                    _ => {
                        return Err(ContainerError::invalid(format!(
                            "invalid --log-opt {flag:?}: use KEY=VALUE (e.g. max-size=10m)"
                        )))
                    }
                }
            }
        }
        LogConfig::new(driver.unwrap_or(""), options)
    }

    /// A driver (empty: json-file) and its options, checked as Docker checks them.
    pub fn new(driver: &str, options: BTreeMap<String, String>) -> Result<LogConfig> {
        let driver = if driver.is_empty() {
            "json-file"
        } else {
            driver
        };
        if !DRIVERS.contains(&driver) {
            return Err(ContainerError::invalid(format!(
                "unknown log driver {driver:?}: gcr has json-file, k8s-file, local and none"
            )));
        }
        let config = LogConfig {
            driver: driver.to_string(),
            options,
        };
        for key in config.options.keys() {
            if driver == "none" || !OPTIONS.contains(&key.as_str()) {
                return Err(ContainerError::invalid(format!(
                    "unknown log opt {key:?} for the {driver} log driver"
                )));
            }
        }
        if config.options.get("compress").is_some_and(|c| c == "true") {
            return Err(ContainerError::invalid(
                "log opt compress=true: gcr keeps rotated logs uncompressed (use compress=false)",
            ));
        }
        for (key, pattern) in &config.options {
            if key.ends_with("-regex") {
                regex_lite(pattern).map_err(|why| {
                    ContainerError::invalid(format!("invalid log opt {key}={pattern:?}: {why}"))
                })?;
            }
        }
        config.rotation()?;
        Ok(config)
    }

    /// Whether a log is kept (every driver but none).
    pub fn keeps_log(&self) -> bool {
        self.driver != "none"
    }

    /// The size cap and file count. Docker's defaults: json-file and k8s-file unbounded,
    /// local 20 MB in 5 files.
    pub fn rotation(&self) -> Result<Rotation> {
        let local = self.driver == "local";
        let max_size = match self.options.get("max-size") {
            Some(text) => Some(parse_human_size(text).ok_or_else(|| {
                ContainerError::invalid(format!(
                    "invalid log opt max-size={text:?}: give a positive size such as 10k, 10m or 1g"
                ))
            })?),
            None => local.then_some(20_000_000),
        };
        let max_files = match self.options.get("max-file") {
            Some(text) => match text.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ContainerError::invalid(format!(
                        "invalid log opt max-file={text:?}: give a number of files, at least 1"
                    )))
                }
            },
            None if local => 5,
            None => 1,
        };
        if max_files > 1 && max_size.is_none() {
            return Err(ContainerError::invalid(
                "log opt max-file needs max-size (files rotate when they reach it)",
            ));
        }
        Ok(Rotation {
            max_size,
            max_files,
        })
    }

    /// The extra attributes `logs --details` shows, as Docker's: the values of the labels
    /// and environment variables the options name (`labels=`, `labels-regex=`, `env=`,
    /// `env-regex=`), sorted by key.
    pub fn attributes(
        &self,
        labels: &BTreeMap<String, String>,
        env: &[String],
    ) -> Vec<(String, String)> {
        let mut extra = BTreeMap::new();
        let env: BTreeMap<&str, &str> = env.iter().filter_map(|e| e.split_once('=')).collect();
        let listed = |key: &str| {
            self.options
                .get(key)
                .map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        for name in listed("labels") {
            if let Some(value) = labels.get(&name) {
                extra.insert(name, value.clone());
            }
        }
        for name in listed("env") {
            if let Some(value) = env.get(name.as_str()) {
                extra.insert(name, value.to_string());
            }
        }
        let matching = |key: &str| {
            self.options
                .get(key)
                .and_then(|p| regex_lite(p).ok())
                .unwrap_or_default()
        };
        let label_patterns = matching("labels-regex");
        for (name, value) in labels {
            if label_patterns.iter().any(|p| p.matches(name)) {
                extra.insert(name.clone(), value.clone());
            }
        }
        let env_patterns = matching("env-regex");
        for (name, value) in &env {
            if env_patterns.iter().any(|p| p.matches(name)) {
                extra.insert(name.to_string(), value.to_string());
            }
        }
        extra.into_iter().collect()
    }
}

/// Docker's `units.FromHumanSize`: decimal units (`10k` = 10000), an optional `b`/`i`.
pub fn parse_human_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let value: f64 = lower[..number_end].parse().ok()?;
    let unit = lower[number_end..].trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let factor = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        _ => return None,
    };
    let bytes = value * factor;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

/// A pattern of `labels-regex`/`env-regex`. gcr has no regex engine; it takes the forms such
/// options use in practice: a literal name, `^prefix`, `suffix$`, `.*` inside for any text,
/// and `a|b` alternatives.
#[derive(Debug, Clone, Default)]
struct Pattern {
    anchored_start: bool,
    anchored_end: bool,
    pieces: Vec<String>,
}

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        let n = self.pieces.len();
        if n == 0 {
            return !(self.anchored_start && self.anchored_end) || text.is_empty();
        }
        let mut rest = text;
        for (i, piece) in self.pieces.iter().enumerate() {
            if i == 0 && self.anchored_start {
                match rest.strip_prefix(piece.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
                if n == 1 && self.anchored_end {
                    return rest.is_empty();
                }
            } else if i + 1 == n && self.anchored_end {
                return rest.ends_with(piece.as_str());
            } else {
                match rest.find(piece.as_str()) {
                    Some(at) => rest = &rest[at + piece.len()..],
                    None => return false,
                }
            }
        }
        true
    }
}

fn regex_lite(text: &str) -> std::result::Result<Vec<Pattern>, String> {
    text.split('|')
        .map(|alternative| {
            let mut body = alternative;
            let anchored_start = body.starts_with('^');
            body = body.strip_prefix('^').unwrap_or(body);
            let anchored_end = body.ends_with('$');
            body = body.strip_suffix('$').unwrap_or(body);
            let pieces: Vec<String> = body
                .split(".*")
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            let special = |c: char| "()[]{}+?*\\$^".contains(c);
            if let Some(c) = pieces.iter().flat_map(|p| p.chars()).find(|c| special(*c)) {
                return Err(format!(
                    "gcr takes literal names, ^, $, .* and | in these patterns, not {c:?}"
                ));
            }
            Ok(Pattern {
                anchored_start,
                anchored_end,
                pieces,
            })
        })
        .collect()
}

/// Docker's text of the attributes before a line (`url.QueryEscape`d `k=v` pairs joined
/// by commas).
pub fn attributes_text(attributes: &[(String, String)]) -> String {
    attributes
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Go's `url.QueryEscape`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_docker_takes_them() {
        let joined = LogConfig::from_flags(None, &["max-size=10k,max-file=3".into()]).unwrap();
        let apart =
            LogConfig::from_flags(None, &["max-size=10k".into(), "max-file=3".into()]).unwrap();
        assert_eq!(joined, apart);
        assert_eq!(
            joined.rotation().unwrap(),
            Rotation {
                max_size: Some(10_000),
                max_files: 3
            }
        );
        let labels = LogConfig::from_flags(Some("json-file"), &["labels=a,b".into()]).unwrap();
        assert_eq!(labels.options["labels"], "a,b");
        assert_eq!(
            LogConfig::default().rotation().unwrap(),
            Rotation {
                max_size: None,
                max_files: 1
            }
        );
        let local = LogConfig::from_flags(Some("local"), &[]).unwrap();
        assert_eq!(local.rotation().unwrap().max_files, 5);
        assert!(!LogConfig::from_flags(Some("none"), &[])
            .unwrap()
            .keeps_log());
    }

    #[test]
    fn unknown_drivers_and_options_are_named() {
        let err = LogConfig::from_flags(Some("syslog"), &[]).unwrap_err();
        assert!(err.to_string().contains("\"syslog\""), "{err}");
        let err = LogConfig::from_flags(None, &["max-sise=1m".into()]).unwrap_err();
        assert!(err.to_string().contains("\"max-sise\""), "{err}");
        let err = LogConfig::from_flags(Some("none"), &["max-size=1m".into()]).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
        assert!(LogConfig::from_flags(None, &["max-size=lots".into()]).is_err());
        assert!(LogConfig::from_flags(None, &["max-size=1m".into(), "max-file=0".into()]).is_err());
        assert!(LogConfig::from_flags(None, &["max-file=3".into()]).is_err());
        assert!(LogConfig::from_flags(None, &["nonsense".into()]).is_err());
    }

    #[test]
    fn sizes_are_decimal_as_docker_s() {
        assert_eq!(parse_human_size("10k"), Some(10_000));
        assert_eq!(parse_human_size("10KB"), Some(10_000));
        assert_eq!(parse_human_size("1.5m"), Some(1_500_000));
        assert_eq!(parse_human_size("2g"), Some(2_000_000_000));
        assert_eq!(parse_human_size("512"), Some(512));
        assert_eq!(parse_human_size("0"), None);
        assert_eq!(parse_human_size("10x"), None);
    }

    #[test]
    fn details_name_the_chosen_labels_and_env() {
        let config = LogConfig::from_flags(
            None,
            &[
                "labels=team,missing".into(),
                "env=MODE".into(),
                "env-regex=^APP_".into(),
            ],
        )
        .unwrap();
        let labels = BTreeMap::from([
            ("team".to_string(), "a b".to_string()),
            ("other".to_string(), "x".to_string()),
        ]);
        let env = vec![
            "MODE=prod".to_string(),
            "APP_ONE=1".to_string(),
            "PATH=/bin".to_string(),
        ];
        let attributes = config.attributes(&labels, &env);
        assert_eq!(attributes_text(&attributes), "APP_ONE=1,MODE=prod,team=a+b");
        assert!(LogConfig::default().attributes(&labels, &env).is_empty());
        assert!(LogConfig::from_flags(None, &["env-regex=(a)".into()]).is_err());
    }
}
