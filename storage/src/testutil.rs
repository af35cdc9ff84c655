//! Building tar layers for tests, including hostile ones the `tar` builder refuses to write.

use std::io::Write;

use tar::{EntryType, Header};

/// A tar archive under construction.
pub struct TarBuilder {
    out: Vec<u8>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder { out: Vec::new() }
    }

    /// Append one entry with raw name and link bytes (a PAX header carries them when they do
    /// not fit the 100-byte fields).
    pub fn raw(
        &mut self,
        name: &[u8],
        kind: EntryType,
        mode: u32,
        link: &[u8],
        data: &[u8],
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut records: Vec<(String, Vec<u8>)> = pax
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        let name_fits = name.len() <= 100;
        let link_fits = link.len() <= 100;
        if !name_fits {
            records.push(("path".to_string(), name.to_vec()));
        }
        if !link_fits {
            records.push(("linkpath".to_string(), link.to_vec()));
        }
        if !records.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &records {
                // "<len> <key>=<value>\n" where len counts itself.
                let rest = 1 + k.len() + 1 + v.len() + 1;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len = len.to_string().len() + rest;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let mut h = Header::new_ustar();
            write_name(&mut h, b"PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.block(h.as_bytes(), &body);
        }
        let mut h = Header::new_ustar();
        write_name(&mut h, if name_fits { name } else { &name[..100] });
        if !link.is_empty() {
            let l = if link_fits { link } else { &link[..100] };
            let field = &mut h.as_old_mut().linkname;
            field.fill(0);
            field[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.block(h.as_bytes(), data);
        self
    }

    fn block(&mut self, header: &[u8], data: &[u8]) {
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Regular, 0o644, b"", data, &[])
    }

    pub fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Regular, mode, b"", data, &[])
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Directory, 0o755, b"", b"", &[])
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            0o777,
            target.as_bytes(),
            b"",
            &[],
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Link,
            0o644,
            target.as_bytes(),
            b"",
            &[],
        )
    }

    /// A device node entry with its numbers.
    pub fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_ustar();
        write_name(&mut h, name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.block(h.as_bytes(), b"");
        self
    }

    /// Finish with the two zero blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

fn write_name(h: &mut Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}
