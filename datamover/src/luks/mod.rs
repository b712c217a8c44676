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
