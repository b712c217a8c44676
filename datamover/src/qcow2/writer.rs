//! Streaming qcow2 (version 3) writer.
//!
//! Each chunk is packed here: zero clusters stay unallocated, the rest is written as runs of
//! whole clusters or, with compression, compressed one by one and packed back to back (a
//! cluster that does not shrink is stored plain). Host space is handed out append-only under
//! a short lock, so workers write their clusters in parallel and out of order while the file
//! stays compact. L2 tables live in memory only until every cluster they map has been written
//! (a completion watermark), then go to disk; the L1 table, refcount table and blocks and the
//! header are written by `finish`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{compressed_entry, l1_entries_for, MAGIC, OFLAG_COPIED};
use crate::codec::Codec;
use crate::crypt::luks1::Created;
use crate::crypt::Key;
use crate::error::{Error, Kind, Result};
use crate::image::{Scratch, Tally, Target};
use crate::sys::{self, AlignedBuf, Direct};

/// 16-bit refcounts (refcount_order 4), as `qemu-img create` writes.
const REFCOUNT_ORDER: u32 = 4;
const HEADER_LENGTH: usize = 112;
/// How far ahead of its allocated clusters the file's length is set while data is written.
const EXTEND_STEP: u64 = 64 << 20;

/// Tracks which virtual ranges are finished; `next` is the end of the finished prefix.
#[derive(Default)]
pub struct Watermark {
    next: u64,
    pending: BTreeMap<u64, u64>,
}

impl Watermark {
    pub fn complete(&mut self, offset: u64, len: u64) -> u64 {
        self.pending.insert(offset, offset + len);
        while let Some(end) = self.pending.remove(&self.next) {
            self.next = end;
        }
        self.next
    }
}

struct State {
    /// First free host cluster (the file's allocated end, in clusters).
    next_cluster: u64,
    /// Next free byte of the compressed stream, if it still ends inside the last cluster.
    cfree: Option<u64>,
    refcounts: Vec<u16>,
    l1: Vec<u64>,
    l2: HashMap<u64, Box<[u64]>>,
    done: Watermark,
    meta_bytes: u64,
    /// The file's length, set ahead of the clusters handed out (see `extend_for`).
    extended: u64,
}

pub struct Qcow2Writer {
    file: File,
    /// O_DIRECT for whole-cluster data writes, when enabled and supported (see `sys::Direct`).
    direct: Option<Direct>,
    path: PathBuf,
    cluster_bits: u32,
    cluster_size: u64,
    size: u64,
    l2_entries: u64,
    compression: Option<Codec>,
    state: Mutex<State>,
    /// Buffered bytes written since writeback was last started.
    unflushed: AtomicU64,
    /// LUKS encryption: the data key and (offset, length) of the LUKS header clusters.
    crypt: Option<(Key, u64, u64)>,
}

impl State {
    fn bump(&mut self, cluster: u64, by: u16) {
        let i = cluster as usize;
        if self.refcounts.len() <= i {
            self.refcounts.resize(i + 1, 0);
        }
        self.refcounts[i] = self.refcounts[i].saturating_add(by);
    }

    fn take_clusters(&mut self, count: u64) -> u64 {
        let first = self.next_cluster;
        for c in first..first + count {
            self.bump(c, 1);
        }
        self.next_cluster += count;
        first
    }
}

impl Qcow2Writer {
    pub fn new(
        file: File,
        direct: Option<Direct>,
        path: &Path,
        size: u64,
        cluster_size: u64,
        compression: Option<Codec>,
        encryption: Option<Created>,
    ) -> Result<Self> {
        if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
            return Err(Error::invalid(format!(
                "cluster size {cluster_size} must be a power of two from 512 to 2097152"
            )));
        }
        if size > super::MAX_VIRTUAL_SIZE {
            return Err(Error::invalid(format!("virtual size {size} is too large for qcow2")));
        }
        // QEMU sees qcow2 sizes in whole sectors (rounding down), so round up: the tail reads as zeros.
        let size = size.next_multiple_of(512);
        let cluster_bits = cluster_size.trailing_zeros();
        // Sub-page clusters would mix O_DIRECT and buffered writes within one page.
        let direct = direct.filter(|_| cluster_size >= sys::ALIGN as u64);
        let l1_size = l1_entries_for(size, cluster_bits, false);
        if l1_size * 8 > super::MAX_L1_BYTES {
            return Err(Error::invalid(format!(
                "virtual size {size} needs too large an L1 table with {cluster_size}-byte clusters"
            )));
        }
        let mut st = State {
            next_cluster: 0,
            cfree: None,
            refcounts: Vec::new(),
            l1: vec![0; l1_size as usize],
            l2: HashMap::new(),
            done: Watermark::default(),
            meta_bytes: 0,
            extended: 0,
        };
        // Cluster 0: header; then the L1 table; then the LUKS header, if encrypted.
        st.take_clusters(1 + (l1_size * 8).div_ceil(cluster_size));
        let crypt = match encryption {
            None => None,
            Some(c) => {
                if compression.is_some() {
                    return Err(Error::invalid("compression cannot be used with encryption (qemu refuses it too)"));
                }
                let len = c.area.len() as u64;
                let at = st.take_clusters(len.div_ceil(cluster_size)) << cluster_bits;
                sys::pwrite_all(&file, &c.area, at)
                    .map_err(|e| Error::target_io(path, "cannot write the LUKS header", Some(at), &e))?;
                st.meta_bytes += len;
                Some((c.key, at, len))
            }
        };
        Ok(Qcow2Writer {
            file,
            direct,
            path: path.to_path_buf(),
            cluster_bits,
            cluster_size,
            size,
            l2_entries: cluster_size / 8,
            compression,
            state: Mutex::new(st),
            unflushed: AtomicU64::new(0),
            crypt,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is already a failed copy; keep going to report it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_l2(&self, st: &mut State, vcluster: u64, entry: u64) {
        let l1i = vcluster / self.l2_entries;
        let t = st.l2.entry(l1i).or_insert_with(|| vec![0u64; self.l2_entries as usize].into_boxed_slice());
        t[(vcluster % self.l2_entries) as usize] = entry;
    }

    /// Starts writeback every few MiB of buffered writes, so dirty pages stay few (no
    /// throttling stalls) and the final fsync has little left to do.
    fn wrote_buffered(&self, n: usize) {
        let pending = self.unflushed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if pending >= 8 << 20 {
            self.unflushed.store(0, Ordering::Relaxed);
            sys::start_writeback(&self.file, 0, 0);
        }
    }

    /// Grows the file ahead of the clusters handed out, in steps. Workers write clusters out
    /// of order, and a write past the end of the file makes the filesystem zero the gap under
    /// an exclusive lock, waiting for every write in flight (XFS does): with the length set
    /// ahead, parallel writes stay parallel. `finish_image` sets the exact length.
    fn extend_for(&self, st: &mut State) -> Result<()> {
        let end = st.next_cluster << self.cluster_bits;
        if end <= st.extended {
            return Ok(());
        }
        let to = end + EXTEND_STEP;
        self.file.set_len(to).map_err(|e| self.io_err("cannot extend file", to, &e))?;
        st.extended = to;
        Ok(())
    }

    fn io_err(&self, what: &str, offset: u64, e: &std::io::Error) -> Error {
        Error::target_io(&self.path, what, Some(offset), e)
    }

    /// Writes `data` (whole clusters) for virtual clusters starting at `vcluster`.
    fn write_clusters(&self, vcluster: u64, data: &[u8]) -> Result<()> {
        let host = self.alloc_clusters(vcluster, data.len() as u64 / self.cluster_size)?;
        self.write_at(host, data)
    }

    /// Hands out `count` host clusters for virtual clusters from `vcluster`; their host offset.
    fn alloc_clusters(&self, vcluster: u64, count: u64) -> Result<u64> {
        let mut st = self.lock();
        // The compressed stream cannot grow past clusters allocated after it.
        st.cfree = None;
        let first = st.take_clusters(count);
        for i in 0..count {
            let h = (first + i) << self.cluster_bits;
            self.set_l2(&mut st, vcluster + i, h | OFLAG_COPIED);
        }
        self.extend_for(&mut st)?;
        Ok(first << self.cluster_bits)
    }

    /// Writes whole clusters at host offset `host`.
    fn write_at(&self, host: u64, data: &[u8]) -> Result<()> {
        // Runs are whole clusters of at least ALIGN bytes at cluster-aligned offsets: the
        // policy writes them direct entirely or not at all.
        let direct = match &self.direct {
            Some(d) => d.write_prefix(data, host).map_err(|e| self.io_err("write failed", host, &e))?,
            None => 0,
        };
        if direct < data.len() {
            let (rest, at) = (&data[direct..], host + direct as u64);
            sys::pwrite_all(&self.file, rest, at).map_err(|e| self.io_err("write failed", at, &e))?;
            self.wrote_buffered(rest.len());
        }
        Ok(())
    }

    /// Writes compressed clusters packed back to back. `items` are (virtual cluster, length)
    /// of consecutive slices of `data`.
    fn write_compressed(&self, items: &[(u64, usize)], data: &[u8]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let start = {
            let mut st = self.lock();
            let total = data.len() as u64;
            let start = match st.cfree {
                Some(c) => c,
                None => st.next_cluster << self.cluster_bits,
            };
            let end_cluster = (start + total).div_ceil(self.cluster_size);
            let first_new = st.next_cluster;
            for c in first_new..end_cluster {
                st.bump(c, 0);
            }
            st.next_cluster = st.next_cluster.max(end_cluster);
            let mut at = start;
            for &(vc, len) in items {
                let len = len as u64;
                // Each compressed cluster counts once in every host cluster its sectors touch.
                let (c0, c1) = ((at & !511) >> self.cluster_bits, ((at + len - 1) | 511) >> self.cluster_bits);
                for c in c0..=c1 {
                    st.bump(c, 1);
                }
                self.set_l2(&mut st, vc, compressed_entry(at, len, self.cluster_bits));
                at += len;
            }
            // The stream may continue in the same cluster only while nothing is allocated after it.
            st.cfree = if at.is_multiple_of(self.cluster_size) { None } else { Some(at) };
            start
        };
        sys::pwrite_all(&self.file, data, start).map_err(|e| self.io_err("write failed", start, &e))?;
        self.wrote_buffered(data.len());
        Ok(())
    }

    /// Compressed clusters are padded to this length so that no host cluster can be shared by
    /// more compressed clusters than a 16-bit refcount counts (trailing bytes are ignored).
    fn min_compressed_len(&self) -> usize {
        (self.cluster_size >> 15).max(1) as usize
    }

    /// Writes the non-zero clusters of a chunk as runs of plain clusters; zero clusters stay
    /// unallocated.
    fn write_plain(&self, first: u64, buf: &[u8], len: usize) -> Result<Tally> {
        let cs = self.cluster_size as usize;
        self.data_runs(buf, len, |i, j| self.write_clusters(first + i as u64, &buf[i * cs..j * cs]))
    }

    /// Calls `write(i, j)` for each run `i..j` of non-zero clusters of a chunk, and tallies
    /// them as written and the zero clusters (up to `len`) as skipped.
    fn data_runs(&self, buf: &[u8], len: usize, mut write: impl FnMut(usize, usize) -> Result<()>) -> Result<Tally> {
        let cs = self.cluster_size as usize;
        let n = buf.len() / cs;
        let mut tally = Tally::default();
        let mut i = 0;
        while i < n {
            if sys::is_zero(&buf[i * cs..(i + 1) * cs]) {
                tally.skipped += (((i + 1) * cs).min(len) - i * cs) as u64;
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < n && !sys::is_zero(&buf[j * cs..(j + 1) * cs]) {
                j += 1;
            }
            write(i, j)?;
            tally.written += ((j - i) * cs) as u64;
            i = j;
        }
        Ok(tally)
    }

    /// Encrypts the non-zero clusters of a chunk and writes them as runs (the tweak of each
    /// sector is its host offset / 512, as qemu does for LUKS); zero clusters stay unallocated
    /// and read as zeros without decryption. The ciphertext goes to the worker's aligned
    /// buffer: `buf` stays plaintext for the digest.
    fn write_encrypted(&self, key: &Key, first: u64, buf: &[u8], len: usize, scratch: &mut Scratch) -> Result<Tally> {
        let cs = self.cluster_size as usize;
        if scratch.sealed.as_ref().is_none_or(|b| b.len() < buf.len()) {
            scratch.sealed = Some(AlignedBuf::new(buf.len()));
        }
        let sealed = scratch.sealed.as_mut().expect("just made");
        self.data_runs(buf, len, |i, j| {
            let host = self.alloc_clusters(first + i as u64, (j - i) as u64)?;
            let out = &mut sealed[..(j - i) * cs];
            key.encrypt_to(&buf[i * cs..j * cs], out, host / 512);
            self.write_at(host, out)
        })
    }

    /// Compresses the non-zero clusters of a chunk and writes them packed back to back; a
    /// cluster that does not shrink is written plain, zero clusters stay unallocated.
    fn write_packed(&self, codec: Codec, first: u64, buf: &[u8], len: usize, scratch: &mut Scratch) -> Result<Tally> {
        let cs = self.cluster_size as usize;
        let n = buf.len() / cs;
        let mut tally = Tally::default();
        scratch.out.resize(buf.len() + cs, 0);
        let min_len = self.min_compressed_len();
        let mut items = Vec::with_capacity(n);
        let mut at = 0usize;
        for i in 0..n {
            let c = &buf[i * cs..(i + 1) * cs];
            if sys::is_zero(c) {
                tally.skipped += (((i + 1) * cs).min(len) - i * cs) as u64;
                continue;
            }
            let got = scratch
                .comp
                .compress(codec, c, &mut scratch.out[at..at + cs - 1])
                .map_err(|m| Error::new(Kind::Internal, m))?;
            match got {
                Some(m) => {
                    let m2 = m.max(min_len);
                    scratch.out[at + m..at + m2].fill(0);
                    items.push((first + i as u64, m2));
                    at += m2;
                }
                None => {
                    self.write_clusters(first + i as u64, c)?;
                    tally.written += cs as u64;
                }
            }
        }
        self.write_compressed(&items, &scratch.out[..at])?;
        tally.written += at as u64;
        Ok(tally)
    }

    /// Marks a virtual range as finished; L2 tables wholly below the finished prefix are written.
    pub fn complete(&self, offset: u64, len: u64) -> Result<()> {
        let mut st = self.lock();
        let mark = st.done.complete(offset, len);
        let per_table = self.l2_entries << self.cluster_bits;
        let ready: Vec<u64> = st.l2.keys().copied().filter(|&i| (i + 1) * per_table <= mark).collect();
        for i in ready {
            self.flush_l2(&mut st, i)?;
        }
        Ok(())
    }

    fn flush_l2(&self, st: &mut State, l1i: u64) -> Result<()> {
        let Some(table) = st.l2.remove(&l1i) else { return Ok(()) };
        st.cfree = None;
        let host = st.take_clusters(1) << self.cluster_bits;
        let mut buf = Vec::with_capacity(self.cluster_size as usize);
        for e in table.iter() {
            buf.extend_from_slice(&e.to_be_bytes());
        }
        sys::pwrite_all(&self.file, &buf, host).map_err(|e| self.io_err("cannot write L2 table", host, &e))?;
        st.meta_bytes += buf.len() as u64;
        st.l1[l1i as usize] = host | OFLAG_COPIED;
        Ok(())
    }

    /// Writes the remaining L2 tables, the L1 table, the refcount structures and the header,
    /// then flushes. Returns the metadata bytes written.
    fn finish_image(&self) -> Result<u64> {
        let mut st = self.lock();
        let mut rest: Vec<u64> = st.l2.keys().copied().collect();
        rest.sort_unstable();
        for i in rest {
            self.flush_l2(&mut st, i)?;
        }
        let cs = self.cluster_size;

        // L1 table at cluster 1.
        let l1_offset = cs;
        if !st.l1.is_empty() {
            let mut buf = Vec::with_capacity(st.l1.len() * 8);
            for e in &st.l1 {
                buf.extend_from_slice(&e.to_be_bytes());
            }
            sys::pwrite_all(&self.file, &buf, l1_offset)
                .map_err(|e| self.io_err("cannot write L1 table", l1_offset, &e))?;
            st.meta_bytes += buf.len() as u64;
        }

        // Refcount table and blocks go at the end and must also count themselves.
        let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
        let base = st.next_cluster;
        let (mut blocks, mut table) = (0u64, 1u64);
        loop {
            let total = base + table + blocks;
            let nb = total.div_ceil(per_block);
            let nt = (nb * 8).div_ceil(cs).max(1);
            if nb == blocks && nt == table {
                break;
            }
            blocks = nb.max(blocks);
            table = nt.max(table);
        }
        let table_first = st.take_clusters(table);
        let blocks_first = st.take_clusters(blocks);
        let total_clusters = st.next_cluster;
        st.refcounts.resize(total_clusters as usize, 0);

        let mut tbuf = vec![0u8; (table * cs) as usize];
        let mut bbuf = vec![0u8; cs as usize];
        for b in 0..blocks {
            bbuf.fill(0);
            let lo = b * per_block;
            let hi = ((b + 1) * per_block).min(total_clusters);
            for c in lo..hi {
                let at = ((c - lo) * 2) as usize;
                bbuf[at..at + 2].copy_from_slice(&st.refcounts[c as usize].to_be_bytes());
            }
            let host = (blocks_first + b) << self.cluster_bits;
            sys::pwrite_all(&self.file, &bbuf, host)
                .map_err(|e| self.io_err("cannot write refcount block", host, &e))?;
            tbuf[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&host.to_be_bytes());
        }
        let table_offset = table_first << self.cluster_bits;
        sys::pwrite_all(&self.file, &tbuf, table_offset)
            .map_err(|e| self.io_err("cannot write refcount table", table_offset, &e))?;
        st.meta_bytes += tbuf.len() as u64 + blocks * cs;

        let mut h = vec![0u8; cs.min(4096) as usize];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&(st.l1.len() as u32).to_be_bytes());
        h[40..48].copy_from_slice(&(if st.l1.is_empty() { 0 } else { l1_offset }).to_be_bytes());
        h[48..56].copy_from_slice(&table_offset.to_be_bytes());
        h[56..60].copy_from_slice(&(table as u32).to_be_bytes());
        let zstd = self.compression == Some(Codec::Zstd);
        let incompat: u64 = if zstd { super::INCOMPAT_COMPRESSION } else { 0 };
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        h[100..104].copy_from_slice(&(HEADER_LENGTH as u32).to_be_bytes());
        h[104] = u8::from(zstd);
        let mut ext = HEADER_LENGTH;
        if let Some((_, offset, length)) = self.crypt {
            h[32..36].copy_from_slice(&super::CRYPT_LUKS.to_be_bytes());
            h[ext..ext + 4].copy_from_slice(&super::EXT_CRYPTO.to_be_bytes());
            h[ext + 4..ext + 8].copy_from_slice(&16u32.to_be_bytes());
            h[ext + 8..ext + 16].copy_from_slice(&offset.to_be_bytes());
            h[ext + 16..ext + 24].copy_from_slice(&length.to_be_bytes());
            ext += 24;
        }
        // The next 8 bytes stay zero: the end-of-extensions marker.
        debug_assert!(ext + 8 <= h.len());
        // The file must span every allocated cluster, even if the last one was only partly written.
        self.file
            .set_len(total_clusters << self.cluster_bits)
            .map_err(|e| self.io_err("cannot set file length", total_clusters << self.cluster_bits, &e))?;
        sys::pwrite_all(&self.file, &h, 0).map_err(|e| self.io_err("cannot write header", 0, &e))?;
        st.meta_bytes += h.len() as u64;
        self.file.sync_all().map_err(|e| self.io_err("fsync failed", 0, &e))?;
        Ok(st.meta_bytes)
    }
}

impl Target for Qcow2Writer {
    /// Writes the non-zero clusters of a chunk, compressed when asked; zero clusters stay
    /// unallocated. The chunk's last cluster is padded with zeros.
    fn write(&self, offset: u64, buf: &mut [u8], len: usize, scratch: &mut Scratch) -> Result<Tally> {
        let cs = self.cluster_size as usize;
        let padded = len.next_multiple_of(cs);
        buf[len..padded].fill(0);
        let first = offset / cs as u64;
        let tally = match (&self.crypt, self.compression) {
            (Some((key, _, _)), _) => self.write_encrypted(key, first, &buf[..padded], len, scratch)?,
            (None, None) => self.write_plain(first, &buf[..padded], len)?,
            (None, Some(codec)) => self.write_packed(codec, first, &buf[..padded], len, scratch)?,
        };
        self.complete(offset, len as u64)?;
        Ok(tally)
    }

    /// Zero ranges stay unallocated: they only need to count as finished.
    fn zero(&self, offset: u64, len: u64, _: &dyn Fn() -> bool) -> Result<()> {
        self.complete(offset, len)
    }

    fn finish(&self) -> Result<u64> {
        self.finish_image()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_advances_only_over_a_finished_prefix() {
        let mut w = Watermark::default();
        assert_eq!(w.complete(10, 5), 0);
        assert_eq!(w.complete(0, 10), 15);
        assert_eq!(w.complete(20, 5), 15);
        assert_eq!(w.complete(15, 5), 25);
    }
}
