//! Output helpers shared by the commands: sizes, ages, tables and error chains.

use std::fmt::Write as _;

/// `anyhow` error with its causes on one line: "a: b: c".
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        // Libraries often repeat their source's text; skip causes already said.
        if i > 0 && out.contains(&text) {
            continue;
        }
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A size the way Docker prints it: decimal units, three significant digits ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let text = format!("{value:.3}");
    // Three significant digits, trailing zeros dropped, like Go's %.3g.
    let digits_before_point = text.find('.').unwrap_or(text.len());
    let keep = if digits_before_point >= 3 {
        digits_before_point
    } else {
        4
    };
    let mut short: String = text.chars().take(keep).collect();
    if short.contains('.') {
        while short.ends_with('0') {
            short.pop();
        }
        if short.ends_with('.') {
            short.pop();
        }
    }
    format!("{short}{}", UNITS[unit])
}

/// "3 hours ago" from an RFC 3339 timestamp; "N/A" when missing or unparsable.
pub fn human_age(created: Option<&str>) -> String {
    let Some(created) = created else {
        return "N/A".to_string();
    };
    let Ok(when) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "N/A".to_string();
    };
    let secs = (chrono::Utc::now() - when.with_timezone(&chrono::Utc)).num_seconds();
    if secs < 1 {
        return "Less than a second ago".to_string();
    }
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        s if s < 60 => plural(s, "second"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 86400 * 2 => plural(s / 3600, "hour"),
        s if s < 86400 * 14 => plural(s / 86400, "day"),
        s if s < 86400 * 60 => plural(s / (86400 * 7), "week"),
        s if s < 86400 * 365 * 2 => plural(s / (86400 * 30), "month"),
        s => plural(s / (86400 * 365), "year"),
    }
}

/// Splits a stored image name into (repository, tag) for listing; digest names get `<none>`.
pub fn split_name(name: &str) -> (String, String) {
    if let Some((repo, _digest)) = name.split_once('@') {
        return (repo.to_string(), "<none>".to_string());
    }
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(colon) => (
            name[..slash + colon].to_string(),
            name[slash + colon + 1..].to_string(),
        ),
        None => (name.to_string(), "latest".to_string()),
    }
}

/// A left-aligned table with columns separated by three spaces, like Docker's tabwriter.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The 12-hex-digit short form of a digest ("sha256:abc..." -> "abc...").
pub fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(116_000_000), "116MB");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(12_340_000_000), "12.3GB");
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("127.0.0.1:5000/busybox:latest"),
            ("127.0.0.1:5000/busybox".into(), "latest".into())
        );
        assert_eq!(
            split_name("docker.io/library/debian:bookworm"),
            ("docker.io/library/debian".into(), "bookworm".into())
        );
        assert_eq!(
            split_name("localhost:5000/x@sha256:abcd"),
            ("localhost:5000/x".into(), "<none>".into())
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A     BB\nxxx   y\n");
    }
}
