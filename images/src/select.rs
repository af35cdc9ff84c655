//! `images [REPOSITORY[:TAG]] [--filter KEY=VALUE]`: which images, and which of their names,
//! a listing shows.

use std::collections::{BTreeMap, BTreeSet};

use gcr_storage::{ImageRecord, Store};

use crate::{familiar_name, labels, normalize_name, repository, ImageError, Result};

/// The images of `records` (with only their matching names) that pass `reference` and every
/// filter. `reference` without a tag means every tag of that repository. Filters are
/// `dangling=true|false`, `reference=PATTERN` (`*` and `?`, matched against the full name, the
/// familiar name and the familiar repository) and `label=KEY[=VALUE]`; several values of one
/// key pass when any matches, different keys must all pass (Docker's rule).
pub fn select(
    store: &Store,
    records: Vec<ImageRecord>,
    reference: Option<&str>,
    filters: &[String],
) -> Result<Vec<ImageRecord>> {
    let filters = parse_filters(filters)?;
    let wanted = match reference {
        None => None,
        Some(r) => {
            let full = normalize_name(r)?;
            let tagged =
                r.rsplit('/').next().is_some_and(|last| last.contains(':')) || r.contains('@');
            Some((full, tagged))
        }
    };
    let keys: BTreeSet<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    let patterns: Vec<&str> = filters
        .iter()
        .filter(|(k, _)| k == "reference")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut out = Vec::new();
    for mut record in records {
        if let Some((full, tagged)) = &wanted {
            record.names.retain(|n| {
                if *tagged {
                    n == full
                } else {
                    repository(n) == repository(full)
                }
            });
            if record.names.is_empty() {
                continue;
            }
        }
        // Read only when a label filter asks, and then once per image.
        let mut have: Option<BTreeMap<String, String>> = None;
        let mut keep = true;
        for key in &keys {
            let mut values = filters
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            let pass = match *key {
                "dangling" => values.any(|v| (v == "true") == record.names.is_empty()),
                "reference" => {
                    record.names.retain(|n| {
                        let short = familiar_name(n);
                        patterns.iter().any(|p| {
                            glob_match(p, n)
                                || glob_match(p, &short)
                                || glob_match(p, repository(&short))
                        })
                    });
                    !record.names.is_empty()
                }
                _ => {
                    // Every label given must match (Docker's rule for labels).
                    let have = have.get_or_insert_with(|| labels(store, &record));
                    values.all(|v| match v.split_once('=') {
                        Some((k, want)) => have.get(k).is_some_and(|x| x == want),
                        None => have.contains_key(v),
                    })
                }
            };
            keep &= pass;
        }
        if keep {
            out.push(record);
        }
    }
    Ok(out)
}

/// `KEY=VALUE` filters, checked before anything is listed.
fn parse_filters(filters: &[String]) -> Result<Vec<(String, String)>> {
    let invalid = |f: &str, reason: &str| ImageError::Invalid {
        what: "filter",
        input: f.to_string(),
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    for f in filters {
        let (key, value) = f
            .split_once('=')
            .ok_or_else(|| invalid(f, "use KEY=VALUE"))?;
        match key {
            "dangling" if matches!(value, "true" | "false") => {}
            "dangling" => return Err(invalid(f, "dangling is true or false")),
            "reference" | "label" => {}
            other => {
                return Err(invalid(
                    f,
                    &format!("unknown key {other:?}: use dangling, reference or label"),
                ))
            }
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Shell-style `*` and `?` matching of a whole name.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_names() {
        assert!(glob_match("busy*", "busybox:latest"));
        assert!(glob_match("*box", "busybox"));
        assert!(glob_match("b?sybox", "busybox"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("busy", "busybox"));
        assert!(!glob_match("*x", "busybox:latest"));
        assert!(glob_match("*/app:*", "localhost/app:1"));
    }

    #[test]
    fn filters_are_checked_before_listing() {
        let ok = ["dangling=true", "reference=busy*", "label=a=b", "label=a"];
        let ok: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_filters(&ok).unwrap().len(), 4);
        for bad in ["dangling", "dangling=maybe", "colour=red"] {
            let err = parse_filters(&[bad.to_string()]).unwrap_err();
            assert!(
                matches!(&err, ImageError::Invalid { what: "filter", input, .. } if input == bad),
                "{bad}: {err:?}"
            );
        }
    }
}
