//! The vocabulary the image formats share, so that they depend on it and never on each other.
//!
//! Reading: an opened `ImageFile`, the `Piece`s a virtual range maps to (zero, plain bytes at a
//! host offset, or part of a compressed cluster), the `Layer`s of a backing chain that produce
//! them, the `HoleMap` of a file and the `Description` an image gives of itself. Writing: the
//! `Target` trait every output implements. `source` builds chains of layers, `qcow2` and
//! `source::raw` implement layers, `qcow2::writer` and `target` implement targets, and
//! `pipeline` moves pieces into a target without knowing any format.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec::{Codec, Compressor};
use crate::crypt::{Encryption, Key};
use crate::error::{Error, Result};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    /// A raw LUKS1 volume (never probed: a raw volume holding LUKS is raw unless named).
    Luks,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Luks => "luks",
        }
    }

    pub fn parse(name: &str) -> Result<Format> {
        match name {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "luks" => Ok(Format::Luks),
            other => Err(Error::invalid(format!(
                "unsupported image format {other:?} (expected \"raw\", \"qcow2\" or \"luks\")"
            ))),
        }
    }
}

/// One opened image file of the chain, shared read-only with the workers.
pub struct ImageFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub is_block: bool,
    /// Long reads of what the page cache does not hold, when the file takes O_DIRECT.
    pub direct: Option<DirectReads>,
}

/// The file opened O_DIRECT for `ImageFile::read_at`.
pub struct DirectReads {
    direct: File,
    /// Set once a direct read was refused (EINVAL): the file is read buffered from then on.
    failed: AtomicBool,
}

impl DirectReads {
    /// None when the file cannot be read O_DIRECT.
    pub fn open(path: &std::path::Path) -> Option<DirectReads> {
        Some(DirectReads { direct: sys::open_direct_read(path)?, failed: AtomicBool::new(false) })
    }
}

/// Reads shorter than this stay buffered (metadata, small pieces between holes).
const DIRECT_READ_MIN: usize = 64 << 10;

impl ImageFile {
    /// Reads `buf.len()` bytes at `offset`, fewer only at the end of the file. A long aligned
    /// read of what the page cache mostly lacks goes O_DIRECT, as `qemu-img -T none` reads: a
    /// cold device or file is read without a second copy through the page cache (on a 2-core
    /// host that copy was the difference); a warm one stays a memory copy. Where the kernel
    /// cannot tell what is cached, long reads go direct: StorPool devices are freshly
    /// attached and templates rarely cached.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let Some(d) = &self.direct else { return sys::pread_full(&self.file, buf, offset) };
        let aligned = offset.is_multiple_of(sys::ALIGN as u64) && (buf.as_ptr() as usize).is_multiple_of(sys::ALIGN);
        let run = buf.len() / sys::ALIGN * sys::ALIGN;
        if run < DIRECT_READ_MIN || !aligned || d.failed.load(Ordering::Relaxed) {
            return sys::pread_full(&self.file, buf, offset);
        }
        if sys::cached_bytes(&self.file, offset, run as u64).is_some_and(|c| c >= run as u64 / 2) {
            return sys::pread_full(&self.file, buf, offset);
        }
        let done = match sys::pread_full(&d.direct, &mut buf[..run], offset) {
            Ok(n) if n < run => return Ok(n), // end of file
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                d.failed.store(true, Ordering::Relaxed);
                0
            }
            Err(e) => return Err(e),
        };
        Ok(done + sys::pread_full(&self.file, &mut buf[done..], offset + done as u64)?)
    }
}

/// Positional reads of an image file, like `sys::pread_full` (fewer bytes only at the end):
/// a local file, or a remote one read with HTTP range requests. Layers read their metadata
/// through it, so a format does not care where its file lives.
pub trait ReadAt: Send {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        sys::pread_full(self, buf, offset)
    }
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
    pub encryption: Option<Encryption>,
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
    /// `len` bytes (whole 512-byte sectors) at `host` in file `file`, encrypted with `key`
    /// (XTS, plain64), the first being tweak sector `sector`; past the file's end the
    /// ciphertext reads as zeros (as in QEMU).
    Encrypted { file: usize, host: u64, len: u64, sector: u64, key: Key },
}

impl Piece {
    #[allow(clippy::len_without_is_empty)] // pieces are never empty: push_piece drops those
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Zero { len }
            | Piece::Data { len, .. }
            | Piece::Compressed { len, .. }
            | Piece::Encrypted { len, .. } => len,
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
            (
                Piece::Encrypted { file, host, len, sector, key },
                Piece::Encrypted { file: f2, host: h2, len: l2, sector: s2, key: k2 },
            ) if *file == *f2 && *host + *len == *h2 && *sector + *len / 512 == *s2 && key == k2 => {
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

/// What a target did with a chunk: bytes it stored, and bytes it skipped or zeroed as zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub written: u64,
    pub skipped: u64,
}

/// Per-worker working memory a target may use while storing a chunk (kept between chunks:
/// compression contexts and buffers are expensive to set up).
#[derive(Default)]
pub struct Scratch {
    pub comp: Compressor,
    pub out: Vec<u8>,
    /// Ciphertext of a chunk (encrypting targets), aligned for O_DIRECT; made on first use.
    pub sealed: Option<sys::AlignedBuf>,
}

/// Where a copy's virtual disk goes: a raw file or device, a qcow2 image, or nowhere. Workers
/// call it concurrently and out of order, each with its own `Scratch`.
pub trait Target: Send + Sync {
    /// Stores the virtual bytes `buf[..len]` at virtual `offset`, leaving out what reads as
    /// zero where the format allows. Chunks start on a multiple of every cluster size, and
    /// `len` is one too except at the end of the disk; `buf` past `len` is free for padding.
    fn write(&self, offset: u64, buf: &mut [u8], len: usize, scratch: &mut Scratch) -> Result<Tally>;
    /// Makes `[offset, offset + len)` read as zeros; stops early, without error, once `stop()`
    /// is true (the copy is being abandoned).
    fn zero(&self, offset: u64, len: u64, stop: &dyn Fn() -> bool) -> Result<()>;
    /// Flushes everything; returns the metadata bytes written.
    fn finish(&self) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> ImageFile {
        let file = File::open(path).expect("open");
        let len = file.metadata().expect("stat").len();
        ImageFile { file, path: path.to_path_buf(), len, is_block: false, direct: DirectReads::open(path) }
    }

    #[test]
    fn read_at_returns_the_file_bytes_whichever_way_it_reads() {
        // An unaligned length, so the last read ends past the end of the file.
        let len = (3 << 20) + 1234;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let p = std::env::temp_dir().join(format!("spcs-image-read-at-{}", std::process::id()));
        std::fs::write(&p, &data).expect("write");
        let img = open(&p);
        // Twice: the second time as on a kernel that cannot say what is cached (every long
        // aligned read direct).
        for pass in 0..2 {
            if pass == 1 {
                sys::forget_cachestat();
            }
            read_everywhere(&img, &data, len);
        }
        let _ = std::fs::remove_file(&p);
    }

    fn read_everywhere(img: &ImageFile, data: &[u8], len: usize) {
        let mut buf = sys::AlignedBuf::new(2 << 20);
        // Long aligned reads (direct where the filesystem takes it, or from the page cache),
        // a short one, an unaligned offset, an unaligned buffer, and the file's end.
        for (offset, n, at) in [(0u64, 2 << 20, 0usize), (1 << 20, 4096, 0), (4097, 1 << 20, 0), (0, 1 << 20, 1)] {
            let got = img.read_at(&mut buf[at..at + n], offset).expect("read");
            assert_eq!(got, n);
            assert_eq!(
                &buf[at..at + n],
                &data[offset as usize..offset as usize + n],
                "offset {offset} len {n} at {at}"
            );
        }
        let tail = len - (3 << 20);
        let got = img.read_at(&mut buf[..1 << 20], 3 << 20).expect("read the end");
        assert_eq!(got, tail);
        assert_eq!(&buf[..tail], &data[3 << 20..]);
        // Whatever the kernel says of the cache, it never counts more than was asked.
        if let Some(c) = sys::cached_bytes(&img.file, 0, 1 << 20) {
            assert!(c <= 1 << 20, "{c} cached bytes of 1 MiB");
        }
    }
}
