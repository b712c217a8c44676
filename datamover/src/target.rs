//! Destinations: where the bytes go, and how a copy is committed or abandoned.
//!
//! An existing block device or regular file receiving raw output is written in place (never
//! truncated or replaced). Anything else is written to a temporary file in the destination's
//! directory and renamed over the destination only after a successful flush. The raw target
//! lives here; qcow2 output is `qcow2::writer`, behind the same `image::Target` trait.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::codec::Codec;
use crate::crypt::{luks1, Encrypt};
use crate::error::{Error, Kind, Result};
use crate::image::{Format, Scratch, Tally, Target};
use crate::luks::writer::{volume_size, LuksWriter};
use crate::qcow2::writer::Qcow2Writer;
use crate::sys::{self, AlignedBuf, Direct};

#[derive(Debug, Clone)]
pub struct TargetOptions {
    pub format: Format,
    pub compression: Option<Codec>,
    pub target_is_zero: bool,
    /// None: O_DIRECT wherever the filesystem or device accepts it.
    pub direct: Option<bool>,
    pub cluster_size: u64,
    pub overwrite: bool,
    /// Encrypt the output with LUKS: required for `Format::Luks`, optional for qcow2.
    pub encryption: Option<Encrypt>,
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
/// Zero-detection granularity for raw targets (QEMU's default -S 4k).
const ZERO_BLOCK: usize = 4096;

/// Zeroing of large ranges is split so cancellation stays prompt.
pub const ZERO_STEP: u64 = 256 << 20;

pub struct RawTarget {
    file: File,
    /// O_DIRECT writes of long aligned runs, when enabled and supported (see `sys::Direct`).
    direct: Option<Direct>,
    path: PathBuf,
    zero: ZeroMode,
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
    pub fn write_run(&self, data: &[u8], offset: u64) -> Result<()> {
        let direct = match &self.direct {
            Some(d) => d.write_prefix(data, offset).map_err(|e| self.err("write failed", offset, &e))?,
            None => 0,
        };
        if direct < data.len() {
            self.buffered_write(&data[direct..], offset + direct as u64)?;
        }
        Ok(())
    }

    fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        let z = zeros();
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(z.len() as u64) as usize;
            self.write_run(&z[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeros, unless the target already does.
    pub fn make_zero(&self, offset: u64, len: u64) -> Result<()> {
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
}

impl Target for RawTarget {
    /// Writes the non-zero 4 KiB runs of a chunk; zero runs are skipped or zeroed.
    fn write(&self, offset: u64, buf: &mut [u8], len: usize, _: &mut Scratch) -> Result<Tally> {
        let buf = &buf[..len];
        let mut tally = Tally::default();
        let mut i = 0;
        while i < len {
            let zero = sys::is_zero(&buf[i..(i + ZERO_BLOCK).min(len)]);
            let mut j = (i + ZERO_BLOCK).min(len);
            while j < len {
                let e = (j + ZERO_BLOCK).min(len);
                if sys::is_zero(&buf[j..e]) != zero {
                    break;
                }
                j = e;
            }
            if zero {
                self.make_zero(offset + i as u64, (j - i) as u64)?;
                tally.skipped += (j - i) as u64;
            } else {
                self.write_run(&buf[i..j], offset + i as u64)?;
                tally.written += (j - i) as u64;
            }
            i = j;
        }
        Ok(tally)
    }

    fn zero(&self, offset: u64, len: u64, stop: &dyn Fn() -> bool) -> Result<()> {
        let mut at = offset;
        while at < offset + len {
            if stop() {
                return Ok(());
            }
            let n = (offset + len - at).min(ZERO_STEP);
            self.make_zero(at, n)?;
            at += n;
        }
        Ok(())
    }

    fn finish(&self) -> Result<u64> {
        self.file.sync_data().map_err(|e| self.err("fsync failed", 0, &e))?;
        Ok(0)
    }
}

/// No output: a read pass (digest only).
struct NullTarget;

impl Target for NullTarget {
    fn write(&self, _: u64, _: &mut [u8], _: usize, _: &mut Scratch) -> Result<Tally> {
        Ok(Tally::default())
    }

    fn zero(&self, _: u64, _: u64, _: &dyn Fn() -> bool) -> Result<()> {
        Ok(())
    }

    fn finish(&self) -> Result<u64> {
        Ok(0)
    }
}

enum Placement {
    InPlace,
    Temp { temp: PathBuf, final_path: PathBuf, replace: bool },
    None,
}

/// A prepared destination: the target to write and how to commit or abandon it.
pub struct Destination {
    pub target: Box<dyn Target>,
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

fn open_direct(path: &Path, want: Option<bool>, block_device: bool) -> Result<Option<Direct>> {
    Direct::open(path, want, block_device).map_err(|e| {
        if Direct::is_refusal(&e) {
            Error::invalid(e.to_string()).at(path)
        } else {
            Error::target_io(path, "cannot open", None, &e)
        }
    })
}

impl Destination {
    pub fn null() -> Destination {
        Destination { target: Box::new(NullTarget), placement: Placement::None, path: PathBuf::new() }
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
        if opts.compression.is_some() && opts.encryption.is_some() {
            return Err(Error::invalid("compression cannot be used with encryption (qemu refuses it too)"));
        }
        match (opts.format, &opts.encryption) {
            (Format::Luks, None) => return Err(Error::invalid("luks output needs a passphrase")),
            (Format::Raw, Some(_)) => return Err(Error::invalid("raw output cannot be encrypted (use luks)")),
            _ => {}
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
                if matches!(opts.format, Format::Raw | Format::Luks) && (m.is_file() || is_block) {
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
        if let Some(enc) = opts.encryption.as_ref().filter(|_| opts.format == Format::Luks) {
            let need = volume_size(virtual_size);
            if size < need {
                return Err(Error::new(
                    Kind::TargetTooSmall,
                    format!(
                        "target holds {size} bytes but a LUKS volume of {virtual_size} bytes needs {need} (a {} byte header first); nothing was written",
                        luks1::PAYLOAD_OFFSET
                    ),
                )
                .at(dst));
            }
            let direct = open_direct(dst, opts.direct, is_block)?;
            let target = LuksWriter::new(file, direct, dst, luks1::create(enc)?);
            return Ok(Destination {
                target: Box::new(target),
                placement: Placement::InPlace,
                path: dst.to_path_buf(),
            });
        }
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
        let direct = open_direct(dst, opts.direct, is_block)?;
        let target = RawTarget { file, direct, path: dst.to_path_buf(), zero, unflushed: AtomicU64::new(0) };
        Ok(Destination { target: Box::new(target), placement: Placement::InPlace, path: dst.to_path_buf() })
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
        let built = (|| -> Result<Box<dyn Target>> {
            let direct = open_direct(&temp, opts.direct, false)?;
            match opts.format {
                Format::Raw => {
                    file.set_len(virtual_size)
                        .map_err(|e| Error::target_io(shown, "cannot size the target", Some(virtual_size), &e))?;
                    Ok(Box::new(RawTarget {
                        file,
                        direct,
                        path: shown.to_path_buf(),
                        zero: ZeroMode::Skip,
                        unflushed: AtomicU64::new(0),
                    }))
                }
                Format::Qcow2 => Ok(Box::new(Qcow2Writer::new(
                    file,
                    direct,
                    shown,
                    virtual_size,
                    opts.cluster_size,
                    opts.compression,
                    opts.encryption.as_ref().map(luks1::create).transpose()?,
                )?)),
                Format::Luks => {
                    let enc =
                        opts.encryption.as_ref().ok_or_else(|| Error::invalid("luks output needs a passphrase"))?;
                    let len = volume_size(virtual_size);
                    file.set_len(len).map_err(|e| Error::target_io(shown, "cannot size the target", Some(len), &e))?;
                    Ok(Box::new(LuksWriter::new(file, direct, shown, luks1::create(enc)?)))
                }
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
