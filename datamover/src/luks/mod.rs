//! Raw LUKS1 volumes, as qemu's `luks` driver opens them and `cryptsetup luksFormat --type
//! luks1` writes them: a header and 8 key slot areas, then the payload (at 2 MiB in ours, the
//! header's payload offset in any), encrypted with AES-256-XTS, the tweak of each 512-byte
//! sector being its number counted from the start of the payload (plain64).
//!
//! `LuksLayer` reads a volume (the virtual disk is the decrypted payload), `writer::LuksWriter`
//! writes one in place or into a new file, and `format_volume` writes only the header (the
//! DATA volume case of `cryptsetup luksFormat`).

pub mod writer;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::crypt::luks1::{self, Header};
use crate::crypt::{Encrypt, Key, Passphrase};
use crate::error::{Error, Kind, Result};
use crate::image::{push_piece, ImageFile, Layer, Piece};
use crate::sys;

/// Reads the LUKS header of a raw volume (no passphrase needed).
pub fn read_header(img: &ImageFile) -> Result<Header> {
    Header::read(&img.path, 0, img.len, true, &mut |buf, at| sys::pread_full(&img.file, buf, at))
}

/// Unlocks the data key of a header stored at `base` of `img` (0 for a raw volume, the
/// header clusters of a qcow2 image).
pub fn unlock(img: &ImageFile, header: &Header, base: u64, passphrase: Option<&Passphrase>) -> Result<Key> {
    header.unlock(&img.path, passphrase, base, &mut |buf, at| sys::pread_full(&img.file, buf, at))
}

pub struct LuksLayer {
    index: usize,
    path: PathBuf,
    payload: u64,
    size: u64,
    key: Option<Key>,
}

impl LuksLayer {
    /// The layer of file `index`; `key` None maps nothing (a look at the header only).
    pub fn new(index: usize, img: &ImageFile, header: &Header, key: Option<Key>) -> LuksLayer {
        let payload = header.payload_offset();
        // Whole sectors only, as QEMU sees the payload.
        let size = img.len.saturating_sub(payload) / luks1::SECTOR * luks1::SECTOR;
        LuksLayer { index, path: img.path.clone(), payload, size, key }
    }
}

impl Layer for LuksLayer {
    fn size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
        let Some(key) = &self.key else {
            return Err(Error::format(&self.path, "the volume is encrypted and was not unlocked"));
        };
        let (host, sector) = (self.payload + offset, offset / luks1::SECTOR);
        push_piece(out, Piece::Encrypted { file: self.index, host, len, sector, key: key.clone() });
        Ok(())
    }
}

/// Writes a new LUKS1 header (and key slot 0) at the start of an existing file or block
/// device, leaving its payload as it is, like `cryptsetup luksFormat --type luks1`.
pub fn format_volume(path: &Path, enc: &Encrypt) -> Result<Header> {
    let file =
        OpenOptions::new().write(true).open(path).map_err(|e| Error::target_io(path, "cannot open", None, &e))?;
    let meta = file.metadata().map_err(|e| Error::target_io(path, "cannot stat", None, &e))?;
    if !meta.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Err(Error::invalid("only a regular file or a block device can be formatted").at(path));
    }
    let size = sys::file_size(&file).map_err(|e| Error::target_io(path, "cannot get size", None, &e))?;
    if size <= luks1::PAYLOAD_OFFSET {
        return Err(Error::new(
            Kind::TargetTooSmall,
            format!(
                "holds {size} bytes, too few for a LUKS volume (the header takes {} bytes); nothing was written",
                luks1::PAYLOAD_OFFSET
            ),
        )
        .at(path));
    }
    let created = luks1::create(enc)?;
    sys::pwrite_all(&file, &created.area, 0).map_err(|e| Error::target_io(path, "write failed", Some(0), &e))?;
    file.sync_all().map_err(|e| Error::target_io(path, "fsync failed", None, &e))?;
    Ok(created.header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::luks1::PAYLOAD_OFFSET;
    use std::fs::File;
    use std::sync::Arc;

    fn enc(p: &[u8]) -> Encrypt {
        Encrypt { passphrase: Arc::new(Passphrase::new(p)), iter_time_ms: 1 }
    }

    fn image(path: &Path) -> ImageFile {
        let file = File::open(path).expect("open");
        let len = file.metadata().expect("stat").len();
        ImageFile { file, path: path.to_path_buf(), len, is_block: false, direct: None }
    }

    #[test]
    fn format_then_map_through_the_unlocked_key() {
        let p = std::env::temp_dir().join(format!("spcs-luks-layer-{}.luks", std::process::id()));
        std::fs::write(&p, vec![0xeeu8; (PAYLOAD_OFFSET + 8192 + 100) as usize]).expect("write");
        let h = format_volume(&p, &enc(b"pw")).expect("format");
        let img = image(&p);
        let read = read_header(&img).expect("header");
        assert_eq!((read.uuid.as_str(), read.payload_offset()), (h.uuid.as_str(), PAYLOAD_OFFSET));
        let e = unlock(&img, &read, 0, Some(&Passphrase::new(b"no"))).expect_err("wrong passphrase");
        assert_eq!(e.kind, Kind::BadPassphrase);
        let key = unlock(&img, &read, 0, Some(&Passphrase::new(b"pw"))).expect("unlock");

        // Whole sectors only: the 100 bytes past the last one are not part of the disk.
        let mut l = LuksLayer::new(0, &img, &read, Some(key.clone()));
        assert_eq!(l.size(), 8192);
        let mut out = Vec::new();
        l.map(0, 4096, &mut out).expect("map");
        l.map(4096, 4096, &mut out).expect("map");
        // Contiguous host ranges and sector numbers merge into one piece.
        assert_eq!(out, vec![Piece::Encrypted { file: 0, host: PAYLOAD_OFFSET, len: 8192, sector: 0, key }]);
        let mut locked = LuksLayer::new(0, &img, &read, None);
        assert_eq!(locked.map(0, 512, &mut out).expect_err("locked").kind, Kind::Format);

        let small = p.with_extension("small");
        std::fs::write(&small, vec![0u8; PAYLOAD_OFFSET as usize]).expect("write");
        assert_eq!(format_volume(&small, &enc(b"pw")).expect_err("too small").kind, Kind::TargetTooSmall);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&small);
    }
}
