//! Writing a raw LUKS1 volume: the payload is encrypted chunk by chunk in the workers (each
//! sector's tweak is its payload sector number, so chunks are independent and go out of
//! order), into a per-worker aligned buffer so the plaintext stays intact for the digest.
//! Every byte is written, zeros included (their ciphertext is not zeros, as with qemu-img's
//! skip-zero off); the header goes last, in `finish`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypt::luks1::{self, Created};
use crate::crypt::Key;
use crate::error::{Error, Result};
use crate::image::{Scratch, Tally, Target};
use crate::sys::{self, AlignedBuf, Direct};

/// Buffered writes are split into pieces of this size (see `target`).
const BUFFERED_WRITE: usize = 256 << 10;
/// Zero ranges are encrypted and written in steps of this size; cancel is checked between.
const ZERO_STEP: usize = 1 << 20;

pub struct LuksWriter {
    file: File,
    direct: Option<Direct>,
    path: PathBuf,
    payload: u64,
    key: Key,
    /// Header and key slot areas, written by `finish`.
    area: Vec<u8>,
    unflushed: AtomicU64,
}

/// Bytes a volume needs for `virtual_size` bytes of payload (whole sectors).
pub fn volume_size(virtual_size: u64) -> u64 {
    luks1::PAYLOAD_OFFSET + virtual_size.next_multiple_of(luks1::SECTOR)
}

impl LuksWriter {
    pub fn new(file: File, direct: Option<Direct>, path: &Path, created: Created) -> LuksWriter {
        LuksWriter {
            file,
            direct,
            path: path.to_path_buf(),
            payload: created.header.payload_offset(),
            key: created.key,
            area: created.area,
            unflushed: AtomicU64::new(0),
        }
    }

    fn err(&self, what: &str, offset: u64, e: &std::io::Error) -> Error {
        Error::target_io(&self.path, what, Some(offset), e)
    }

    /// Writes ciphertext at payload offset `offset`: O_DIRECT for the aligned prefix when
    /// enabled, the rest buffered with early writeback.
    fn write_run(&self, data: &[u8], offset: u64) -> Result<()> {
        let at = self.payload + offset;
        let direct = match &self.direct {
            Some(d) => d.write_prefix(data, at).map_err(|e| self.err("write failed", at, &e))?,
            None => 0,
        };
        if direct == data.len() {
            return Ok(());
        }
        let rest = &data[direct..];
        for (i, part) in rest.chunks(BUFFERED_WRITE).enumerate() {
            let o = at + (direct + i * BUFFERED_WRITE) as u64;
            sys::pwrite_all(&self.file, part, o).map_err(|e| self.err("write failed", o, &e))?;
        }
        let pending = self.unflushed.fetch_add(rest.len() as u64, Ordering::Relaxed) + rest.len() as u64;
        if pending >= 8 << 20 {
            self.unflushed.store(0, Ordering::Relaxed);
            sys::start_writeback(&self.file, 0, 0);
        }
        Ok(())
    }
}

fn sealed(scratch: &mut Scratch, len: usize) -> &mut AlignedBuf {
    if scratch.sealed.as_ref().is_none_or(|b| b.len() < len) {
        scratch.sealed = Some(AlignedBuf::new(len));
    }
    scratch.sealed.as_mut().expect("just made")
}

impl Target for LuksWriter {
    fn write(&self, offset: u64, buf: &mut [u8], len: usize, scratch: &mut Scratch) -> Result<Tally> {
        let padded = len.next_multiple_of(luks1::SECTOR as usize);
        buf[len..padded].fill(0);
        let out = sealed(scratch, padded);
        self.key.encrypt_to(&buf[..padded], &mut out[..padded], offset / luks1::SECTOR);
        self.write_run(&out[..padded], offset)?;
        Ok(Tally { written: len as u64, skipped: 0 })
    }

    /// Zeros are encrypted and written like any data.
    fn zero(&self, offset: u64, len: u64, stop: &dyn Fn() -> bool) -> Result<()> {
        let mut buf = AlignedBuf::new(ZERO_STEP);
        let end = (offset + len).next_multiple_of(luks1::SECTOR);
        let mut at = offset;
        while at < end {
            if stop() {
                return Ok(());
            }
            let n = (end - at).min(ZERO_STEP as u64) as usize;
            buf[..n].fill(0);
            self.key.encrypt(&mut buf[..n], at / luks1::SECTOR);
            self.write_run(&buf[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn finish(&self) -> Result<u64> {
        sys::pwrite_all(&self.file, &self.area, 0).map_err(|e| self.err("cannot write the LUKS header", 0, &e))?;
        self.file.sync_data().map_err(|e| self.err("fsync failed", 0, &e))?;
        Ok(self.area.len() as u64)
    }
}
