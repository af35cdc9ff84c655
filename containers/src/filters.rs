//! Docker's container filters (`ps --filter`, the API's `filters`): id, name, status,
//! ancestor, exited, label, health. Values of one key: any may match; different keys: all must.

use crate::container::{Container, State};
use crate::error::{ContainerError, Result};

/// Checked filters.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<(String, String)>);

const KEYS: &[&str] = &[
    "id", "name", "status", "ancestor", "exited", "label", "health",
];

impl Filters {
    /// `KEY=VALUE` entries.
    pub fn parse(given: &[String]) -> Result<Filters> {
        given
            .iter()
            .map(|f| {
                let (key, value) = f.split_once('=').ok_or_else(|| {
                    ContainerError::invalid(format!("invalid filter {f:?}: use KEY=VALUE"))
                })?;
                Filters::check(key, value)?;
                Ok((key.to_string(), value.to_string()))
            })
            .collect::<Result<Vec<_>>>()
            .map(Filters)
    }

    fn check(key: &str, value: &str) -> Result<()> {
        if !KEYS.contains(&key) {
            return Err(ContainerError::invalid(format!(
                "unknown filter {key:?}: use id, name, status, ancestor, exited, label or health"
            )));
        }
        if key == "name" && regex::Regex::new(value).is_err() {
            return Err(ContainerError::invalid(format!(
                "invalid name filter {value:?}: not a regular expression"
            )));
        }
        if key == "status" && State::parse(value).is_none() {
            return Err(ContainerError::invalid(format!(
                "invalid status filter {value:?}: use created, running, paused, exited or removing"
            )));
        }
        if key == "health" && !["starting", "healthy", "unhealthy", "none"].contains(&value) {
            return Err(ContainerError::invalid(format!(
                "invalid health filter {value:?}: use starting, healthy, unhealthy or none"
            )));
        }
        Ok(())
    }

    /// Whether a filter looks at stopped containers too (state filters list every one).
    pub fn wants_stopped(&self) -> bool {
        self.0.iter().any(|(k, _)| k == "status" || k == "exited")
    }

    /// Whether `c` passes every filter; `normalize` turns an image name into its stored form
    /// (`busybox` -> `docker.io/library/busybox:latest`) for `ancestor`.
    pub fn matches(&self, c: &Container, normalize: &dyn Fn(&str) -> Option<String>) -> bool {
        let keys: std::collections::BTreeSet<&str> =
            self.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.into_iter().all(|key| {
            let mut values = self.0.iter().filter(|(k, _)| k == key);
            let one = |(_, value): &(String, String)| match key {
                "id" => c.id.starts_with(value.as_str()),
                // A regular expression, as Docker's (`^db$`), tried on the name with and
                // without Docker's leading slash; checked when the filters are parsed.
                "name" => c.meta.name.as_deref().is_some_and(|n| {
                    regex::Regex::new(value)
                        .is_ok_and(|re| re.is_match(n) || re.is_match(&format!("/{n}")))
                }),
                "status" => c.state().as_str() == value,
                "ancestor" => {
                    let image_id = c.image_id().unwrap_or_default();
                    let id = image_id.trim_start_matches("sha256:");
                    c.meta.image == *value
                        || normalize(&c.meta.image).is_some_and(|n| Some(n) == normalize(value))
                        || (value.len() >= 4 && id.starts_with(value.trim_start_matches("sha256:")))
                }
                // Docker's: the health status of a running container, `none` without a check.
                "health" => match &c.meta.health {
                    None => value == "none",
                    Some(_) => {
                        c.alive()
                            && crate::health::state(&c.dir).is_some_and(|h| h.status == *value)
                    }
                },
                "exited" => c.exit_code().is_some_and(|code| code.to_string() == *value),
                // label=KEY or label=KEY=VALUE
                "label" => match value.split_once('=') {
                    Some((k, v)) => c.meta.labels.get(k).is_some_and(|have| have == v),
                    None => c.meta.labels.contains_key(value.as_str()),
                },
                _ => false,
            };
            // Values of one key: any may match, but every label must (Docker's rule).
            if key == "label" {
                values.all(one)
            } else {
                values.any(one)
            }
        })
    }
}
