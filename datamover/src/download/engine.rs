//! The streaming copy: the calling thread reads the file in blocks (in file order, once), a
//! digest thread hashes each block's fresh bytes in that order, and workers write the blocks'
//! data to their virtual offsets (decompressing compressed clusters), out of order. A zeroing
//! thread clears what reads as zeros on an in-place target meanwhile. Buffers come from a
//! bounded pool, so memory stays a few blocks whatever the size.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use super::input::Input;
use super::plan::{Cutter, Op, Plan};
use crate::codec::Decompressor;
use crate::digest::{DigestKind, Hasher};
use crate::error::{Error, Kind, Result};
use crate::image::{Scratch, Target};
use crate::pipeline::{Control, Pool, CHUNK};
use crate::sys::AlignedBuf;

/// Fresh bytes per block.
const BLOCK: usize = CHUNK as usize;

struct Block {
    /// Fresh bytes: `buf[fresh..len]`.
    fresh: usize,
    len: usize,
    buf: AlignedBuf,
    ops: Vec<Op>,
}

/// What the copy did, for the stats.
#[derive(Default)]
pub struct Tallies {
    pub written: AtomicU64,
    pub skipped: AtomicU64,
}

struct Engine<'a> {
    ctl: &'a Control,
    target: &'a dyn Target,
    name: &'a std::path::Path,
    pool: Pool,
    tallies: &'a Tallies,
    abort: &'a AtomicBool,
    error: Mutex<Option<Error>>,
}

#[derive(Default)]
struct WorkerCtx {
    decomp: Decompressor,
    whole: Vec<u8>,
    scratch: Scratch,
    /// Decompressed clusters gathered while they are contiguous on the virtual disk.
    out: Option<AlignedBuf>,
    out_virt: u64,
    out_len: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine<'_> {
    fn stopped(&self) -> bool {
        self.ctl.cancel.load(Ordering::Relaxed) || self.abort.load(Ordering::Relaxed)
    }

    fn fail(&self, e: Error) {
        lock(&self.error).get_or_insert(e);
        self.abort.store(true, Ordering::Relaxed);
    }

    fn write(&self, virt: u64, buf: &mut [u8], len: usize, scratch: &mut Scratch) -> Result<()> {
        let t = self.target.write(virt, buf, len, scratch)?;
        self.tallies.written.fetch_add(t.written, Ordering::Relaxed);
        self.tallies.skipped.fetch_add(t.skipped, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&self, ctx: &mut WorkerCtx) -> Result<()> {
        if ctx.out_len > 0 {
            let (virt, len) = (ctx.out_virt, ctx.out_len);
            ctx.out_len = 0;
            let out = ctx.out.get_or_insert_with(|| AlignedBuf::new(BLOCK));
            let t = self.target.write(virt, out, len, &mut ctx.scratch)?;
            self.tallies.written.fetch_add(t.written, Ordering::Relaxed);
            self.tallies.skipped.fetch_add(t.skipped, Ordering::Relaxed);
        }
        Ok(())
    }

    fn run_block(&self, b: &mut Block, ctx: &mut WorkerCtx) -> Result<()> {
        for op in &b.ops {
            match *op {
                Op::Plain { at, len, virt } => self.write(virt, &mut b.buf[at..at + len], len, &mut ctx.scratch)?,
                Op::Compressed { at, c } => {
                    let len = c.len as usize;
                    if ctx.out_len > 0 && (ctx.out_virt + ctx.out_len as u64 != c.virt || ctx.out_len + len > BLOCK) {
                        self.flush(ctx)?;
                    }
                    if ctx.out_len == 0 {
                        ctx.out_virt = c.virt;
                    }
                    let out = ctx.out.get_or_insert_with(|| AlignedBuf::new(BLOCK));
                    let input = &b.buf[at..at + c.stored as usize];
                    let dst = &mut out[ctx.out_len..ctx.out_len + len];
                    ctx.decomp
                        .decompress_part(c.codec, input, c.cluster, c.skip, dst, &mut ctx.whole)
                        .map_err(|m| Error::format(self.name, format!("compressed cluster: {m}")).offset(c.host))?;
                    ctx.out_len += len;
                }
            }
        }
        self.flush(ctx)
    }

    fn worker(&self, rx: &Mutex<Receiver<Block>>) {
        let mut ctx = WorkerCtx::default();
        loop {
            let next = lock(rx).recv();
            let Ok(mut b) = next else { return };
            if !self.stopped() {
                if let Err(e) = self.run_block(&mut b, &mut ctx) {
                    self.fail(e);
                }
            }
            self.pool.put(b.buf);
        }
    }

    /// Hashes each block's fresh bytes in file order, then passes it on to the workers.
    fn digest(&self, kind: DigestKind, rx: Receiver<Block>, tx: SyncSender<Block>) -> String {
        let mut h = Hasher::new(kind);
        for b in rx {
            h.update(&b.buf[b.fresh..b.len]);
            if let Err(back) = tx.send(b) {
                self.pool.put(back.0.buf);
            }
        }
        h.hex()
    }

    fn zero(&self, zeros: &[(u64, u64)]) {
        for &(virt, len) in zeros {
            if let Err(e) = self.target.zero(virt, len, &|| self.stopped()) {
                return self.fail(e);
            }
            self.tallies.skipped.fetch_add(len, Ordering::Relaxed);
            if self.stopped() {
                return;
            }
        }
    }

    /// Reads the whole file into blocks and sends them on; stops early once stopped. A block
    /// whose end cuts a compressed cluster hands its tail to the next block, copied before it
    /// is sent.
    fn read(&self, input: &mut Input, plan: &Plan, tx: SyncSender<Block>) -> Result<()> {
        let len = input.len();
        let mut cutter = Cutter::new(plan);
        let (mut start, mut fresh) = (0u64, 0u64);
        let stop = || self.stopped();
        let Some(mut buf) = self.pool.get(&stop) else { return Ok(()) };
        while fresh < len {
            let kept = (fresh - start) as usize;
            let want = BLOCK.min((len - fresh) as usize);
            let got = input.read(&mut buf[kept..kept + want], fresh, &stop)?;
            if got < want {
                return Err(Error::new(Kind::Internal, "the stream ended before its length"));
            }
            let end = fresh + want as u64;
            self.ctl.done.store(end, Ordering::Relaxed);
            let (ops, next) = cutter.cut(start, fresh, end);
            let mut next_buf = None;
            if end < len {
                let Some(mut b) = self.pool.get(&stop) else { return Ok(()) };
                let from = (next - start) as usize;
                let n = (end - next) as usize;
                b[..n].copy_from_slice(&buf[from..from + n]);
                next_buf = Some(b);
            }
            if tx.send(Block { fresh: kept, len: kept + want, buf, ops }).is_err() {
                return Ok(());
            }
            match next_buf {
                Some(b) => buf = b,
                None => break,
            }
            (start, fresh) = (next, end);
        }
        Ok(())
    }
}

/// Where a run writes and how.
pub struct Run<'a> {
    pub ctl: &'a Control,
    pub target: &'a dyn Target,
    /// The URL, for messages.
    pub name: &'a std::path::Path,
    pub plan: &'a Plan,
    pub digest: Option<DigestKind>,
    pub threads: usize,
    /// Zero what reads as zeros (an in-place target that may hold old data).
    pub zero_holes: bool,
    pub tallies: &'a Tallies,
    /// Set on any failure, and read by the caller's watchdog.
    pub abort: &'a AtomicBool,
}

/// Streams `input` into the target; returns the file's digest when asked for one.
pub fn run(r: &Run<'_>, input: &mut Input) -> Result<Option<String>> {
    let threads = r.threads.max(1);
    let engine = Engine {
        ctl: r.ctl,
        target: r.target,
        name: r.name,
        pool: Pool::new(threads + 3, r.plan.buffer_len(BLOCK)),
        tallies: r.tallies,
        abort: r.abort,
        error: Mutex::new(None),
    };
    let eng = &engine;
    let (work_tx, work_rx) = sync_channel::<Block>(threads);
    let work_rx = Mutex::new(work_rx);
    let digest = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(|| eng.worker(&work_rx))).collect();
        let zeroer = (r.zero_holes && !r.plan.zeros.is_empty()).then(|| s.spawn(|| eng.zero(&r.plan.zeros)));
        let (read_tx, digest) = match r.digest {
            Some(kind) => {
                let (tx, rx) = sync_channel::<Block>(2);
                (tx, Some(s.spawn(move || eng.digest(kind, rx, work_tx))))
            }
            None => (work_tx, None),
        };
        if let Err(e) = eng.read(input, r.plan, read_tx) {
            eng.fail(e);
        }
        let digest = digest.map(|d| d.join());
        for w in workers.into_iter().chain(zeroer) {
            if w.join().is_err() {
                eng.fail(Error::new(Kind::Internal, "a download worker panicked"));
            }
        }
        digest
    });
    if let Some(e) = lock(&engine.error).take() {
        return Err(e);
    }
    if r.ctl.cancel.load(Ordering::Relaxed) {
        return Err(Error::cancelled());
    }
    match digest {
        None => Ok(None),
        Some(Ok(hex)) => Ok(Some(hex)),
        Some(Err(_)) => Err(Error::new(Kind::Internal, "the digest thread panicked")),
    }
}
