//! Member indexing: the members of a tar archive by normalised name, read in place (nothing is
//! extracted), with names that are absolute or climb with `..` and links that leave the
//! archive refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{blob_member, ArchiveError};
use crate::digest::Digest;
use crate::MAX_DOCUMENT_SIZE;

/// Links followed from one member before giving up.
const MAX_LINK_HOPS: usize = 16;

/// A member's data in the archive file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub(super) offset: u64,
    pub(super) size: u64,
}

#[derive(Debug, Clone)]
enum Node {
    File(Member),
    /// A symlink or hardlink, its target already made archive-relative.
    Link(String),
}

/// The members of a tar archive by normalised name, without extracting anything.
pub(super) struct ArchiveIndex {
    pub(super) path: PathBuf,
    file: File,
    members: HashMap<String, Node>,
}

/// A member name made relative and normalised; `None` when it is absolute or climbs out with
/// `..`.
pub(super) fn normalize_member(name: &[u8]) -> Result<String, &'static str> {
    if name.starts_with(b"/") {
        return Err("is an absolute path");
    }
    let text = std::str::from_utf8(name).map_err(|_| "is not valid UTF-8")?;
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("climbs out of the archive with '..'"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A symlink target resolved against the link's directory, staying inside the archive.
fn resolve_link(member: &str, target: &[u8]) -> Result<String, &'static str> {
    if target.starts_with(b"/") {
        return Err("is a symlink to an absolute path");
    }
    let target = std::str::from_utf8(target).map_err(|_| "has a link target that is not UTF-8")?;
    let mut parts: Vec<&str> = member.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("is a link pointing out of the archive");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

impl ArchiveIndex {
    pub(super) fn open(path: &Path) -> Result<ArchiveIndex, ArchiveError> {
        let read_err = |source: io::Error| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        // The tar crate's messages ("failed to read entire block") do not say what is wrong.
        let tar_err = |source: io::Error| ArchiveError::Read {
            path: path.to_path_buf(),
            source: io::Error::new(
                source.kind(),
                format!("not a tar archive, or a truncated one ({source})"),
            ),
        };
        let file = File::open(path).map_err(read_err)?;
        let mut members = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(tar_err)? {
                let entry = entry.map_err(tar_err)?;
                let raw = entry.path_bytes().into_owned();
                let unsafe_member = |reason: &'static str| ArchiveError::UnsafeMember {
                    path: path.to_path_buf(),
                    name: String::from_utf8_lossy(&raw).into_owned(),
                    reason,
                };
                let name = normalize_member(&raw).map_err(unsafe_member)?;
                let kind = entry.header().entry_type();
                let node = match kind {
                    tar::EntryType::Regular | tar::EntryType::Continuous => Node::File(Member {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    }),
                    tar::EntryType::Symlink => {
                        let target = entry.link_name_bytes().unwrap_or_default();
                        Node::Link(resolve_link(&name, &target).map_err(unsafe_member)?)
                    }
                    tar::EntryType::Link => {
                        let target = entry.link_name_bytes().unwrap_or_default();
                        Node::Link(normalize_member(&target).map_err(unsafe_member)?)
                    }
                    // Directories and anything else are never read.
                    _ => continue,
                };
                members.insert(name, node);
            }
        }
        Ok(ArchiveIndex {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The member `name` (as a manifest names it), following links inside the archive.
    pub(super) fn member(&self, name: &str, why: &str) -> Result<Member, ArchiveError> {
        let missing = |n: &str| ArchiveError::MissingMember {
            path: self.path.clone(),
            name: n.to_string(),
            why: why.to_string(),
        };
        let mut current =
            normalize_member(name.as_bytes()).map_err(|reason| ArchiveError::UnsafeMember {
                path: self.path.clone(),
                name: name.to_string(),
                reason,
            })?;
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&current) {
                Some(Node::File(m)) => return Ok(*m),
                Some(Node::Link(target)) => current = target.clone(),
                None => return Err(missing(&current)),
            }
        }
        Err(ArchiveError::UnsafeMember {
            path: self.path.clone(),
            name: name.to_string(),
            reason: "is a chain of links too long to follow",
        })
    }

    pub(super) fn reader(&self, member: Member) -> MemberReader<'_> {
        MemberReader {
            file: &self.file,
            pos: member.offset,
            end: member.offset + member.size,
        }
    }

    /// A whole (small) member, refusing more than `limit` bytes.
    pub(super) fn read_small(
        &self,
        name: &str,
        why: &str,
        limit: u64,
    ) -> Result<Vec<u8>, ArchiveError> {
        let member = self.member(name, why)?;
        if member.size > limit {
            return Err(ArchiveError::Invalid {
                path: self.path.clone(),
                what: format!("member {name:?}"),
                reason: format!("{} bytes, more than the {limit} bytes limit", member.size),
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(member.size).unwrap_or(0));
        self.reader(member)
            .read_to_end(&mut bytes)
            .map_err(|source| ArchiveError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(bytes)
    }

    /// A small blob from `blobs/<alg>/<hex>`, digest verified.
    pub(super) fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let bytes = self.read_small(&blob_member(digest), what, MAX_DOCUMENT_SIZE)?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ArchiveError::DigestMismatch {
                path: self.path.clone(),
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub(super) fn invalid(&self, what: &str, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Invalid {
            path: self.path.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads one member's bytes by position (the archive file is shared, never seeked).
pub(super) struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member(b"./a//b/./c").unwrap(), "a/b/c");
        assert!(normalize_member(b"../x").is_err());
        assert!(normalize_member(b"a/../../x").is_err());
        assert!(normalize_member(b"a/../b").is_err());
        assert!(normalize_member(b"/etc/passwd").is_err());
        assert_eq!(resolve_link("d/layer.tar", b"../x.tar").unwrap(), "x.tar");
        assert!(resolve_link("layer.tar", b"../x.tar").is_err());
        assert!(resolve_link("d/l", b"/etc/shadow").is_err());
    }
}
