//! Container names: unique in a store, checked and recorded under one lock.

use crate::container::{list, short_id};
use crate::error::{ContainerError, Result};

/// Held while a name is checked and then recorded, so that two `gcr run --name x` at once
/// cannot both take it.
pub struct NameLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl NameLock {
    pub fn take(store: &gcr_storage::Store) -> Result<NameLock> {
        let path = store.root().join("container-names.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ContainerError::io("open", &path, e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(NameLock)
            .map_err(|(_, e)| ContainerError::io("lock", &path, e.into()))
    }
}

/// Refuses a name another container already has, as Docker does (hold a [`NameLock`]).
pub fn ensure_name_free(store: &gcr_storage::Store, name: &str) -> Result<()> {
    if let Some(c) = list(store)?
        .iter()
        .find(|c| c.meta.name.as_deref() == Some(name))
    {
        return Err(ContainerError::NameInUse {
            name: name.to_string(),
            by: short_id(&c.id),
        });
    }
    Ok(())
}

/// Docker's rule for container names: letters, digits, `_`, `.` and `-`, starting with a
/// letter or digit.
pub fn check_name(name: &str) -> Result<()> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
    if !valid {
        return Err(ContainerError::invalid(format!(
            "invalid name {name:?}: use letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_docker() {
        for good in ["web", "a.b-c_d", "9lives"] {
            assert!(super::check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a/b", "a b", "ü"] {
            assert!(super::check_name(bad).is_err(), "{bad}");
        }
    }
}
