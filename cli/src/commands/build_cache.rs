//! `gcr build --cache-from/--cache-to`: BuildKit's cache specs, and the registry work done in
//! child processes (`gcr __cache-fetch`, `__cache-layer`, `__cache-push`) so that the build
//! process, which forks RUN containers, never starts an async runtime.

use std::path::Path;

use anyhow::{bail, Context as _};
use gcr_builder::{CacheConfig, CacheLayer, CacheStep, ImportedCache};
use gcr_registry::cache::{CacheBlob, CacheDocument};
use gcr_registry::Reference;

use crate::context::Context;

/// One `--cache-from` / `--cache-to` value.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheSpec {
    /// `type=registry,ref=R[,mode=min|max]`.
    Registry { reference: String, max: bool },
    /// `type=inline` (to), or a plain image reference (from).
    Inline { image: Option<String> },
}

/// Parses a spec as BuildKit does: `KEY=VALUE,...` with a `type`, or a bare reference (for
/// `--cache-from`: an image whose inline cache is read).
pub fn parse_spec(text: &str, to: bool) -> anyhow::Result<CacheSpec> {
    let flag = if to { "--cache-to" } else { "--cache-from" };
    if !text.contains('=') {
        if to {
            bail!(
                "invalid {flag} {text:?}: use type=registry,ref=REF[,mode=min|max] or type=inline"
            );
        }
        return Ok(CacheSpec::Inline {
            image: Some(text.to_string()),
        });
    }
    let mut kind = None;
    let mut reference = None;
    let mut max = false;
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid {flag} {text:?}: {part:?} is not KEY=VALUE"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_string()),
            "ref" => reference = Some(v.trim().to_string()),
            "mode" => {
                max = match v.trim() {
                    "max" => true,
                    "min" => false,
                    other => bail!("invalid {flag} {text:?}: mode {other:?}: use min or max"),
                }
            }
            // Options of BuildKit's exporter that change nothing here.
            "oci-mediatypes" | "image-manifest" | "compression" | "ignore-error"
            | "compression-level" | "force-compression" => {}
            other => bail!("invalid {flag} {text:?}: unknown option {other:?}"),
        }
    }
    match kind.as_deref() {
        Some("registry") => {
            let reference = reference
                .with_context(|| format!("invalid {flag} {text:?}: type=registry needs ref=REF"))?;
            Ok(CacheSpec::Registry { reference, max })
        }
        Some("inline") if to => Ok(CacheSpec::Inline { image: None }),
        Some("inline") => bail!("invalid {flag} {text:?}: type=inline is for --cache-to; read an inline cache with --cache-from IMAGE"),
        Some(other) => bail!(
            "{flag} type={other} is not supported yet: use type=registry,ref=REF{}",
            if to { " or type=inline" } else { " or an image reference" }
        ),
        None => bail!("invalid {flag} {text:?}: give type=registry,ref=REF"),
    }
}

/// Runs `gcr --root ROOT ARGS` and returns its stdout, or its stderr's last line as error.
fn child(ctx: &Context, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let exe = std::env::current_exe().context("cannot find the gcr binary")?;
    let out = std::process::Command::new(exe)
        .arg("--root")
        .arg(&ctx.root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot start gcr")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.trim().lines().last().unwrap_or("failed").to_string();
        bail!("{}", line.trim_start_matches("error: "));
    }
    Ok(out.stdout)
}

/// The imported caches of `--cache-from` values; a source that cannot be read is a warning
/// (BuildKit goes on without it).
pub fn import(ctx: &Context, specs: &[CacheSpec], quiet: bool) -> Vec<ImportedCache> {
    let mut out = Vec::new();
    for spec in specs {
        let reference = match spec {
            CacheSpec::Registry { reference, .. } => reference.clone(),
            CacheSpec::Inline { image: Some(image) } => image.clone(),
            CacheSpec::Inline { image: None } => continue,
        };
        let read = child(ctx, &["__cache-fetch", &reference])
            .and_then(|bytes| CacheConfig::parse(&bytes, &reference).map_err(anyhow::Error::from));
        match read {
            Ok(config) => {
                let imported = ImportedCache::from_config(&reference, &config);
                if !quiet {
                    eprintln!(
                        "#0 importing cache from {reference}: {} records",
                        imported.steps.len()
                    );
                }
                out.push(imported);
            }
            Err(e) => eprintln!("WARNING: cache {reference} is not used: {e:#}"),
        }
    }
    out
}

/// The `FetchLayer` hook: one child `gcr __cache-layer` pulls the layers (in parallel).
pub fn fetch_layers(ctx: &Context, source: &str, layers: &[CacheLayer]) -> Result<(), String> {
    let mut args = vec!["__cache-layer".to_string(), source.to_string()];
    for layer in layers {
        args.push(format!(
            "{},{},{},{}",
            layer.blob, layer.diff_id, layer.media_type, layer.size
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    child(ctx, &args).map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// `--cache-to` after a build: registry caches pushed by a child; inline needs nothing here.
pub fn export(
    ctx: &Context,
    store: &gcr_storage::Store,
    specs: &[CacheSpec],
    steps: &[CacheStep],
    quiet: bool,
) -> anyhow::Result<()> {
    for spec in specs {
        let CacheSpec::Registry { reference, max } = spec else {
            continue;
        };
        let config = CacheConfig::from_steps(steps, *max);
        let dir = store.build_dir("cache-export")?;
        let file = dir.path().join("cacheconfig.json");
        std::fs::write(&file, config.to_json())
            .with_context(|| format!("cannot write {}", file.display()))?;
        let file_text = file.to_string_lossy().into_owned();
        child(ctx, &["__cache-push", reference, &file_text])
            .with_context(|| format!("cannot export the build cache to {reference}"))?;
        if !quiet {
            eprintln!(
                "#0 exported cache to {reference}: {} records, {} layers (mode={})",
                config.records.len(),
                config.layers.len(),
                if *max { "max" } else { "min" }
            );
        }
    }
    Ok(())
}

fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    text.parse()
        .with_context(|| format!("invalid cache reference {text:?}"))
}

/// `gcr __cache-fetch REF`: prints the cache config REF holds (a cache manifest, or the
/// inline cache of an image, from the store or the registry), layer annotations filled in.
pub fn fetch_command(ctx: &Context, reference: &str) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let parsed = parse_reference(reference)?;
    // An image in the store needs no registry.
    let stored = crate::lookup::find_image(&store, reference).ok();
    let document = match stored {
        Some(record) => {
            let config = store.image_config_bytes(&record)?;
            let manifest = store.image_manifest_bytes(&record)?;
            let layers = match gcr_registry::manifest::parse_document(&manifest, None)? {
                gcr_registry::manifest::Document::Image { layers, .. } => layers,
                _ => Vec::new(),
            };
            CacheDocument::Image { config, layers }
        }
        None => {
            let runtime = crate::context::tokio_runtime()?;
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let opts = gcr_registry::PullOptions::default();
            runtime.block_on(gcr_registry::cache::fetch_cache(&parsed, &opts, tx))?
        }
    };
    let bytes = match document {
        CacheDocument::Cache(bytes) => bytes,
        CacheDocument::Image { config, layers } => inline_config(reference, &config, &layers)?,
    };
    use std::io::Write as _;
    std::io::stdout().write_all(&bytes)?;
    Ok(0)
}

/// The inline cache of an image config, its layers annotated from the image's manifest.
fn inline_config(
    reference: &str,
    config: &[u8],
    layers: &[gcr_registry::manifest::Descriptor],
) -> anyhow::Result<Vec<u8>> {
    let doc: serde_json::Value = serde_json::from_slice(config)
        .with_context(|| format!("image {reference}: invalid config"))?;
    let Some(encoded) = doc
        .get(gcr_builder::remote_cache::INLINE_CACHE_KEY)
        .and_then(|v| v.as_str())
    else {
        bail!("image {reference} has no inline cache metadata: build it with --cache-to type=inline (or --build-arg BUILDKIT_INLINE_CACHE=1) and push it, or export a cache with --cache-to type=registry,ref=REF");
    };
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .with_context(|| format!("image {reference}: the inline cache is not base64"))?;
    let mut cache = CacheConfig::parse(&raw, reference)?;
    let diff_ids: Vec<String> = doc["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for layer in &mut cache.layers {
        let Some(i) = layers.iter().position(|d| d.digest == layer.blob) else {
            continue;
        };
        let a = layer.annotations.get_or_insert_with(Default::default);
        if a.diff_id.is_empty() {
            a.diff_id = diff_ids.get(i).cloned().unwrap_or_default();
        }
        a.size = layers[i].size();
        a.media_type = gcr_storage::oci_layer_media_type(&layers[i].media_type);
    }
    Ok(cache.to_json())
}

/// `gcr __cache-layer REF BLOB,DIFF_ID,MEDIA_TYPE,SIZE...`: layers of a cache into the store.
pub fn layer_command(ctx: &Context, args: &[String]) -> anyhow::Result<u8> {
    let Some((reference, layers)) = args.split_first() else {
        bail!("usage: gcr __cache-layer REF BLOB,DIFF_ID,MEDIA_TYPE,SIZE...");
    };
    let store = ctx.open_store()?;
    let parsed = parse_reference(reference)?;
    let mut expects = Vec::new();
    for layer in layers {
        let [blob, diff_id, media_type, size] = layer.split(',').collect::<Vec<_>>()[..] else {
            bail!("invalid layer {layer:?}: use BLOB,DIFF_ID,MEDIA_TYPE,SIZE");
        };
        expects.push(gcr_storage::LayerExpectation {
            digest: blob.parse()?,
            size: size.parse()?,
            media_type: media_type.to_string(),
            diff_id: diff_id.parse()?,
        });
    }
    let runtime = crate::context::tokio_runtime()?;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = gcr_registry::PullOptions::default();
    runtime.block_on(gcr_registry::cache::pull_cache_layers(
        &store, &parsed, &expects, &opts, tx,
    ))?;
    Ok(0)
}

/// `gcr __cache-push REF CONFIG_FILE`: the cache config and its layers to REF.
pub fn push_command(ctx: &Context, reference: &str, file: &Path) -> anyhow::Result<u8> {
    let store = ctx.open_store()?;
    let parsed = parse_reference(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let config = CacheConfig::parse(&bytes, reference)?;
    let blobs: Vec<CacheBlob> = config
        .layers
        .iter()
        .zip(config.layer_blobs())
        .map(|(l, r)| CacheBlob {
            digest: r.blob,
            size: r.size,
            media_type: r.media_type,
            diff_id: r.diff_id,
            created: l
                .annotations
                .as_ref()
                .map(|a| a.created_at.clone())
                .unwrap_or_default(),
        })
        .collect();
    let runtime = crate::context::tokio_runtime()?;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = gcr_registry::PushOptions::default();
    let digest = runtime.block_on(gcr_registry::cache::push_cache(
        &store, &parsed, &bytes, &blobs, &opts, tx,
    ))?;
    println!("{digest}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildkit_writes_them() {
        assert_eq!(
            parse_spec("type=registry,ref=h:5000/c:x,mode=max", true).unwrap(),
            CacheSpec::Registry {
                reference: "h:5000/c:x".into(),
                max: true
            }
        );
        assert_eq!(
            parse_spec("type=inline", true).unwrap(),
            CacheSpec::Inline { image: None }
        );
        assert_eq!(
            parse_spec("h:5000/app:1", false).unwrap(),
            CacheSpec::Inline {
                image: Some("h:5000/app:1".into())
            }
        );
        let e = parse_spec("type=gha", true).unwrap_err().to_string();
        assert!(e.contains("type=gha is not supported yet"), "{e}");
        assert!(parse_spec("type=registry", false).is_err());
    }
}
