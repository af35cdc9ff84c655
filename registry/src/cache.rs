//! The registry side of a build cache (`gcr build --cache-to/--cache-from`): a cache is one
//! OCI manifest (BuildKit's `image-manifest=true` form) whose config is the cache config
//! (`application/vnd.buildkit.cacheconfig.v0`) and whose layers are the cached layer blobs,
//! each annotated with its uncompressed digest. Reading also takes BuildKit's index form
//! and, for an ordinary image, its config (the inline cache lives there).

use futures_util::TryStreamExt;
use gcr_storage::{Digest, LayerExpectation, Store};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::manifest::{Descriptor, Document};
use crate::pull::{
    fetch_config, fetch_layer, fetch_manifest, PullError, PullErrorKind, PullEvent, PullOptions,
};
use crate::push::{
    put_manifest, BlobContext, BlobJob, Counts, PushError, PushErrorKind, PushEvent, PushOptions,
};
use crate::reference::Reference;

/// Media type of BuildKit's cache config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a cache reference holds.
#[derive(Debug, Clone)]
pub enum CacheDocument {
    /// A cache manifest: the cache config's bytes.
    Cache(Vec<u8>),
    /// An image: its config's bytes and its layer descriptors (for an inline cache).
    Image {
        config: Vec<u8>,
        layers: Vec<Descriptor>,
    },
}

/// One layer to push with a cache.
#[derive(Debug, Clone)]
pub struct CacheBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    pub created: String,
}

/// Fetches the cache manifest (or image) `reference` names and its config; no layers.
pub async fn fetch_cache(
    reference: &Reference,
    opts: &PullOptions,
    events: UnboundedSender<PullEvent>,
) -> Result<CacheDocument, PullError> {
    let err = |kind| PullError {
        reference: reference.to_string(),
        kind,
    };
    let retry = opts.retry(&events);
    let client = opts
        .connect::<PullErrorKind, _>(reference, &retry)
        .await
        .map_err(err)?;
    let scope = format!("repository:{}:pull", reference.repository());
    let top = retry
        .run("fetching the cache manifest", || {
            fetch_manifest(
                &client,
                reference,
                &scope,
                reference.manifest_reference(),
                None,
            )
        })
        .await
        .map_err(err)?;
    let config = match &top.document {
        Document::Index { manifests } => {
            let Some(config) = manifests
                .iter()
                .find(|m| m.media_type == CACHE_CONFIG_MEDIA_TYPE)
            else {
                return Err(err(PullErrorKind::Internal(
                    "the index holds no build cache config (is it an image index?)".into(),
                )));
            };
            config.clone()
        }
        Document::Image { config, .. } => config.clone(),
    };
    let bytes = retry
        .run("fetching the cache config", || {
            fetch_config(&client, reference.repository(), &scope, &config)
        })
        .await
        .map_err(err)?;
    Ok(match top.document {
        Document::Image { layers, .. } if config.media_type != CACHE_CONFIG_MEDIA_TYPE => {
            CacheDocument::Image {
                config: bytes,
                layers,
            }
        }
        _ => CacheDocument::Cache(bytes),
    })
}

/// Pulls layer blobs of a cache (or of the image holding an inline cache) into the store,
/// `opts.max_concurrent_downloads` at once over one connection.
pub async fn pull_cache_layers(
    store: &Store,
    reference: &Reference,
    expects: &[LayerExpectation],
    opts: &PullOptions,
    events: UnboundedSender<PullEvent>,
) -> Result<(), PullError> {
    let err = |kind| PullError {
        reference: reference.to_string(),
        kind,
    };
    let retry = opts.retry(&events);
    let client = opts
        .connect::<PullErrorKind, _>(reference, &retry)
        .await
        .map_err(err)?;
    let scope = format!("repository:{}:pull", reference.repository());
    let (client, scope, retry, events) = (&client, scope.as_str(), &retry, &events);
    futures_util::stream::iter(expects.iter().map(Ok))
        .try_for_each_concurrent(opts.max_concurrent_downloads.max(1), |expect| async move {
            let what = format!("layer {}", expect.digest);
            retry
                .run(&what, || {
                    fetch_layer(
                        client,
                        store,
                        reference.repository(),
                        scope,
                        expect,
                        events,
                        opts,
                    )
                })
                .await
        })
        .await
        .map_err(err)
}

/// Pushes a cache: the layers the registry lacks, the config, then the manifest under
/// `reference`'s tag. Returns the manifest's digest.
pub async fn push_cache(
    store: &Store,
    reference: &Reference,
    config: &[u8],
    blobs: &[CacheBlob],
    opts: &PushOptions,
    events: UnboundedSender<PushEvent>,
) -> Result<Digest, PushError> {
    let err = |kind| PushError {
        destination: reference.to_string(),
        kind,
    };
    let config_digest = store
        .put_blob(config)
        .map_err(|e| err(PushErrorKind::Store(e)))?;
    let retry = opts.retry(&events);
    let client = opts
        .connect::<PushErrorKind, _>(reference, &retry)
        .await
        .map_err(err)?;
    let counts = Counts::default();
    let ctx = BlobContext {
        client: &client,
        store,
        repo: reference.repository(),
        opts,
        events: &events,
        counts: &counts,
    };
    let mut layers = Vec::new();
    for blob in blobs {
        ctx.push_blob(&BlobJob {
            digest: blob.digest.clone(),
            size: blob.size,
            mount_from: Vec::new(),
        })
        .await
        .map_err(err)?;
        layers.push(json!({
            "mediaType": blob.media_type,
            "digest": blob.digest.as_str(),
            "size": blob.size,
            "annotations": {
                "containerd.io/uncompressed": blob.diff_id.as_str(),
                "buildkit/createdat": blob.created,
            },
        }));
    }
    ctx.push_blob(&BlobJob {
        digest: config_digest.clone(),
        size: config.len() as u64,
        mount_from: Vec::new(),
    })
    .await
    .map_err(err)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CACHE_CONFIG_MEDIA_TYPE,
        "config": {
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "digest": config_digest.as_str(),
            "size": config.len(),
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let digest = Digest::of(&bytes);
    let tag = reference
        .tag()
        .unwrap_or(crate::reference::DEFAULT_TAG)
        .to_string();
    put_manifest(
        &client,
        &retry,
        reference.repository(),
        &tag,
        OCI_MANIFEST,
        bytes,
        &digest,
        &events,
    )
    .await
    .map_err(err)?;
    Ok(digest)
}
