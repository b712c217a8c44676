//! Destinations: where the bytes go, and how a copy is committed or abandoned.
//!
//! An existing block device or regular file receiving raw output is written in place (never
//! truncated or replaced). Anything else is written to a temporary file in the destination's
//! directory and renamed over the destination only after a successful flush.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::codec::Codec;
use crate::error::{Error, Kind, Result};
use crate::qcow2::writer::Qcow2Writer;
use crate::source::Format;
use crate::sys::{self, AlignedBuf, ALIGN};

#[derive(Debug, Clone)]
pub struct TargetOptions {
    pub format: Format,
    pub compression: Option<Codec>,
    pub target_is_zero: bool,
    /// None: O_DIRECT wherever the filesystem or device accepts it.
    pub direct: Option<bool>,
    pub cluster_size: u64,
    pub overwrite: bool,
}

/// How zero ranges of the source reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    /// The target already reads as zero there (new file, or the caller said so).
    Skip,
    /// Regular file written in place: punch holes.
    Punch,
    /// Block device written in place: BLKZEROOUT, or written zeros.
    Device,
}

/// Buffered writes above this size are split: on these kernels 1 MiB write() calls cost
/// about 3x more per byte than 128-256 KiB ones.
const BUFFERED_WRITE: usize = 256 << 10;
/// Runs shorter than this go through the page cache (then early writeback and the final
/// fsync) even when O_DIRECT is on: small O_DIRECT writes between holes each cost an extent
/// allocation and a synchronous device round trip, while long runs are much cheaper direct
/// (no page-cache copy, little CPU, which matters on a shared 2-core host).
pub const DIRECT_MIN: usize = 1 << 20;
/// DIRECT_MIN for regular files, overridable with SPCS_DATAMOVER_DIRECT_MIN (bytes) to tune a
/// host's storage (0: every aligned run O_DIRECT).
pub fn file_direct_min() -> usize {
    static V: OnceLock<usize> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("SPCS_DATAMOVER_DIRECT_MIN").ok().and_then(|v| v.parse().ok()).unwrap_or(DIRECT_MIN)
    })
}

/// Zeroing of large ranges is split so cancellation stays prompt.
pub const ZERO_STEP: u64 = 256 << 20;

pub struct RawTarget {
    file: File,
    direct: Option<File>,
    direct_failed: AtomicBool,
    path: PathBuf,
    zero: ZeroMode,
    /// Shortest run written with O_DIRECT: DIRECT_MIN on files, any on block devices.
    direct_min: usize,
    /// Bytes written since the last writeback kick (buffered mode only).
    unflushed: AtomicU64,
}

fn zeros() -> &'static AlignedBuf {
    static Z: OnceLock<AlignedBuf> = OnceLock::new();
    Z.get_or_init(|| AlignedBuf::new(1 << 20))
}

impl RawTarget {
    fn err(&self, what: &str, offset: u64, e: &std::io::Error) -> Error {
        Error::target_io(&self.path, what, Some(offset), e)
    }

    fn buffered_write(&self, data: &[u8], offset: u64) -> Result<()> {
        for (i, part) in data.chunks(BUFFERED_WRITE).enumerate() {
            let at = offset + (i * BUFFERED_WRITE) as u64;
            sys::pwrite_all(&self.file, part, at).map_err(|e| self.err("write failed", at, &e))?;
        }
        // Start writeback early so the final fsync has little left and dirty pages stay few.
        let pending = self.unflushed.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
        if pending >= 8 << 20 {
            self.unflushed.store(0, Ordering::Relaxed);
            sys::start_writeback(&self.file, 0, 0);
        }
        Ok(())
    }

    /// Writes `data` at `offset`; O_DIRECT for the aligned part of long runs when enabled.
    pub fn write(&self, data: &[u8], offset: u64) -> Result<()> {
        let direct = self
            .direct
            .as_ref()
            .filter(|_| data.len() >= self.direct_min && !self.direct_failed.load(Ordering::Relaxed));
        let (Some(d), true) = (direct, offset.is_multiple_of(ALIGN as u64)) else {
            return self.buffered_write(data, offset);
        };
        let aligned = data.len() / ALIGN * ALIGN;
        if aligned > 0 {
            match sys::pwrite_all(d, &data[..aligned], offset) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The filesystem accepted O_DIRECT at open but not this request.
                    self.direct_failed.store(true, Ordering::Relaxed);
                    return self.buffered_write(data, offset);
                }
                Err(e) => return Err(self.err("write failed", offset, &e)),
            }
        }
        if aligned < data.len() {
            self.buffered_write(&data[aligned..], offset + aligned as u64)?;
        }
        Ok(())
    }

    fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        let z = zeros();
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(z.len() as u64) as usize;
            self.write(&z[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeros, unless the target already does.
    pub fn zero(&self, offset: u64, len: u64) -> Result<()> {
        match self.zero {
            ZeroMode::Skip => Ok(()),
            ZeroMode::Punch => match sys::punch_hole(&self.file, offset, len) {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) => {
                    self.write_zeros(offset, len)
                }
                Err(e) => Err(self.err("cannot punch hole", offset, &e)),
            },
            ZeroMode::Device => {
                // BLKZEROOUT wants 512-byte alignment; small ranges are cheaper to write.
                let start = offset.next_multiple_of(512);
                let end = (offset + len) / 512 * 512;
                if len < (64 << 10) || end <= start {
                    return self.write_zeros(offset, len);
                }
                match sys::blk_zeroout(&self.file, start, end - start) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOTTY)
                        ) =>
                    {
                        self.write_zeros(start, end - start)?
                    }
                    Err(e) => return Err(self.err("BLKZEROOUT failed", start, &e)),
                }
                self.write_zeros(offset, start - offset)?;
                self.write_zeros(end, offset + len - end)
            }
        }
    }

    pub fn skips_zeros(&self) -> bool {
        self.zero == ZeroMode::Skip
    }

    fn finish(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.err("fsync failed", 0, &e))
    }
}

pub enum Target {
    Raw(RawTarget),
    Qcow2(Qcow2Writer),
    /// No output: a read pass (digest only).
    Null,
}

impl Target {
    /// Flushes everything; returns metadata bytes written (qcow2).
    pub fn finish(&self) -> Result<u64> {
        match self {
            Target::Raw(r) => r.finish().map(|_| 0),
            Target::Qcow2(w) => w.finish(),
            Target::Null => Ok(0),
        }
    }
}

enum Placement {
    InPlace,
    Temp { temp: PathBuf, final_path: PathBuf, replace: bool },
    None,
}

/// A prepared destination: the target to write and how to commit or abandon it.
pub struct Destination {
    pub target: Target,
    placement: Placement,
    pub path: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = final_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!(".{name}.spcs-partial.{}.{n}", std::process::id()))
}

fn open_direct(path: &Path, want: Option<bool>) -> Result<Option<File>> {
    if want == Some(false) {
        return Ok(None);
    }
    match sys::open_direct(path) {
        Ok(Some(f)) => Ok(Some(f)),
        Ok(None) if want == Some(true) => {
            Err(Error::invalid("O_DIRECT was requested but the target does not support it").at(path))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(Error::target_io(path, "cannot open", None, &e)),
    }
}

impl Destination {
    pub fn null() -> Destination {
        Destination { target: Target::Null, placement: Placement::None, path: PathBuf::new() }
    }

    /// Decides in place vs temporary file, checks sizes, and opens the target. Writes nothing
    /// to an existing destination.
    pub fn prepare(
        dst: &Path,
        opts: &TargetOptions,
        virtual_size: u64,
        source_ids: &[(u64, u64)],
    ) -> Result<Destination> {
        if opts.compression.is_some() && opts.format != Format::Qcow2 {
            return Err(Error::invalid("compression needs qcow2 output"));
        }
        match std::fs::metadata(dst) {
            Ok(m) => {
                if source_ids.contains(&(m.dev(), m.ino())) {
                    return Err(Error::invalid(
                        "destination is the same file as the source (or one of its backing files)",
                    )
                    .at(dst));
                }
                let is_block = m.file_type().is_block_device();
                if opts.format == Format::Raw && (m.is_file() || is_block) {
                    return Self::in_place(dst, opts, virtual_size, is_block);
                }
                if m.is_dir() {
                    return Err(Error::new(Kind::TargetExists, "is a directory").at(dst));
                }
                if !opts.overwrite {
                    return Err(Error::new(Kind::TargetExists, "already exists (pass overwrite to replace it)").at(dst));
                }
                if !m.is_file() {
                    return Err(Error::invalid("only a regular file can be replaced by a qcow2 image").at(dst));
                }
                // Replace the file a symlink points to, keeping the link.
                let real = std::fs::canonicalize(dst).map_err(|e| Error::target_io(dst, "cannot resolve", None, &e))?;
                Self::new_file(dst, real, opts, virtual_size, true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(dst).is_ok() {
                    return Err(Error::new(Kind::Io, "is a dangling symbolic link").at(dst));
                }
                Self::new_file(dst, dst.to_path_buf(), opts, virtual_size, false)
            }
            Err(e) => Err(Error::target_io(dst, "cannot stat", None, &e)),
        }
    }

    fn in_place(dst: &Path, opts: &TargetOptions, virtual_size: u64, is_block: bool) -> Result<Destination> {
        let file =
            OpenOptions::new().write(true).open(dst).map_err(|e| Error::target_io(dst, "cannot open", None, &e))?;
        let size = sys::file_size(&file).map_err(|e| Error::target_io(dst, "cannot get size", None, &e))?;
        if size < virtual_size {
            return Err(Error::new(
                Kind::TargetTooSmall,
                format!("target holds {size} bytes but the image needs {virtual_size}; nothing was written"),
            )
            .at(dst));
        }
        let zero = if opts.target_is_zero {
            ZeroMode::Skip
        } else if is_block {
            ZeroMode::Device
        } else {
            ZeroMode::Punch
        };
        let direct = open_direct(dst, opts.direct)?;
        let target = RawTarget {
            file,
            direct,
            direct_failed: AtomicBool::new(false),
            path: dst.to_path_buf(),
            zero,
            direct_min: if is_block { 0 } else { file_direct_min() },
            unflushed: AtomicU64::new(0),
        };
        Ok(Destination { target: Target::Raw(target), placement: Placement::InPlace, path: dst.to_path_buf() })
    }

    fn new_file(
        shown: &Path,
        final_path: PathBuf,
        opts: &TargetOptions,
        virtual_size: u64,
        replace: bool,
    ) -> Result<Destination> {
        let temp = temp_name(&final_path);
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&temp).map_err(|e| {
                Error::target_io(shown, "cannot create a temporary file next to the destination", None, &e)
            })?;
        let placement = Placement::Temp { temp: temp.clone(), final_path, replace };
        let built = (|| -> Result<Target> {
            let direct = open_direct(&temp, opts.direct)?;
            match opts.format {
                Format::Raw => {
                    file.set_len(virtual_size)
                        .map_err(|e| Error::target_io(shown, "cannot size the target", Some(virtual_size), &e))?;
                    Ok(Target::Raw(RawTarget {
                        file,
                        direct,
                        direct_failed: AtomicBool::new(false),
                        path: shown.to_path_buf(),
                        zero: ZeroMode::Skip,
                        direct_min: file_direct_min(),
                        unflushed: AtomicU64::new(0),
                    }))
                }
                Format::Qcow2 => Ok(Target::Qcow2(Qcow2Writer::new(
                    file,
                    direct,
                    shown,
                    virtual_size,
                    opts.cluster_size,
                    opts.compression,
                )?)),
            }
        })();
        match built {
            Ok(target) => Ok(Destination { target, placement, path: shown.to_path_buf() }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    pub fn in_place_target(&self) -> bool {
        matches!(self.placement, Placement::InPlace)
    }

    /// Flushes the target and moves it into place.
    pub fn commit(self) -> Result<u64> {
        let meta = match self.target.finish() {
            Ok(m) => m,
            Err(e) => return Err(self.abandon(e)),
        };
        if let Placement::Temp { temp, final_path, replace } = &self.placement {
            if let Err(e) = sys::rename(temp, final_path, *replace) {
                let err = if e.raw_os_error() == Some(libc::EEXIST) {
                    Error::new(Kind::TargetExists, "was created by someone else during the copy").at(&self.path)
                } else {
                    Error::target_io(&self.path, "cannot rename the finished copy into place", None, &e)
                };
                let _ = std::fs::remove_file(temp);
                return Err(err);
            }
            let dir = final_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            sys::fsync_dir(dir).map_err(|e| Error::target_io(dir, "cannot flush the directory", None, &e))?;
        }
        Ok(meta)
    }

    /// Cleans up after a failure: the temporary file goes; an in-place target is reported partial.
    pub fn abandon(self, mut err: Error) -> Error {
        match &self.placement {
            Placement::Temp { temp, .. } => {
                drop(self.target);
                let _ = std::fs::remove_file(temp);
            }
            Placement::InPlace => {
                err.target_partial = true;
                if err.path.is_none() || err.kind == Kind::Cancelled {
                    err.path = Some(self.path.clone());
                }
            }
            Placement::None => {}
        }
        err
    }
}
