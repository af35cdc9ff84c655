//! Compressed archives given by users (`ADD archive.tar.xz`, `gcr import rootfs.tar.bz2`): the
//! codecs Docker and BuildKit detect by their magic bytes. Image layers themselves only come as
//! gzip, zstd or plain tar (see `ingest`).

use std::io::{self, Read};

/// How an archive file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    /// Not compressed (or not recognised: the tar reader then decides).
    None,
}

/// What an xz stream may ask the decoder for: xz's own presets top out at 674 MiB (-9e, and
/// a 1.5 GiB dictionary is possible); 256 MiB covers everything up to -9 (decoding needs the
/// dictionary size, 64 MiB) with room, and stops a crafted header from taking the machine.
const XZ_MEMORY_LIMIT: u64 = 256 << 20;

impl ArchiveCompression {
    /// Recognises the compression by the first bytes of the file (6 are enough).
    pub fn sniff(head: &[u8]) -> ArchiveCompression {
        if head.starts_with(&[0x1f, 0x8b]) {
            ArchiveCompression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            ArchiveCompression::Zstd
        } else if head.starts_with(b"BZh") {
            ArchiveCompression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            ArchiveCompression::Xz
        } else {
            ArchiveCompression::None
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveCompression::Gzip => "gzip",
            ArchiveCompression::Zstd => "zstd",
            ArchiveCompression::Bzip2 => "bzip2",
            ArchiveCompression::Xz => "xz",
            ArchiveCompression::None => "uncompressed",
        }
    }

    /// A reader of the decompressed bytes (concatenated streams are read as one, as the
    /// command-line tools do), with bounded memory.
    pub fn decoder<'a>(self, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            ArchiveCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            ArchiveCompression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(r)?;
                d.window_log_max(crate::ingest::ZSTD_WINDOW_LOG_MAX)?;
                Box::new(d)
            }
            ArchiveCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            ArchiveCompression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(
                    io::BufReader::new(r),
                    stream,
                ))
            }
            ArchiveCompression::None => Box::new(r),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// Compresses with the system tool, the way users make such archives.
    fn with_tool(tool: &str, data: &[u8]) -> Option<Vec<u8>> {
        let mut child = Command::new(tool)
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().ok()?;
        writer.join().ok()?.ok()?;
        out.status.success().then_some(out.stdout)
    }

    #[test]
    fn every_codec_is_sniffed_and_decoded() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (tool, kind) in [
            ("gzip", ArchiveCompression::Gzip),
            ("zstd", ArchiveCompression::Zstd),
            ("bzip2", ArchiveCompression::Bzip2),
            ("xz", ArchiveCompression::Xz),
        ] {
            let Some(mut packed) = with_tool(tool, &data) else {
                assert!(std::env::var("CI").is_err(), "{tool} missing in CI");
                eprintln!("SKIP: {tool} not installed");
                continue;
            };
            assert_eq!(ArchiveCompression::sniff(&packed), kind, "{tool}");
            // Two concatenated streams read as one, as `xz -dc a.xz b.xz` does.
            let again = with_tool(tool, b"tail").unwrap();
            packed.extend_from_slice(&again);
            let mut out = Vec::new();
            kind.decoder(&packed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out.len(), data.len() + 4, "{tool}");
            assert!(out.starts_with(&data) && out.ends_with(b"tail"), "{tool}");
        }
        assert_eq!(
            ArchiveCompression::sniff(b"plain tar bytes"),
            ArchiveCompression::None
        );
    }

    #[test]
    fn an_xz_header_asking_for_too_much_memory_is_refused() {
        // A stream header and a block header whose LZMA2 filter asks for a 1 GiB dictionary:
        // the decoder must refuse before allocating it.
        let crc = |bytes: &[u8]| {
            let mut c = flate2::Crc::new();
            c.update(bytes);
            c.sum().to_le_bytes()
        };
        let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 0x00, 0x01];
        xz.extend_from_slice(&crc(&[0x00, 0x01]));
        // Size (12 bytes -> 2), flags (one filter), LZMA2 id, one property byte: dictionary
        // 2^(36/2 + 12) = 1 GiB, then padding.
        let block = [0x02, 0x00, 0x21, 0x01, 36, 0, 0, 0];
        xz.extend_from_slice(&block);
        xz.extend_from_slice(&crc(&block));
        xz.extend_from_slice(&[0u8; 64]);
        let mut out = Vec::new();
        let err = ArchiveCompression::Xz
            .decoder(&xz[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
    }
}
