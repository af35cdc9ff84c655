//! Image references, parsed and normalised the way Docker does it
//! (github.com/distribution/reference `ParseNormalizedNamed`).
//!
//! `ubuntu` -> `docker.io/library/ubuntu:latest`, `host:port/path:tag`, `name@sha256:..`,
//! `name:tag@sha256:..`. The first path component is a registry when it contains a `.` or a `:`,
//! is `localhost`, or has an uppercase letter; otherwise the registry is Docker Hub.

use std::fmt;
use std::str::FromStr;

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: the reference is empty")]
    Empty { input: String },
    #[error("invalid reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid reference {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error(
        "invalid reference {input:?}: cannot specify 64-byte hexadecimal strings (that is an image id, not a name)"
    )]
    LooksLikeId { input: String },
    #[error("invalid reference {input:?}: name longer than {MAX_NAME_LEN} characters")]
    TooLong { input: String },
}

/// A fully normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `input` like `docker pull` does.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError::Invalid {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(ReferenceError::Empty {
                input: input.to_string(),
            });
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::LooksLikeId {
                input: input.to_string(),
            });
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters"));
        }

        // The digest comes after the first '@'.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|reason| err(&reason))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &rest[at + 1..];
                validate_tag(tag).map_err(|reason| err(&reason))?;
                (&rest[..at], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err("the repository name is empty"));
        }

        let (registry, remainder) = split_registry(name);
        validate_registry(registry).map_err(|reason| err(&reason))?;
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry.to_string()
        };
        let repository = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: input.to_string(),
            });
        }
        validate_repository(&repository).map_err(|reason| err(&reason))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                input: input.to_string(),
            });
        }

        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as written in references: `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host:port the registry API is served from (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The repository path inside the registry: `library/ubuntu`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What the manifest is fetched by: the digest when there is one (it wins over a tag).
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The name an image pulled by this reference is stored under: `repo@sha256:..` when
    /// pulled by digest (a tag next to a digest is not trusted to name it), else `repo:tag`.
    pub fn store_name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{}", self.name(), d),
            (None, Some(t)) => format!("{}:{}", self.name(), t),
            (None, None) => format!("{}:{}", self.name(), DEFAULT_TAG),
        }
    }

    /// The same repository, addressed by `digest` (no tag).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// The host:port serving the registry API for a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY || registry == "index.docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Normalises a registry as given to `login`/`logout` (`docker.io`, `https://host:5000/`,
/// `index.docker.io`) to the form used in references.
pub fn normalize_registry(input: &str) -> Result<String, ReferenceError> {
    let trimmed = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"))
        .unwrap_or(input);
    let host = trimmed.split('/').next().unwrap_or(trimmed);
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
        other => other,
    };
    validate_registry(host).map_err(|reason| ReferenceError::Invalid {
        input: input.to_string(),
        reason,
    })?;
    Ok(host.to_string())
}

/// Docker's splitDockerDomain: the first component is a registry if it has a '.' or ':', is
/// `localhost`, or is not all lowercase.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} is not of the form sha256:<64 hex digits>"
        ));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not of the form sha256:<64 lowercase hex digits>"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag {tag:?} is invalid (letters, digits, '_', '.', '-', at most {MAX_TAG_LEN}, not starting with '.' or '-')"
        ));
    }
    Ok(())
}

/// `host[:port]`, host being DNS labels, an IPv4 address or a bracketed IPv6 address.
fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = || format!("registry {registry:?} is not a valid host[:port]");
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "registry {registry:?} has an invalid port {port:?}"
            ));
        }
    }
    if registry.starts_with('[') {
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

/// Path components of `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*` separated by '/'.
fn validate_repository(repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "repository path component {component:?} is invalid (lowercase letters and digits, separated by '.', '_', '__' or dashes)"
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or any number of '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn full(input: &str) -> String {
        match Reference::parse(input) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{input}: {e}"),
        }
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(full("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(full("ubuntu:24.04"), "docker.io/library/ubuntu:24.04");
        assert_eq!(full("library/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(full("docker.io/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(
            full("index.docker.io/ubuntu"),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(full("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(full("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn registries() {
        assert_eq!(
            full("127.0.0.1:5000/busybox:v2s2"),
            "127.0.0.1:5000/busybox:v2s2"
        );
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(
            full("quay.io/podman/stable"),
            "quay.io/podman/stable:latest"
        );
        assert_eq!(full("Example.com/x"), "Example.com/x:latest");
        assert_eq!(full("[::1]:5000/x:1"), "[::1]:5000/x:1");
        // A first component without '.', ':' or uppercase is a Docker Hub namespace.
        assert_eq!(full("myhost/x"), "docker.io/myhost/x:latest");
        let r = Reference::parse("localhost:5000/a/b:t").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.store_name(), format!("docker.io/library/busybox@{D}"));

        let r = Reference::parse(&format!("127.0.0.1:5000/busybox:latest@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/busybox:latest@{D}"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.store_name(), format!("127.0.0.1:5000/busybox@{D}"));

        let r = Reference::parse("busybox:1.36").unwrap();
        assert_eq!(r.manifest_reference(), "1.36");
        assert_eq!(r.store_name(), "docker.io/library/busybox:1.36");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "Ubuntu",
            "docker.io/Library/ubuntu",
            "ubuntu:",
            "ubuntu:-x",
            ":tag",
            "ubuntu@sha256:abc",
            "ubuntu@md5:0123",
            &format!("ubuntu@{}", D.to_uppercase().replace("SHA256", "sha256")),
            "a//b",
            "a/b/",
            "/a",
            "a b",
            "foo:bar/baz",
            "host:99999999/x",
            "-host.com/x",
            "a..b",
            "a-/b",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &"a".repeat(300),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        let e = Reference::parse("Ubuntu").unwrap_err().to_string();
        assert!(e.contains("must be lowercase"), "{e}");
        let e = Reference::parse("ubuntu@md5:00").unwrap_err().to_string();
        assert!(e.contains("only sha256"), "{e}");
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        for odd in [
            "ü",
            "a:ü",
            "@",
            "a@",
            "ü/ü:ü@ü",
            ":",
            "/",
            "//",
            "a:",
            "a/:b",
            "[",
            "[::1",
            "[::1]x/a",
            "[zz]:1/a",
            "a@sha256:",
            "x/y@@sha256:00",
            "host:/x",
            "host:1:2/x",
            "é.com/x",
            "a\0b",
            "a\nb",
            "a:b:c",
        ] {
            assert!(Reference::parse(odd).is_err(), "{odd:?} should be invalid");
        }
    }

    #[test]
    fn separators() {
        assert!(component_ok("a.b_c__d---e"));
        assert!(!component_ok("a___b"));
        assert!(!component_ok("a._b"));
        assert!(!component_ok("_a"));
        assert_eq!(full("my_app.x-y:1"), "docker.io/library/my_app.x-y:1");
    }

    #[test]
    fn registry_normalisation_for_login() {
        assert_eq!(normalize_registry("docker.io").unwrap(), "docker.io");
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        assert_eq!(
            normalize_registry("127.0.0.1:5443").unwrap(),
            "127.0.0.1:5443"
        );
        assert_eq!(normalize_registry("https://quay.io").unwrap(), "quay.io");
        assert!(normalize_registry("bad host").is_err());
    }
}
