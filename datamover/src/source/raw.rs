//! Raw images: the virtual disk is the file; holes come from SEEK_DATA/SEEK_HOLE.

use crate::error::Result;
use crate::image::{HoleMap, ImageFile, Layer, Piece};

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
