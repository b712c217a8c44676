//! Thin wrappers over the Linux calls the mover needs: positional I/O, SEEK_DATA/SEEK_HOLE,
//! hole punching, block-device ioctls, page-aligned buffers, and O_DIRECT: opening, and the
//! policy of which writes go direct (`Direct`).

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Alignment of buffers, offsets and lengths for O_DIRECT (covers 512 B and 4 KiB devices).
pub const ALIGN: usize = 4096;

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// Reads until `buf` is full or end of file; returns the bytes read (retries EINTR).
pub fn pread_full(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// cachestat(2), Linux 6.5; the same number on every architecture spcs runs on.
const SYS_CACHESTAT: libc::c_long = 451;
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Bytes of `[offset, offset + len)` the page cache holds for `f`, without any I/O; None
/// where the kernel cannot say (before 6.5). A probe read with RWF_NOWAIT was the other way
/// to ask, but it slowed the O_DIRECT reads beside it twofold here (files and devices).
pub fn cached_bytes(f: &File, offset: u64, len: u64) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    if NO_CACHESTAT.load(Ordering::Relaxed) {
        return None;
    }
    let range = Range { off: offset, len };
    let mut st = Stat::default();
    // SAFETY: cachestat reads `range` and writes `st`, both valid for the call.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, f.as_raw_fd(), &range as *const Range, &mut st as *mut Stat, 0) };
    if r != 0 {
        NO_CACHESTAT.store(true, Ordering::Relaxed);
        return None;
    }
    Some(st.cache.saturating_mul(page_size()))
}

/// Makes `cached_bytes` answer None from now on, as on a kernel without cachestat (tests).
#[cfg(test)]
pub fn forget_cachestat() {
    NO_CACHESTAT.store(true, Ordering::Relaxed);
}

fn page_size() -> u64 {
    static P: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no memory effects.
    *P.get_or_init(|| u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096))
}

/// Opens `path` read-only with O_DIRECT, or None if the filesystem refuses O_DIRECT.
pub fn open_direct_read(path: &Path) -> Option<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

/// Writes all of `buf`; a zero-length write (device end) becomes ENOSPC.
pub fn pwrite_all(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.write_at(&buf[done..], offset + done as u64) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn lseek(f: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Next offset >= `offset` holding data, or None if only a hole follows.
pub fn seek_data(f: &File, offset: u64) -> io::Result<Option<u64>> {
    lseek(f, offset, libc::SEEK_DATA)
}

/// Next hole at or after `offset` (end of file counts as a hole).
pub fn seek_hole(f: &File, offset: u64) -> io::Result<Option<u64>> {
    lseek(f, offset, libc::SEEK_HOLE)
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: fallocate on a valid descriptor has no memory effects.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Deallocates a range of a regular file; it reads as zeros afterwards, size unchanged.
pub fn punch_hole(f: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
}

/// Zeroes a range of a block device (the kernel unmaps or writes zeros as the device allows).
pub fn blk_zeroout(f: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads a [u64; 2] from the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Size of a block device in bytes.
pub fn blk_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Starts writeback of a range without waiting, so the final fsync has little left to do.
pub fn start_writeback(f: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range on a valid descriptor has no memory effects. A failure only
    // means the final fsync does all the work, so it is ignored.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Tells the kernel the file will be read sequentially (bigger readahead).
pub fn advise_sequential(f: &File) {
    // SAFETY: advisory only; failure is harmless.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Where an open file really is, as the kernel resolved it (symlinks and all), via /proc.
pub fn fd_path(f: &File) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Size of a regular file or block device.
pub fn file_size(f: &File) -> io::Result<u64> {
    let m = f.metadata()?;
    if m.file_type().is_block_device() {
        blk_size(f)
    } else {
        Ok(m.len())
    }
}

/// Opens `path` for writing with O_DIRECT, or None if the filesystem refuses O_DIRECT.
pub fn open_direct(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

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

/// The error `Direct::open` returns when O_DIRECT was required but the filesystem refuses it.
const DIRECT_REFUSED: &str = "O_DIRECT was requested but the target does not support it";

/// A target's O_DIRECT descriptor and the policy for using it: block devices take every
/// aligned run direct, regular files only runs of at least `file_direct_min()`; everything
/// else (and everything once the filesystem has refused a direct write) is the caller's to
/// write through the page cache.
pub struct Direct {
    file: File,
    /// Shortest run written direct.
    min: usize,
    /// Set once the filesystem took O_DIRECT at open but refused a request.
    failed: AtomicBool,
}

impl Direct {
    /// Opens `path` for O_DIRECT writes as the `direct` option asks: never (`Some(false)`),
    /// where the filesystem accepts it (`None`), or always (`Some(true)`: a refusal is an
    /// error for which `is_refusal` is true).
    pub fn open(path: &Path, want: Option<bool>, block_device: bool) -> io::Result<Option<Direct>> {
        if want == Some(false) {
            return Ok(None);
        }
        match open_direct(path)? {
            Some(file) => {
                let min = if block_device { 0 } else { file_direct_min() };
                Ok(Some(Direct { file, min, failed: AtomicBool::new(false) }))
            }
            None if want == Some(true) => Err(io::Error::new(io::ErrorKind::Unsupported, DIRECT_REFUSED)),
            None => Ok(None),
        }
    }

    /// True for the error `open` returns when O_DIRECT was required but is not supported.
    pub fn is_refusal(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Unsupported && e.raw_os_error().is_none()
    }

    /// Writes the longest multiple of ALIGN bytes at the start of `data` to `offset` directly,
    /// if the run is long enough, `offset` is aligned and O_DIRECT still works here. Returns
    /// the bytes written; the caller writes the rest through the page cache.
    pub fn write_prefix(&self, data: &[u8], offset: u64) -> io::Result<usize> {
        if data.len() < self.min || !offset.is_multiple_of(ALIGN as u64) || self.failed.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let aligned = data.len() / ALIGN * ALIGN;
        if aligned == 0 {
            return Ok(0);
        }
        match pwrite_all(&self.file, &data[..aligned], offset) {
            Ok(()) => Ok(aligned),
            // The filesystem accepted O_DIRECT at open but not this request.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.failed.store(true, Ordering::Relaxed);
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to`; with `replace == false` fails with EEXIST if `to` exists.
pub fn rename(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        return std::fs::rename(from, to);
    }
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(from.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let b = CString::new(to.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: both strings are valid NUL-terminated paths for the duration of the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) {
        // Filesystem without RENAME_NOREPLACE: link() also refuses to replace.
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(e)
}

/// A zero-initialised, page-aligned heap buffer (O_DIRECT-safe), reused through a pool
/// because first-touch memory is expensive on these VMs.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let len = len.max(ALIGN);
        let layout = Layout::from_size_align(len, ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.len, ALIGN)) }
    }
}

/// True if every byte is zero; written so the compiler vectorises it.
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: u128 has no invalid bit patterns.
    let (head, body, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && body.chunks(16).all(|c| c.iter().fold(0u128, |a, &x| a | x) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_only_long_aligned_runs() {
        let p = std::env::temp_dir().join(format!("spcs-sys-direct-{}", std::process::id()));
        std::fs::write(&p, b"").expect("create");
        assert!(Direct::open(&p, Some(false), false).expect("open").is_none(), "direct=False never opens");
        let opened = Direct::open(&p, None, false).expect("open");
        let Some(file) = opened else {
            // This filesystem refuses O_DIRECT: `None` falls back quietly, nothing more to check.
            let _ = std::fs::remove_file(&p);
            return;
        };
        let min = file_direct_min().max(ALIGN);
        let buf = AlignedBuf::new(min + ALIGN);
        // Regular files: runs shorter than the minimum and unaligned offsets stay buffered.
        if file_direct_min() > ALIGN {
            assert_eq!(file.write_prefix(&buf[..ALIGN], 0).expect("write"), 0);
        }
        assert_eq!(file.write_prefix(&buf[..min + 100], 512).expect("write"), 0);
        // A long aligned run goes direct up to its last whole block; the caller writes the rest.
        assert_eq!(file.write_prefix(&buf[..min + 100], ALIGN as u64).expect("write"), min);
        // Block devices: every aligned run, however short, but never less than a block.
        let device = Direct::open(&p, None, true).expect("open").expect("O_DIRECT again");
        assert_eq!(device.write_prefix(&buf[..ALIGN + 1], 0).expect("write"), ALIGN);
        assert_eq!(device.write_prefix(&buf[..ALIGN - 1], 0).expect("write"), 0);
        let _ = std::fs::remove_file(&p);

        assert!(Direct::is_refusal(&io::Error::new(io::ErrorKind::Unsupported, DIRECT_REFUSED)));
        assert!(!Direct::is_refusal(&io::Error::from_raw_os_error(libc::ENOSYS)));
        assert!(!Direct::is_refusal(&io::Error::from_raw_os_error(libc::EINVAL)));
    }
}
