//! Where a build's result goes besides the store (BuildKit's `--output`/`-o`): the image's
//! files into a directory or a tar stream, or the image as an OCI or Docker archive.

use std::path::{Path, PathBuf};

use crate::error::BuildError;

/// One `-o` value.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildExport {
    /// `type=local,dest=DIR` (or `-o DIR`): the final stage's files, merged into DIR.
    Local(PathBuf),
    /// `type=tar,dest=FILE` (`-o -`: stdout): the final stage's files as one tar stream.
    Tar(Destination),
    /// `type=oci|docker,dest=FILE[,name=NAME]`: the image as an archive `load` reads.
    Archive {
        format: gcr_storage::ArchiveFormat,
        dest: Destination,
        /// Names recorded in the archive (default: the build's tags).
        names: Vec<String>,
    },
}

/// A file, or standard output (`dest=-`).
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    File(PathBuf),
    Stdout,
}

impl Destination {
    fn of(text: &str) -> Destination {
        if text == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(text))
        }
    }
}

fn invalid(text: &str, why: &str) -> BuildError {
    BuildError::Options(format!("invalid --output {text:?}: {why}"))
}

impl BuildExport {
    /// BuildKit's forms: `type=TYPE,dest=PATH[,name=NAME]`, a bare `DIR` (local) or `-` (a
    /// tar stream on stdout).
    pub fn parse(text: &str) -> Result<BuildExport, BuildError> {
        if text == "-" {
            return Ok(BuildExport::Tar(Destination::Stdout));
        }
        if !text.contains('=') {
            return Ok(BuildExport::Local(PathBuf::from(text)));
        }
        let (mut kind, mut dest, mut names) = (None, None, Vec::new());
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(v.to_string()),
                Some(("name", v)) => names.extend(v.split(';').map(str::to_string)),
                // Accepted as BuildKit's defaults: gcr always stores the image too.
                // gcr clamps new files' times whenever a fixed time is given.
                Some((
                    "push" | "unpack" | "compression" | "oci-mediatypes" | "rewrite-timestamp",
                    _,
                )) => {}
                _ => return Err(invalid(text, &format!("unknown attribute {part:?}"))),
            }
        }
        let kind = kind.ok_or_else(|| invalid(text, "give type=local|tar|oci|docker"))?;
        let dest = dest.filter(|d| !d.is_empty());
        let need_dest = || dest.clone().ok_or_else(|| invalid(text, "give dest=PATH"));
        Ok(match kind.as_str() {
            "local" => match need_dest()?.as_str() {
                "-" => return Err(invalid(text, "a local output needs a directory, not -")),
                dir => BuildExport::Local(PathBuf::from(dir)),
            },
            "tar" => BuildExport::Tar(Destination::of(&need_dest()?)),
            "oci" | "docker" => BuildExport::Archive {
                format: if kind == "oci" {
                    gcr_storage::ArchiveFormat::OciArchive
                } else {
                    gcr_storage::ArchiveFormat::DockerArchive
                },
                dest: Destination::of(&need_dest()?),
                names,
            },
            "image" | "registry" => return Err(invalid(
                text,
                "type=image and type=registry are not supported yet: use -t NAME, then gcr push",
            )),
            other => {
                return Err(invalid(
                    text,
                    &format!("unknown type {other:?}: use local, tar, oci or docker"),
                ))
            }
        })
    }
}

/// Writes the built `image` as `export` asks; `tags` name it in an archive unless the
/// export names it itself.
pub fn export(
    store: &gcr_storage::Store,
    image: &gcr_storage::ImageRecord,
    tags: &[String],
    export: &BuildExport,
) -> Result<(), BuildError> {
    let platforms = store
        .platform_images(image)
        .map_err(|e| BuildError::store("reading the platforms of the result", e))?;
    if platforms.len() > 1 {
        return match export {
            // BuildKit's layout: one directory per platform, os_arch[_variant].
            BuildExport::Local(dir) => {
                for platform in &platforms {
                    let mut sub = format!("{}_{}", platform.os, platform.architecture);
                    if let Some(v) = &platform.variant {
                        sub.push_str(&format!("_{v}"));
                    }
                    export_one(store, platform, tags, &BuildExport::Local(dir.join(sub)))?;
                }
                Ok(())
            }
            BuildExport::Tar(_) => Err(BuildError::Options(
                "--output type=tar with several platforms is not supported yet: use type=local, type=oci or type=docker".into(),
            )),
            // The archive holds the index.
            BuildExport::Archive { .. } => export_one(store, image, tags, export),
        };
    }
    export_one(store, image, tags, export)
}

fn export_one(
    store: &gcr_storage::Store,
    image: &gcr_storage::ImageRecord,
    tags: &[String],
    export: &BuildExport,
) -> Result<(), BuildError> {
    let files = |what: &Path| {
        let err = |e: gcr_containers::ContainerError| {
            BuildError::Options(format!("cannot export to {}: {e}", what.display()))
        };
        gcr_containers::image_view(store, image).map_err(err)
    };
    let whole = gcr_runtime::CopyOptions {
        contents: true,
        follow_link: false,
    };
    match export {
        BuildExport::Local(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| BuildError::io("creating", dir, e))?;
            let view = files(dir)?;
            gcr_runtime::copy_out(view.files(), Path::new("/"), dir, whole).map_err(|e| {
                BuildError::Options(format!("cannot write the output to {}: {e}", dir.display()))
            })
        }
        BuildExport::Tar(dest) => {
            let view = files(Path::new("the tar output"))?;
            write_to(dest, |file| {
                gcr_runtime::copy_out_tar(view.files(), Path::new("/"), whole, file)
                    .map_err(std::io::Error::other)
            })
        }
        BuildExport::Archive {
            format,
            dest,
            names,
        } => {
            let names = if names.is_empty() {
                tags.to_vec()
            } else {
                names.clone()
            };
            let request = gcr_storage::SaveRequest {
                record: image.clone(),
                names,
            };
            write_to(dest, |file| {
                let mut out = std::io::BufWriter::new(file);
                store
                    .save_archive(std::slice::from_ref(&request), *format, &mut out)
                    .map_err(std::io::Error::other)?;
                std::io::Write::flush(&mut out)
            })
        }
    }
}

/// BuildKit's `--metadata-file` document for the built image.
pub fn metadata(store: &gcr_storage::Store, image: &gcr_storage::ImageRecord) -> serde_json::Value {
    let manifest = &image.manifest_digest;
    let size = std::fs::metadata(store.blob_path(manifest)).map_or(0, |m| m.len());
    serde_json::json!({
        "containerimage.config.digest": image.id.to_string(),
        "containerimage.digest": manifest.to_string(),
        "containerimage.descriptor": {
            "mediaType": image.manifest_media_type,
            "digest": manifest.to_string(),
            "size": size,
        },
        "image.name": image.names.join(","),
    })
}

/// Writes a file whole (through a temporary file beside it, renamed when complete) or to
/// standard output.
fn write_to(
    dest: &Destination,
    write: impl FnOnce(&std::fs::File) -> std::io::Result<()>,
) -> Result<(), BuildError> {
    match dest {
        Destination::Stdout => {
            use std::os::fd::AsFd as _;
            let stdout = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| BuildError::io("writing", "stdout", e))?;
            write(&std::fs::File::from(stdout)).map_err(|e| BuildError::io("writing", "stdout", e))
        }
        Destination::File(path) => {
            let name = path.file_name().ok_or_else(|| {
                BuildError::Options(format!(
                    "--output dest={} is not a file name",
                    path.display()
                ))
            })?;
            let tmp = path.with_file_name(format!(
                ".{}.gcr-tmp-{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            let result = std::fs::File::create(&tmp)
                .and_then(|file| write(&file).and_then(|()| file.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, path));
            result.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                BuildError::io("writing", path, e)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_read_as_buildkit_writes_them() {
        assert_eq!(
            BuildExport::parse("out").unwrap(),
            BuildExport::Local("out".into())
        );
        assert_eq!(
            BuildExport::parse("-").unwrap(),
            BuildExport::Tar(Destination::Stdout)
        );
        assert_eq!(
            BuildExport::parse("type=tar,dest=x.tar").unwrap(),
            BuildExport::Tar(Destination::File("x.tar".into()))
        );
        assert!(matches!(
            BuildExport::parse("type=oci,dest=i.tar,name=a:1").unwrap(),
            BuildExport::Archive { names, .. } if names == ["a:1"]
        ));
        for bad in [
            "type=local",
            "type=nope,dest=x",
            "type=tar,dest=x,bogus=1",
            "dest=x",
        ] {
            assert!(BuildExport::parse(bad).is_err(), "{bad}");
        }
        assert!(BuildExport::parse("type=registry,dest=x")
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
    }
}
