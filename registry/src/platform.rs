//! Platforms (`os/arch[/variant]`) and picking one from an image index, variant-aware
//! the way containerd's platform matcher is.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {input:?}: expected os/arch or os/arch/variant (e.g. linux/arm64)")]
    Invalid { input: String },
}

/// An OCI platform with normalised architecture and variant names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Builds a platform, normalising aliases (`x86_64` -> `amd64`, `aarch64` -> `arm64`,
    /// `armhf` -> `arm/v7`) and the default variants (`arm64` -> `v8`, `arm` -> `v7`).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = architecture.to_ascii_lowercase();
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(|v| v.to_ascii_lowercase());
        let (architecture, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), variant),
            "aarch64" | "arm64" => {
                // arm64 without a variant means v8, and "8" is written "v8".
                let v = match variant.as_deref() {
                    None | Some("8") | Some("v8") => "v8".to_string(),
                    Some(v) => v.to_string(),
                };
                ("arm64".to_string(), Some(v))
            }
            "armhf" => ("arm".to_string(), Some("v7".to_string())),
            "armel" => ("arm".to_string(), Some("v6".to_string())),
            "arm" => {
                let v = match variant.as_deref() {
                    None | Some("7") => "v7".to_string(),
                    Some("6") => "v6".to_string(),
                    Some("5") => "v5".to_string(),
                    Some(v) => v.to_string(),
                };
                ("arm".to_string(), Some(v))
            }
            "i386" | "i686" | "x86" => ("386".to_string(), variant),
            _ => (arch, variant),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// The platform this program runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, None)
    }

    /// Whether an image built for `candidate` runs here: same os and architecture, and the
    /// same variant, or for arm an older variant than the one wanted (v7 runs v6 and v5).
    pub fn accepts(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (Some(want), Some(have)) if want == have => true,
            (None, None) => true,
            (None, Some(_)) => true,
            (Some(want), Some(have)) if self.architecture == "arm" => arm_level(have)
                .zip(arm_level(want))
                .is_some_and(|(h, w)| h <= w),
            _ => false,
        }
    }

    /// How good a match `candidate` is (higher is better); only meaningful if accepted.
    fn score(&self, candidate: &Platform) -> u32 {
        match (&self.variant, &candidate.variant) {
            (Some(w), Some(h)) if w == h => 100,
            (None, None) => 100,
            (_, Some(h)) => arm_level(h).unwrap_or(0),
            _ => 0,
        }
    }
}

fn arm_level(variant: &str) -> Option<u32> {
    variant.strip_prefix('v')?.parse().ok()
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || PlatformError::Invalid {
            input: input.to_string(),
        };
        let parts: Vec<&str> = input.split('/').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !parts.iter().all(|p| ok_part(p)) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(bad()),
        }
    }
}

/// Picks the best entry for `wanted` among `(index, platform)` candidates; `None` if none
/// runs there. Entries without a platform or for `unknown/unknown` (attestations) must be
/// filtered out by the caller.
pub fn select<'a, T>(wanted: &Platform, candidates: &'a [(T, Platform)]) -> Option<&'a T> {
    candidates
        .iter()
        .filter(|(_, p)| wanted.accepts(p))
        .max_by_key(|(_, p)| wanted.score(p))
        .map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("Linux/ARM64/v8").to_string(), "linux/arm64/v8");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/am d64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_is_normalised() {
        let h = Platform::host();
        assert_eq!(h.os, std::env::consts::OS);
        assert!(!h.architecture.contains('_'), "{h}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn selection_is_variant_aware() {
        let index = vec![
            (0, Platform::new("linux", "amd64", None)),
            (1, Platform::new("linux", "arm", Some("v6"))),
            (2, Platform::new("linux", "arm", Some("v7"))),
            (3, Platform::new("linux", "arm64", Some("v8"))),
            (4, Platform::new("windows", "amd64", None)),
        ];
        assert_eq!(select(&p("linux/amd64"), &index), Some(&0));
        assert_eq!(select(&p("linux/arm64"), &index), Some(&3));
        assert_eq!(select(&p("linux/arm"), &index), Some(&2));
        assert_eq!(select(&p("linux/arm/v6"), &index), Some(&1));
        assert_eq!(select(&p("linux/arm/v5"), &index), None);
        assert_eq!(select(&p("windows/amd64"), &index), Some(&4));
        assert_eq!(select(&p("linux/s390x"), &index), None);

        // An arm64 entry written without a variant is v8.
        let index = vec![(7, Platform::new("linux", "arm64", None))];
        assert_eq!(select(&p("linux/arm64/v8"), &index), Some(&7));
        // arm v7 host accepts a v6-only image.
        let index = vec![(9, Platform::new("linux", "arm", Some("v6")))];
        assert_eq!(select(&p("linux/arm"), &index), Some(&9));
        // Plain amd64 accepts any amd64 variant; an explicit variant must match.
        let index = vec![(5, Platform::new("linux", "amd64", Some("v3")))];
        assert_eq!(select(&p("linux/amd64"), &index), Some(&5));
        assert_eq!(select(&p("linux/amd64/v2"), &index), None);
    }
}
