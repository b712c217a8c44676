//! Sources: a chain of opened images and the mapping of the virtual disk onto their files.
//!
//! The planner asks the top layer to `map` a virtual range into `Piece`s (zero, plain bytes at
//! a host offset, or part of a compressed cluster). Workers then execute the pieces with
//! positional reads, so the copy never walks metadata in the hot path.

mod raw;

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{Error, Kind, Result};
use crate::qcow2::{self, reader::Qcow2Layer};
use crate::sys;

pub use raw::{HoleMap, RawLayer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    pub fn parse(name: &str) -> Result<Format> {
        match name {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            other => Err(Error::invalid(format!("unsupported image format {other:?} (expected \"raw\" or \"qcow2\")"))),
        }
    }
}

/// One opened image file of the chain, shared read-only with the workers.
pub struct ImageFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub is_block: bool,
}

/// A run of the virtual disk and how to produce its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Reads as zeros (hole, zero cluster, unallocated without backing, past a backing's end).
    Zero { len: u64 },
    /// `len` bytes at `host` in file `file`; bytes past the file's end read as zeros when
    /// `pad` (qcow2 data clusters), and are an error otherwise (a raw source that shrank).
    Data { file: usize, host: u64, len: u64, pad: bool },
    /// Bytes `skip..skip + len` of a compressed cluster of `cluster` bytes whose stored data
    /// starts at `host` and spans at most `stored` bytes.
    Compressed { file: usize, host: u64, stored: u64, codec: Codec, cluster: u64, skip: u64, len: u64 },
}

impl Piece {
    #[allow(clippy::len_without_is_empty)] // pieces are never empty: push_piece drops those
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Zero { len } | Piece::Data { len, .. } | Piece::Compressed { len, .. } => len,
        }
    }
}

/// Appends a piece, merging it with the previous one when they are contiguous.
pub fn push_piece(out: &mut Vec<Piece>, p: Piece) {
    if p.len() == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        match (last, &p) {
            (Piece::Zero { len }, Piece::Zero { len: l2 }) => {
                *len += l2;
                return;
            }
            (Piece::Data { file, host, len, pad }, Piece::Data { file: f2, host: h2, len: l2, pad: p2 })
                if *file == *f2 && *host + *len == *h2 && *pad == *p2 =>
            {
                *len += l2;
                return;
            }
            // Consecutive parts of one compressed cluster (a backing file with larger clusters
            // than its overlay): decompress it once.
            (
                Piece::Compressed { file, host, skip, len, .. },
                Piece::Compressed { file: f2, host: h2, skip: s2, len: l2, .. },
            ) if *file == *f2 && *host == *h2 && *skip + *len == *s2 => {
                *len += l2;
                return;
            }
            _ => {}
        }
    }
    out.push(p);
}

/// A layer of the chain: maps virtual ranges to pieces.
pub trait Layer: Send {
    fn size(&self) -> u64;
    /// Appends pieces covering exactly `[offset, offset + len)`, which lies within `size()`.
    fn map(&mut self, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()>;
}

/// Maps a range of a backing layer that may be shorter than its overlay: the rest is zero.
pub fn map_backing(backing: Option<&mut Box<dyn Layer>>, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
    let Some(b) = backing else {
        push_piece(out, Piece::Zero { len });
        return Ok(());
    };
    let size = b.size();
    if offset >= size {
        push_piece(out, Piece::Zero { len });
        return Ok(());
    }
    let inside = len.min(size - offset);
    b.map(offset, inside, out)?;
    push_piece(out, Piece::Zero { len: len - inside });
    Ok(())
}

/// What the top image says about itself (for `info`).
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub cluster_size: Option<u64>,
    pub compression: Option<Codec>,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub compat: Option<String>,
    pub extended_l2: bool,
    pub dirty: bool,
    pub corrupt: bool,
}

pub struct Source {
    pub files: Arc<Vec<ImageFile>>,
    pub top: Box<dyn Layer>,
    pub virtual_size: u64,
    pub format: Format,
    pub description: Description,
}

/// Opens `path` read-only, refusing what cannot be an image (directory, missing, socket...).
pub fn open_image_file(path: &Path) -> Result<ImageFile> {
    let meta = std::fs::metadata(path).map_err(|e| Error::source_io(path, "cannot open", None, &e))?;
    if meta.is_dir() {
        return Err(Error::new(Kind::Source, "is a directory, not a disk image").at(path));
    }
    let is_block = meta.file_type().is_block_device();
    if !meta.is_file() && !is_block {
        return Err(Error::new(Kind::Source, "is neither a regular file nor a block device").at(path));
    }
    let file = File::open(path).map_err(|e| Error::source_io(path, "cannot open", None, &e))?;
    let len = sys::file_size(&file).map_err(|e| Error::source_io(path, "cannot get size", None, &e))?;
    sys::advise_sequential(&file);
    Ok(ImageFile { file, path: path.to_path_buf(), len, is_block })
}

/// Reads the magic to tell qcow2 from raw (anything that is not qcow2 is raw, as in QEMU).
pub fn probe(img: &ImageFile) -> Result<Format> {
    let mut magic = [0u8; 4];
    let n = sys::pread_full(&img.file, &mut magic, 0)
        .map_err(|e| Error::source_io(&img.path, "read failed", Some(0), &e))?;
    Ok(if n == 4 && magic == qcow2::MAGIC { Format::Qcow2 } else { Format::Raw })
}

struct ChainBuilder {
    files: Vec<ImageFile>,
    seen: HashSet<(u64, u64)>,
    limit: u32,
}

impl ChainBuilder {
    fn open(
        &mut self,
        path: &Path,
        format: Option<Format>,
        depth: u32,
    ) -> Result<(Box<dyn Layer>, Format, Description)> {
        let img = open_image_file(path)?;
        let meta = img.file.metadata().map_err(|e| Error::source_io(path, "cannot stat", None, &e))?;
        if !self.seen.insert((meta.dev(), meta.ino())) {
            return Err(Error::format(path, "backing chain has a cycle: this file appears twice"));
        }
        let format = match format {
            Some(f) => f,
            None => probe(&img)?,
        };
        let index = self.files.len();
        match format {
            Format::Raw => {
                let layer = RawLayer::new(index, &img)?;
                self.files.push(img);
                Ok((Box::new(layer), Format::Raw, Description::default()))
            }
            Format::Qcow2 => {
                let header = qcow2::Header::read(&img)?;
                let backing = match &header.backing_file {
                    None => None,
                    Some(name) => {
                        if depth >= self.limit {
                            return Err(Error::format(
                                path,
                                format!("backing chain is longer than the limit of {} images", self.limit),
                            ));
                        }
                        let bpath = resolve_backing(path, name)?;
                        let bfmt = match header.backing_format.as_deref() {
                            None => None,
                            Some(f) => Some(Format::parse(f).map_err(|_| {
                                Error::format(path, format!("backing file format {f:?} is not supported"))
                            })?),
                        };
                        let at = self.files.len();
                        self.files.push(img);
                        let (layer, _, _) = self.open(&bpath, bfmt, depth + 1).map_err(|mut e| {
                            if e.kind == Kind::Source && e.path.as_deref() == Some(bpath.as_path()) {
                                e.message = format!("{} (backing file of {})", e.message, path.display());
                            }
                            e
                        })?;
                        let desc = header.describe();
                        let top = Qcow2Layer::open(at, &self.files[at], header, Some(layer))?;
                        return Ok((Box::new(top), Format::Qcow2, desc));
                    }
                };
                let desc = header.describe();
                let layer = Qcow2Layer::open(index, &img, header, backing)?;
                self.files.push(img);
                Ok((Box::new(layer), Format::Qcow2, desc))
            }
        }
    }
}

fn resolve_backing(image: &Path, name: &str) -> Result<PathBuf> {
    if name.starts_with("json:") || (name.contains("://") && !name.starts_with('/')) {
        return Err(Error::format(image, format!("backing file {name:?} is not a local path")));
    }
    let p = Path::new(name);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    // Relative names are relative to the directory of the image that names them (QEMU's rule).
    Ok(image.parent().unwrap_or(Path::new(".")).join(p))
}

pub fn open_source(path: &Path, format: Option<Format>, chain_limit: u32) -> Result<Source> {
    let mut b = ChainBuilder { files: Vec::new(), seen: HashSet::new(), limit: chain_limit };
    let (top, format, description) = b.open(path, format, 0)?;
    let virtual_size = top.size();
    Ok(Source { files: Arc::new(b.files), top, virtual_size, format, description })
}
