//! Manifests, indexes and image configs as far as pulling needs them, parsed leniently from
//! the raw bytes (which are kept: digests are over them). Docker v2 schema 2 and OCI; schema 1
//! is refused. A document's kind must agree with its `mediaType` and the Content-Type
//! (CVE-2021-41190: one digest must not read as both a manifest and an index).

use serde::Deserialize;

use crate::platform::Platform;
use crate::reference::validate_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// The Accept header for manifest requests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Layer media types gcr unpacks.
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid json: {0}")]
    Json(String),
    #[error(
        "docker schema 1 manifests are not supported (push the image again with a current client)"
    )]
    Schema1,
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(u64),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("document is ambiguous: it has both \"manifests\" and \"layers\"/\"config\"")]
    Ambiguous,
    #[error("media type {declared:?} does not match the document, which is {actual}")]
    KindMismatch {
        declared: String,
        actual: &'static str,
    },
    #[error("document is neither an image manifest nor an index")]
    Unknown,
    #[error("invalid descriptor: {0}")]
    Descriptor(String),
    #[error("invalid image config: {0}")]
    Config(String),
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DescriptorPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Descriptor {
    fn validate(&self) -> Result<(), ManifestError> {
        validate_digest(&self.digest).map_err(ManifestError::Descriptor)?;
        if self.size < 0 {
            return Err(ManifestError::Descriptor(format!(
                "{} has a negative size",
                self.digest
            )));
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size.max(0) as u64
    }
}

#[derive(Debug, Deserialize)]
struct RawDocument {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<serde_json::Value>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

pub(crate) fn is_index_type(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_MANIFEST_LIST
}

fn is_manifest_type(t: &str) -> bool {
    t == OCI_MANIFEST || t == DOCKER_MANIFEST
}

/// Parses a manifest or index. `content_type` is the response's Content-Type, if any.
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document, ManifestError> {
    let raw: RawDocument =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let declared = raw.media_type.as_deref().unwrap_or("");
    if raw.fs_layers.is_some()
        || raw.schema_version == Some(1)
        || declared.starts_with(DOCKER_SCHEMA1)
    {
        return Err(ManifestError::Schema1);
    }
    match raw.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::SchemaVersion(0)),
    }
    let has_index = raw.manifests.is_some();
    let has_image = raw.layers.is_some() || raw.config.is_some();
    if has_index && has_image {
        return Err(ManifestError::Ambiguous);
    }
    let actual = if has_index {
        "an index"
    } else if has_image {
        "an image manifest"
    } else {
        return Err(ManifestError::Unknown);
    };
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| is_index_type(c) || is_manifest_type(c));
    for declared in [raw.media_type.as_deref(), content_type]
        .into_iter()
        .flatten()
    {
        let agrees = if has_index {
            is_index_type(declared)
        } else {
            is_manifest_type(declared)
        };
        if !agrees {
            if is_index_type(declared) || is_manifest_type(declared) {
                return Err(ManifestError::KindMismatch {
                    declared: declared.to_string(),
                    actual,
                });
            }
            return Err(ManifestError::MediaType(declared.to_string()));
        }
    }
    if has_index {
        let manifests = raw.manifests.unwrap_or_default();
        for m in &manifests {
            m.validate()?;
        }
        Ok(Document::Index { manifests })
    } else {
        let config = raw
            .config
            .ok_or_else(|| ManifestError::Descriptor("the manifest has no config".into()))?;
        config.validate()?;
        let layers = raw.layers.unwrap_or_default();
        for l in &layers {
            l.validate()?;
        }
        Ok(Document::Image { config, layers })
    }
}

/// The platforms an index offers, skipping entries without one and `unknown/unknown`
/// (attestation manifests).
pub fn index_platforms(manifests: &[Descriptor]) -> Vec<(Descriptor, Platform)> {
    manifests
        .iter()
        .filter_map(|m| {
            let p = m.platform.as_ref()?;
            if p.os.is_empty()
                || p.architecture.is_empty()
                || p.os == "unknown"
                || p.architecture == "unknown"
            {
                return None;
            }
            if is_index_type(&m.media_type) {
                return None;
            }
            Some((
                m.clone(),
                Platform::new(&p.os, &p.architecture, p.variant.as_deref()),
            ))
        })
        .collect()
}

/// What pulling needs from an image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfigSummary {
    pub platform: Option<Platform>,
    pub diff_ids: Vec<String>,
}

/// Reads the platform and `rootfs.diff_ids` of an image config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfigSummary, ManifestError> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        os: String,
        #[serde(default)]
        variant: Option<String>,
        rootfs: Option<RootFs>,
    }
    let cfg: Config =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Config(e.to_string()))?;
    let rootfs = cfg
        .rootfs
        .ok_or_else(|| ManifestError::Config("no rootfs section".into()))?;
    if rootfs.kind != "layers" {
        return Err(ManifestError::Config(format!(
            "rootfs type {:?} is not \"layers\"",
            rootfs.kind
        )));
    }
    for d in &rootfs.diff_ids {
        validate_digest(d).map_err(|e| ManifestError::Config(format!("diff_id: {e}")))?;
    }
    let platform = (!cfg.os.is_empty() && !cfg.architecture.is_empty())
        .then(|| Platform::new(&cfg.os, &cfg.architecture, cfg.variant.as_deref()));
    Ok(ImageConfigSummary {
        platform,
        diff_ids: rootfs.diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType": "{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion": 2, {mt}
               "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "{D1}", "size": 10}},
               "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "{D2}", "size": 20}}]}}"#
        )
    }

    #[test]
    fn image_manifests_with_and_without_media_type() {
        for mt in [None, Some(OCI_MANIFEST), Some(DOCKER_MANIFEST)] {
            let doc = parse_document(manifest(mt).as_bytes(), None).unwrap();
            let Document::Image { config, layers } = doc else {
                panic!("not an image")
            };
            assert_eq!(config.digest, D1);
            assert_eq!(layers[0].size(), 20);
        }
        // Content-Type with parameters is fine.
        parse_document(
            manifest(None).as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        // Unhelpful Content-Types are ignored.
        parse_document(manifest(None).as_bytes(), Some("application/octet-stream")).unwrap();
    }

    #[test]
    fn confusion_is_refused() {
        assert!(matches!(
            parse_document(manifest(Some(OCI_INDEX)).as_bytes(), None),
            Err(ManifestError::KindMismatch { .. })
        ));
        assert!(matches!(
            parse_document(manifest(None).as_bytes(), Some(DOCKER_MANIFEST_LIST)),
            Err(ManifestError::KindMismatch { .. })
        ));
        let both = format!(
            r#"{{"schemaVersion":2,"manifests":[],"layers":[],"config":{{"digest":"{D1}","size":1}}}}"#
        );
        assert_eq!(
            parse_document(both.as_bytes(), None),
            Err(ManifestError::Ambiguous)
        );
        let s1 = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}"#;
        assert_eq!(
            parse_document(s1.as_bytes(), None),
            Err(ManifestError::Schema1)
        );
        assert!(matches!(
            parse_document(b"{\"schemaVersion\":3,\"layers\":[]}", None),
            Err(ManifestError::SchemaVersion(3))
        ));
        assert!(parse_document(b"[]", None).is_err());
        assert!(matches!(
            parse_document(manifest(Some("text/plain")).as_bytes(), None),
            Err(ManifestError::MediaType(_))
        ));
        let bad_digest = manifest(None).replace(D2, "sha256:../../etc/passwd");
        assert!(matches!(
            parse_document(bad_digest.as_bytes(), None),
            Err(ManifestError::Descriptor(_))
        ));
    }

    #[test]
    fn index_platforms_skip_attestations() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1}}
            ]}}"#
        );
        let Document::Index { manifests } =
            parse_document(index.as_bytes(), Some(OCI_INDEX)).unwrap()
        else {
            panic!("not an index")
        };
        let platforms = index_platforms(&manifests);
        let names: Vec<String> = platforms.iter().map(|(_, p)| p.to_string()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64/v8"]);
    }

    #[test]
    fn configs() {
        let cfg = format!(
            r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D1}"]}},"config":{{"Healthcheck":{{}}}}}}"#
        );
        let s = parse_config(cfg.as_bytes()).unwrap();
        assert_eq!(s.diff_ids, vec![D1.to_string()]);
        assert_eq!(s.platform.unwrap().to_string(), "linux/arm64/v8");
        assert!(parse_config(b"{}").is_err());
        assert!(parse_config(br#"{"rootfs":{"type":"layers","diff_ids":["md5:1"]}}"#).is_err());
    }
}
