//! spcs data mover: the `spcs._datamover` extension module.
//!
//! This first version holds a sparse-aware raw copy; the full RAW/QCOW2 mover grows here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

const CHUNK: usize = 1 << 20;

fn seek(fd: i32, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no more data (SEEK_DATA) past `offset`.
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Copies the data extents of `src` into a new file `dst`, leaving holes as holes.
fn sparse_copy_inner(src: &str, dst: &str, done: &AtomicU64) -> io::Result<(u64, u64)> {
    let input = File::open(src)?;
    let size = input.metadata()?.len();
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    output.set_len(size)?;
    let fd = input.as_raw_fd();
    let mut buf = vec![0u8; CHUNK];
    let (mut copied, mut pos) = (0u64, 0u64);
    while pos < size {
        let Some(start) = seek(fd, pos, libc::SEEK_DATA)? else { break };
        let end = seek(fd, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(CHUNK);
            input.read_exact_at(&mut buf[..n], off)?;
            // Written zeros stay holes in the (freshly created, zero-reading) target.
            if buf[..n].iter().any(|&b| b != 0) {
                output.write_all_at(&buf[..n], off)?;
                copied += n as u64;
            }
            off += n as u64;
            done.store(off, Ordering::Relaxed);
        }
        pos = end;
    }
    output.sync_all()?;
    done.store(size, Ordering::Relaxed);
    Ok((copied, size - copied))
}

/// A sparse raw file copy whose progress can be read while it runs.
#[pyclass(frozen)]
struct SparseCopy {
    src: String,
    dst: String,
    done: Arc<AtomicU64>,
}

#[pymethods]
impl SparseCopy {
    #[new]
    fn new(src: String, dst: String) -> Self {
        SparseCopy { src, dst, done: Arc::new(AtomicU64::new(0)) }
    }

    /// Runs the copy with the GIL released; returns (bytes_written, bytes_skipped).
    fn run(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let (src, dst, done) = (self.src.clone(), self.dst.clone(), self.done.clone());
        py.detach(move || sparse_copy_inner(&src, &dst, &done))
            .map_err(|e| PyOSError::new_err(format!("copy {} -> {}: {e}", self.src, self.dst)))
    }

    /// Bytes of the source walked so far.
    #[getter]
    fn bytes_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

#[pymodule]
fn _datamover(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SparseCopy>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
