//! Raw images: the virtual disk is the file; holes come from SEEK_DATA/SEEK_HOLE.

use std::fs::File;
use std::path::PathBuf;

use super::{push_piece, ImageFile, Layer, Piece};
use crate::error::{Error, Result};
use crate::sys;

/// Answers "is `offset` in data or a hole, and until where" for a file, remembering the last
/// extent so sequential walks cost one lseek pair per extent.
pub struct HoleMap {
    file: File,
    path: PathBuf,
    supported: bool,
    cached: Option<(u64, u64, bool)>,
}

impl HoleMap {
    pub fn new(img: &ImageFile) -> Result<HoleMap> {
        let file =
            img.file.try_clone().map_err(|e| Error::source_io(&img.path, "cannot duplicate descriptor", None, &e))?;
        // Block devices have no allocation map: everything is data.
        Ok(HoleMap { file, path: img.path.clone(), supported: !img.is_block, cached: None })
    }

    /// (is_data, end of that extent); `end` may be u64::MAX.
    pub fn extent(&mut self, offset: u64) -> Result<(bool, u64)> {
        if let Some((s, e, d)) = self.cached {
            if s <= offset && offset < e {
                return Ok((d, e));
            }
        }
        if !self.supported {
            return Ok((true, u64::MAX));
        }
        let ext = match sys::seek_data(&self.file, offset) {
            Ok(None) => (offset, u64::MAX, false),
            Ok(Some(d)) if d > offset => (offset, d, false),
            Ok(Some(_)) => match sys::seek_hole(&self.file, offset) {
                Ok(Some(h)) if h > offset => (offset, h, true),
                Ok(_) => (offset, u64::MAX, true),
                Err(e) => return Err(Error::source_io(&self.path, "SEEK_HOLE failed", Some(offset), &e)),
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) => {
                self.supported = false;
                return Ok((true, u64::MAX));
            }
            Err(e) => return Err(Error::source_io(&self.path, "SEEK_DATA failed", Some(offset), &e)),
        };
        self.cached = Some(ext);
        Ok((ext.2, ext.1))
    }

    /// Pushes the data and zero pieces of `[start, start + len)` of file `file` (host offsets).
    pub fn pieces(&mut self, file: usize, start: u64, len: u64, pad: bool, out: &mut Vec<Piece>) -> Result<()> {
        let (mut pos, end) = (start, start + len);
        while pos < end {
            let (data, ext_end) = self.extent(pos)?;
            let n = ext_end.min(end) - pos;
            if data {
                push_piece(out, Piece::Data { file, host: pos, len: n, pad });
            } else {
                push_piece(out, Piece::Zero { len: n });
            }
            pos += n;
        }
        Ok(())
    }
}

pub struct RawLayer {
    index: usize,
    size: u64,
    holes: HoleMap,
}

impl RawLayer {
    pub fn new(index: usize, img: &ImageFile) -> Result<RawLayer> {
        Ok(RawLayer { index, size: img.len, holes: HoleMap::new(img)? })
    }
}

impl Layer for RawLayer {
    fn size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
        self.holes.pieces(self.index, offset, len, false, out)
    }
}
