//! The OCI image config the builder reads from base images and writes for the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `config` section (Docker's container config keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl RunConfig {
    pub fn env_list(&self) -> Vec<String> {
        self.env.clone().unwrap_or_default()
    }

    /// Set `key=value` in Env, replacing an earlier value of the key in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }

    /// Env as (key, value) pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env_list()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: &'a [String],
}

#[derive(Debug, Clone, Serialize)]
struct ImageConfigOut<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: &'a RunConfig,
    rootfs: RootFs<'a>,
    history: &'a [History],
    /// `--cache-to type=inline`: BuildKit's key for the cache config, base64.
    #[serde(
        rename = "moby.buildkit.cache.v0",
        skip_serializing_if = "Option::is_none"
    )]
    inline_cache: Option<&'a str>,
}

/// The platform an image is for (`os/arch[/variant]`, normalised as BuildKit does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        let (os, arch, variant) = host_platform();
        Platform {
            architecture: arch.to_string(),
            os: os.to_string(),
            variant: (!variant.is_empty()).then(|| variant.to_string()),
        }
    }

    /// Parses `os/arch[/variant]` (or `arch` alone: linux), with containerd's aliases:
    /// x86_64 and x86-64 are amd64, aarch64 is arm64 (its v8 variant is dropped, as
    /// BuildKit's TARGETVARIANT is empty for it), armhf is arm/v7, armel arm/v6, and arm
    /// alone is arm/v7.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(format!("invalid platform {text:?}: use os/arch[/variant]")),
        };
        if os.is_empty() || arch.is_empty() || variant == Some("") {
            return Err(format!("invalid platform {text:?}: use os/arch[/variant]"));
        }
        let os = os.to_lowercase();
        let (arch, variant) = match (arch.to_lowercase().as_str(), variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v.map(str::to_string)),
            ("aarch64" | "arm64", None | Some("v8")) => ("arm64".to_string(), None),
            ("armhf", None) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", None) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None) => ("arm".to_string(), Some("v7".to_string())),
            ("i386" | "386", v) => ("386".to_string(), v.map(str::to_string)),
            (a, v) => (a.to_string(), v.map(str::to_string)),
        };
        if os != "linux" {
            return Err(format!(
                "platform {text:?} is not supported: gcr builds linux images only"
            ));
        }
        const KNOWN: &[&str] = &[
            "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le",
            "ppc64", "ppc64le", "riscv64", "s390x",
        ];
        if !KNOWN.contains(&arch.as_str()) {
            return Err(format!(
                "platform {text:?} is not supported: unknown architecture {arch:?} (known: {})",
                KNOWN.join(", ")
            ));
        }
        Ok(Platform {
            architecture: arch,
            os,
            variant,
        })
    }

    /// Whether an image with this config platform can serve as `self` (an arm64 image with
    /// variant v8 is an arm64 image).
    pub fn accepts(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let variant = variant.filter(|v| !(architecture == "arm64" && *v == "v8"));
        self.os == os
            && self.architecture == architecture
            && (self.variant.is_none() || self.variant.as_deref() == variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The host platform in OCI terms.
pub fn host_platform() -> (&'static str, &'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch, if arch == "arm" { "v7" } else { "" })
}

/// Serialise an image config.
pub(crate) fn render_config(
    created: &str,
    platform: &Platform,
    config: &RunConfig,
    diff_ids: &[String],
    history: &[History],
    inline_cache: Option<&str>,
) -> Vec<u8> {
    let out = ImageConfigOut {
        created,
        architecture: &platform.architecture,
        os: &platform.os,
        variant: platform.variant.as_deref(),
        config,
        rootfs: RootFs {
            kind: "layers",
            diff_ids,
        },
        history,
        inline_cache,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// One descriptor of a manifest.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
struct ManifestOut<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: &'a std::collections::BTreeMap<String, String>,
}

/// Serialise an OCI image manifest (`--annotation`s in its annotations).
pub(crate) fn render_manifest(
    config: Descriptor,
    layers: &[Descriptor],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let out = ManifestOut {
        schema_version: 2,
        media_type: gcr_storage::OCI_MANIFEST,
        config,
        layers,
        annotations,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// The OCI media type for a base image's layer (Docker's types hold the same bytes).
pub(crate) fn oci_layer_type(media_type: &str) -> String {
    gcr_storage::oci_layer_media_type(media_type)
}

/// RFC 3339 UTC time for a Unix timestamp (seconds).
pub(crate) fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, RFC 3339 with nanoseconds as Docker writes it.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Serialise the OCI image index of a multi-platform build: one descriptor per platform's
/// manifest, with its platform.
pub(crate) fn render_index(
    store: &gcr_storage::Store,
    images: &[(Platform, gcr_storage::ImageRecord)],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, gcr_storage::StoreError> {
    let mut manifests = Vec::new();
    for (platform, record) in images {
        let size = store.image_manifest_bytes(record)?.len();
        let mut p = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
        });
        if let Some(v) = &platform.variant {
            p["variant"] = Value::String(v.clone());
        }
        manifests.push(serde_json::json!({
            "mediaType": record.manifest_media_type,
            "digest": record.manifest_digest.as_str(),
            "size": size,
            "platform": p,
        }));
    }
    let mut index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = serde_json::json!(annotations);
    }
    Ok(serde_json::to_vec(&index).unwrap_or_default())
}
