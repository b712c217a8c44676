//! The copy engine.
//!
//! One planner (the calling thread) walks the source map in 2 MiB chunks and queues tasks;
//! N workers read (or decompress) a chunk into a pooled aligned buffer and hand it to the
//! target, which leaves out zeros and packs it as its format does, out of order. With a
//! digest requested, a digest thread hashes the chunks back in order; buffers return to the
//! pool only after that, so memory stays bounded by the pool. Progress and cancellation are
//! atomics: nothing calls into Python. Nothing here knows an image format.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::codec::Decompressor;
use crate::crypt::Passphrase;
use crate::digest::{DigestKind, Hasher};
use crate::error::{Error, Kind, Result};
use crate::image::{Format, ImageFile, Piece, Scratch, Target};
use crate::source::{open_source_with, Source, Unlock};
use crate::sys::{self, AlignedBuf};
use crate::target::{Destination, TargetOptions};

/// Virtual bytes per task; a multiple of every qcow2 cluster size, so clusters never straddle tasks.
pub const CHUNK: u64 = 2 << 20;
/// Long zero runs are queued in pieces so progress moves and cancel stays prompt.
const MAX_ZERO_TASK: u64 = 1 << 30;

/// Shared with the Python side: progress and cancellation.
#[derive(Default)]
pub struct Control {
    pub cancel: AtomicBool,
    pub done: AtomicU64,
    pub total: AtomicU64,
}

#[derive(Default)]
struct Counters {
    read: AtomicU64,
    written: AtomicU64,
    skipped: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_skipped: u64,
    pub virtual_size: u64,
    pub seconds: f64,
    pub checksum: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub src: PathBuf,
    /// None: read only (digest pass for `info`).
    pub dst: Option<PathBuf>,
    pub src_format: Option<Format>,
    pub target: TargetOptions,
    pub checksum: Option<DigestKind>,
    pub chain_limit: u32,
    /// Every file of the source chain must lie in this directory (see `source::Confine`).
    pub confine_to: Option<PathBuf>,
    pub threads: usize,
    /// Unlocks an encrypted source (every encrypted image of its chain).
    pub src_passphrase: Option<Arc<Passphrase>>,
}

pub fn default_threads() -> usize {
    // Two more than the cores: workers also block on I/O, and the buffer pool bounds memory.
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2) + 2
}

enum Task {
    Data { offset: u64, len: u64, pieces: Vec<Piece> },
    Zero { offset: u64, len: u64 },
}

/// Reusable aligned buffers; `get` waits for one, giving up when the copy stops.
pub struct Pool {
    bufs: Mutex<Vec<AlignedBuf>>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub fn new(count: usize, size: usize) -> Pool {
        Pool { bufs: Mutex::new((0..count).map(|_| AlignedBuf::new(size)).collect()), cv: Condvar::new() }
    }

    pub fn get(&self, stop: &dyn Fn() -> bool) -> Option<AlignedBuf> {
        let mut g = lock(&self.bufs);
        loop {
            if stop() {
                return None;
            }
            if let Some(b) = g.pop() {
                return Some(b);
            }
            g = self.cv.wait_timeout(g, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub fn put(&self, b: AlignedBuf) {
        lock(&self.bufs).push(b);
        self.cv.notify_one();
    }
}

/// Finished chunks by offset: (length, buffer; None for zero ranges).
type Finished = BTreeMap<u64, (u64, Option<AlignedBuf>)>;

/// Puts finished chunks back in order for the digest.
struct Reorder {
    state: Mutex<(Finished, bool)>,
    cv: Condvar,
}

impl Reorder {
    fn push(&self, offset: u64, len: u64, buf: Option<AlignedBuf>) {
        lock(&self.state).0.insert(offset, (len, buf));
        self.cv.notify_all();
    }

    fn close(&self) {
        lock(&self.state).1 = true;
        self.cv.notify_all();
    }

    /// The chunk at `next`, or None once closed without it (or stopped).
    fn take(&self, next: u64, stop: &dyn Fn() -> bool) -> Option<(u64, Option<AlignedBuf>)> {
        let mut g = lock(&self.state);
        loop {
            if let Some(v) = g.0.remove(&next) {
                return Some(v);
            }
            if g.1 || stop() {
                return None;
            }
            g = self.cv.wait_timeout(g, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[derive(Default)]
struct WorkerCtx {
    decomp: Decompressor,
    stored: Vec<u8>,
    cluster: Vec<u8>,
    /// The target's.
    scratch: Scratch,
}

struct Engine<'a> {
    ctl: &'a Control,
    files: &'a [ImageFile],
    target: &'a dyn Target,
    counters: &'a Counters,
    pool: Pool,
    reorder: Option<Reorder>,
    rx: Mutex<Receiver<Task>>,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Engine<'_> {
    fn stopped(&self) -> bool {
        self.ctl.cancel.load(Ordering::Relaxed) || self.abort.load(Ordering::Relaxed)
    }

    fn fail(&self, e: Error) {
        let mut g = lock(&self.error);
        if g.is_none() {
            *g = Some(e);
        }
        self.abort.store(true, Ordering::Relaxed);
    }

    fn worker(&self) {
        let mut ctx = WorkerCtx::default();
        loop {
            if self.stopped() {
                // Keep receiving so a planner blocked on a full queue can see the stop.
                while lock(&self.rx).recv().is_ok() {}
                return;
            }
            let Some(mut buf) = self.pool.get(&|| self.stopped()) else { continue };
            let task = lock(&self.rx).recv();
            let Ok(task) = task else {
                self.pool.put(buf);
                return;
            };
            if self.stopped() {
                self.pool.put(buf);
                continue;
            }
            let (offset, len, used) = match &task {
                Task::Zero { offset, len } => (*offset, *len, false),
                Task::Data { offset, len, .. } => (*offset, *len, true),
            };
            let r = match &task {
                Task::Zero { offset, len } => self.zero_task(*offset, *len),
                Task::Data { offset, len, pieces } => self.data_task(*offset, *len, pieces, &mut buf, &mut ctx),
            };
            if let Err(e) = r {
                self.fail(e);
                self.pool.put(buf);
                continue;
            }
            self.ctl.done.fetch_add(len, Ordering::Relaxed);
            match &self.reorder {
                Some(r) if used => r.push(offset, len, Some(buf)),
                Some(r) => {
                    self.pool.put(buf);
                    r.push(offset, len, None);
                }
                None => self.pool.put(buf),
            }
        }
    }

    fn zero_task(&self, offset: u64, len: u64) -> Result<()> {
        self.counters.skipped.fetch_add(len, Ordering::Relaxed);
        self.target.zero(offset, len, &|| self.stopped())
    }

    fn data_task(
        &self,
        offset: u64,
        len: u64,
        pieces: &[Piece],
        buf: &mut AlignedBuf,
        ctx: &mut WorkerCtx,
    ) -> Result<()> {
        self.fill(pieces, &mut buf[..len as usize], ctx)?;
        let tally = self.target.write(offset, buf, len as usize, &mut ctx.scratch)?;
        self.counters.written.fetch_add(tally.written, Ordering::Relaxed);
        self.counters.skipped.fetch_add(tally.skipped, Ordering::Relaxed);
        Ok(())
    }

    /// Produces the virtual bytes of a chunk from its pieces.
    fn fill(&self, pieces: &[Piece], buf: &mut [u8], ctx: &mut WorkerCtx) -> Result<()> {
        let mut at = 0usize;
        for p in pieces {
            let n = p.len() as usize;
            let dst = &mut buf[at..at + n];
            match *p {
                Piece::Zero { .. } => dst.fill(0),
                Piece::Data { file, host, pad, .. } => {
                    let img = &self.files[file];
                    let got = img
                        .read_at(dst, host)
                        .map_err(|e| Error::source_io(&img.path, "read failed", Some(host), &e))?;
                    self.counters.read.fetch_add(got as u64, Ordering::Relaxed);
                    if got < n {
                        if !pad {
                            return Err(Error::new(Kind::Source, "unexpected end of file (did the source shrink?)")
                                .at(&img.path)
                                .offset(host + got as u64));
                        }
                        dst[got..].fill(0);
                    }
                }
                Piece::Compressed { file, host, stored, codec, cluster, skip, .. } => {
                    let img = &self.files[file];
                    ctx.stored.resize(stored as usize, 0);
                    let got = sys::pread_full(&img.file, &mut ctx.stored, host)
                        .map_err(|e| Error::source_io(&img.path, "read failed", Some(host), &e))?;
                    self.counters.read.fetch_add(got as u64, Ordering::Relaxed);
                    let r = ctx.decomp.decompress_part(codec, &ctx.stored[..got], cluster, skip, dst, &mut ctx.cluster);
                    r.map_err(|m| Error::format(&img.path, format!("compressed cluster: {m}")).offset(host))?;
                }
                Piece::Encrypted { file, host, sector, ref key, .. } => {
                    let img = &self.files[file];
                    let got = img
                        .read_at(dst, host)
                        .map_err(|e| Error::source_io(&img.path, "read failed", Some(host), &e))?;
                    self.counters.read.fetch_add(got as u64, Ordering::Relaxed);
                    dst[got..].fill(0);
                    key.decrypt(dst, sector);
                }
            }
            at += n;
        }
        Ok(())
    }

    fn digest(&self, kind: DigestKind, size: u64) -> Option<String> {
        let reorder = self.reorder.as_ref()?;
        let mut h = Hasher::new(kind);
        let zeros = vec![0u8; 1 << 20];
        let mut next = 0u64;
        while next < size {
            let (len, buf) = reorder.take(next, &|| self.stopped())?;
            match buf {
                Some(b) => {
                    h.update(&b[..len as usize]);
                    self.pool.put(b);
                }
                None => {
                    let mut left = len;
                    while left > 0 {
                        if self.stopped() {
                            return None;
                        }
                        let n = left.min(zeros.len() as u64);
                        h.update(&zeros[..n as usize]);
                        left -= n;
                    }
                }
            }
            next += len;
        }
        Some(h.hex())
    }
}

fn plan(source: &mut Source, tx: &SyncSender<Task>, stopped: &dyn Fn() -> bool) -> Result<()> {
    let size = source.virtual_size;
    let mut off = 0u64;
    let mut zero_from: Option<u64> = None;
    let mut pieces = Vec::new();
    let send = |t: Task| tx.send(t).is_ok();
    while off < size {
        if stopped() {
            return Ok(());
        }
        let len = (CHUNK - off % CHUNK).min(size - off);
        pieces.clear();
        source.top.map(off, len, &mut pieces)?;
        debug_assert_eq!(pieces.iter().map(Piece::len).sum::<u64>(), len);
        if pieces.iter().all(|p| matches!(p, Piece::Zero { .. })) {
            let z = *zero_from.get_or_insert(off);
            if off + len - z >= MAX_ZERO_TASK {
                zero_from = None;
                if !send(Task::Zero { offset: z, len: off + len - z }) {
                    return Ok(());
                }
            }
        } else {
            if let Some(z) = zero_from.take() {
                if !send(Task::Zero { offset: z, len: off - z }) {
                    return Ok(());
                }
            }
            if !send(Task::Data { offset: off, len, pieces: std::mem::take(&mut pieces) }) {
                return Ok(());
            }
        }
        off += len;
    }
    if let Some(z) = zero_from {
        send(Task::Zero { offset: z, len: size - z });
    }
    Ok(())
}

/// Runs the planner, workers and digest over an opened source and target.
fn run_engine(
    source: &mut Source,
    target: &dyn Target,
    req: &Request,
    ctl: &Control,
    counters: &Counters,
) -> Result<Option<String>> {
    let threads = req.threads.max(1);
    let (tx, rx) = sync_channel::<Task>(threads * 2);
    let files = source.files.clone();
    let engine = Engine {
        ctl,
        files: &files,
        target,
        counters,
        pool: Pool::new(threads + 2, CHUNK as usize),
        reorder: req.checksum.map(|_| Reorder { state: Mutex::new((BTreeMap::new(), false)), cv: Condvar::new() }),
        rx: Mutex::new(rx),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let size = source.virtual_size;
    let eng = &engine;
    let digest = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(move || eng.worker())).collect();
        let digest = req.checksum.map(|k| s.spawn(move || eng.digest(k, size)));
        let planned = plan(source, &tx, &|| engine.stopped());
        drop(tx);
        if let Err(e) = planned {
            engine.fail(e);
        }
        for w in workers {
            if w.join().is_err() {
                engine.fail(Error::new(Kind::Internal, "a copy worker panicked"));
            }
        }
        if let Some(r) = &engine.reorder {
            r.close();
        }
        digest.map(|d| d.join().unwrap_or(None))
    });
    if let Some(e) = lock(&engine.error).take() {
        return Err(e);
    }
    if ctl.cancel.load(Ordering::Relaxed) {
        return Err(Error::cancelled());
    }
    if req.checksum.is_some() && digest.as_ref().is_none_or(|d| d.is_none()) {
        return Err(Error::new(Kind::Internal, "digest stage ended early"));
    }
    Ok(digest.flatten())
}

/// Opens the source, prepares the destination, copies, and commits or cleans up.
pub fn convert(req: &Request, ctl: &Control) -> Result<Stats> {
    let start = Instant::now();
    let unlock = Unlock::With(req.src_passphrase.as_deref());
    let mut source = open_source_with(&req.src, req.src_format, req.chain_limit, req.confine_to.as_deref(), unlock)?;
    let size = source.virtual_size;
    ctl.total.store(size, Ordering::Relaxed);
    let dest = match &req.dst {
        Some(d) => {
            let ids: Vec<(u64, u64)> = source
                .files
                .iter()
                .filter_map(|f| f.file.metadata().ok())
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    (m.dev(), m.ino())
                })
                .collect();
            Destination::prepare(d, &req.target, size, &ids)?
        }
        None => Destination::null(),
    };
    if ctl.cancel.load(Ordering::Relaxed) {
        return Err(dest.abandon(Error::cancelled()));
    }
    let counters = Counters::default();
    let checksum = match run_engine(&mut source, dest.target.as_ref(), req, ctl, &counters) {
        Ok(c) => c,
        Err(e) => return Err(dest.abandon(e)),
    };
    let meta = dest.commit()?;
    ctl.done.store(size, Ordering::Relaxed);
    Ok(Stats {
        bytes_read: counters.read.load(Ordering::Relaxed),
        bytes_written: counters.written.load(Ordering::Relaxed) + meta,
        bytes_skipped: counters.skipped.load(Ordering::Relaxed),
        virtual_size: size,
        seconds: start.elapsed().as_secs_f64(),
        checksum,
    })
}
