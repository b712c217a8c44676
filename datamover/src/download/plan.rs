//! What each byte of a downloaded file is, in file order: the virtual disk's map (a qcow2
//! layer's pieces, or the identity for raw) turned around by host offset, and the cutting of
//! the stream into blocks whose every compressed cluster lies whole in one block.

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::image::{Layer, Piece};
use crate::sys::ALIGN;

/// File bytes `host..host + len` are virtual bytes `virt..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain {
    pub host: u64,
    pub len: u64,
    pub virt: u64,
}

/// A compressed cluster stored in `host..host + stored`, whose bytes `skip..skip + len` are
/// virtual bytes `virt..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    pub host: u64,
    pub stored: u64,
    pub codec: Codec,
    pub cluster: u64,
    pub skip: u64,
    pub len: u64,
    pub virt: u64,
}

impl Compressed {
    fn end(&self) -> u64 {
        self.host + self.stored
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub virtual_size: u64,
    /// By host offset.
    pub plain: Vec<Plain>,
    /// By host offset.
    pub compressed: Vec<Compressed>,
    /// Virtual ranges that read as zeros.
    pub zeros: Vec<(u64, u64)>,
    /// The largest compressed cluster, which bounds how far a block reaches back.
    pub max_cluster: u64,
}

/// Virtual bytes mapped per call of the layer (bounds the pieces held at once).
const MAP_STEP: u64 = 256 << 20;

fn push_zero(zeros: &mut Vec<(u64, u64)>, virt: u64, len: u64) {
    match zeros.last_mut() {
        Some((o, l)) if *o + *l == virt => *l += len,
        _ if len > 0 => zeros.push((virt, len)),
        _ => {}
    }
}

impl Plan {
    /// A raw file: the virtual disk is the file.
    pub fn raw(len: u64) -> Plan {
        let plain = if len > 0 { vec![Plain { host: 0, len, virt: 0 }] } else { Vec::new() };
        Plan { virtual_size: len, plain, ..Plan::default() }
    }

    /// The map of `layer` (an image whose file has `file_len` bytes), by host offset. Data
    /// past the end of the file reads as zeros (qcow2's rule for a short last cluster), and
    /// a compressed cluster is read to its stored end or one cluster and a sector, whichever
    /// is less (QEMU stores only what is shorter than a cluster).
    pub fn of_layer(layer: &mut dyn Layer, file_len: u64) -> Result<Plan> {
        let size = layer.size();
        let mut plan = Plan { virtual_size: size, ..Plan::default() };
        let mut pieces = Vec::new();
        let mut virt = 0u64;
        while virt < size {
            let step = MAP_STEP.min(size - virt);
            pieces.clear();
            layer.map(virt, step, &mut pieces)?;
            for p in &pieces {
                plan.add(p, virt, file_len)?;
                virt += p.len();
            }
        }
        plan.plain.sort_by_key(|p| p.host);
        plan.compressed.sort_by_key(|c| c.host);
        Ok(plan)
    }

    fn add(&mut self, piece: &Piece, virt: u64, file_len: u64) -> Result<()> {
        match *piece {
            Piece::Zero { len } => push_zero(&mut self.zeros, virt, len),
            Piece::Data { host, len, .. } => {
                let inside = len.min(file_len.saturating_sub(host));
                match self.plain.last_mut() {
                    Some(p) if p.host + p.len == host && p.virt + p.len == virt => p.len += inside,
                    _ if inside > 0 => self.plain.push(Plain { host, len: inside, virt }),
                    _ => {}
                }
                push_zero(&mut self.zeros, virt + inside, len - inside);
            }
            Piece::Compressed { host, stored, codec, cluster, skip, len, .. } => {
                let stored = stored.min(cluster + 512).min(file_len.saturating_sub(host));
                self.compressed.push(Compressed { host, stored, codec, cluster, skip, len, virt });
                self.max_cluster = self.max_cluster.max(cluster);
            }
            Piece::Encrypted { .. } => return Err(Error::invalid("encrypted images cannot be downloaded")),
        }
        Ok(())
    }

    /// Bytes a block buffer needs: `block` new bytes, after what it carries over from the
    /// block before (at most one compressed cluster and a sector, from an aligned start).
    pub fn buffer_len(&self, block: usize) -> usize {
        let carry = if self.compressed.is_empty() { 0 } else { self.max_cluster as usize + 512 + ALIGN };
        (block + carry).next_multiple_of(ALIGN)
    }
}

/// What a block's worker does with its buffer, at offsets in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Plain { at: usize, len: usize, virt: u64 },
    Compressed { at: usize, c: Compressed },
}

/// Cuts the stream into blocks: block `[start, end)` of the file, whose bytes from `fresh`
/// on were not in the block before. A plain run is written by the blocks its fresh bytes are
/// in; a compressed cluster by the block its end is in, which starts early enough to hold it.
pub struct Cutter<'p> {
    plan: &'p Plan,
    next_plain: usize,
    /// Plain runs begun but not finished by the last block.
    active: Vec<usize>,
    next_compressed: usize,
    /// Compressed clusters begun but not finished by the last block.
    pending: Vec<usize>,
}

impl<'p> Cutter<'p> {
    pub fn new(plan: &'p Plan) -> Cutter<'p> {
        Cutter { plan, next_plain: 0, active: Vec::new(), next_compressed: 0, pending: Vec::new() }
    }

    /// The ops of block `[start, end)` with fresh bytes from `fresh`, and where the next
    /// block must start (before `end` when a compressed cluster straddles it).
    pub fn cut(&mut self, start: u64, fresh: u64, end: u64) -> (Vec<Op>, u64) {
        let plan = self.plan;
        let mut ops = Vec::new();
        while self.next_plain < plan.plain.len() && plan.plain[self.next_plain].host < end {
            self.active.push(self.next_plain);
            self.next_plain += 1;
        }
        for &i in &self.active {
            let p = plan.plain[i];
            let (lo, hi) = (p.host.max(fresh), (p.host + p.len).min(end));
            if lo < hi {
                ops.push(Op::Plain {
                    at: (lo - start) as usize,
                    len: (hi - lo) as usize,
                    virt: p.virt + (lo - p.host),
                });
            }
        }
        self.active.retain(|&i| plan.plain[i].host + plan.plain[i].len > end);
        while self.next_compressed < plan.compressed.len() && plan.compressed[self.next_compressed].host < end {
            self.pending.push(self.next_compressed);
            self.next_compressed += 1;
        }
        let mut next = end;
        self.pending.retain(|&i| {
            let c = plan.compressed[i];
            if c.end() <= end {
                ops.push(Op::Compressed { at: (c.host - start) as usize, c });
                false
            } else {
                next = next.min(c.host / ALIGN as u64 * ALIGN as u64);
                true
            }
        });
        (ops, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(host: u64, stored: u64, virt: u64) -> Compressed {
        Compressed { host, stored, codec: Codec::Zlib, cluster: 65536, skip: 0, len: 65536, virt }
    }

    #[test]
    fn plain_runs_are_split_by_fresh_bytes_and_compressed_clusters_kept_whole() {
        let plan = Plan {
            virtual_size: 1 << 30,
            plain: vec![Plain { host: 4096, len: 10_000, virt: 0 }, Plain { host: 20_000, len: 100, virt: 1 << 20 }],
            compressed: vec![comp(15_000, 3000, 2 << 20), comp(16_500, 3000, 3 << 20)],
            zeros: Vec::new(),
            max_cluster: 65536,
        };
        let mut c = Cutter::new(&plan);
        let (ops, next) = c.cut(0, 0, 16_384);
        assert_eq!(ops, vec![Op::Plain { at: 4096, len: 10_000, virt: 0 }]);
        // Both clusters straddle 16384: the next block starts at the first one's page.
        assert_eq!(next, 12_288);
        let (ops, next) = c.cut(next, 16_384, 32_768);
        assert_eq!(
            ops,
            vec![
                Op::Plain { at: 20_000 - 12_288, len: 100, virt: 1 << 20 },
                Op::Compressed { at: 15_000 - 12_288, c: plan.compressed[0] },
                Op::Compressed { at: 16_500 - 12_288, c: plan.compressed[1] },
            ]
        );
        assert_eq!(next, 32_768);
        assert!(plan.buffer_len(16_384) >= 16_384 + 19_500 - 12_288);
    }

    #[test]
    fn a_run_longer_than_blocks_is_written_piece_by_piece() {
        let plan = Plan::raw(5000);
        let mut c = Cutter::new(&plan);
        assert_eq!(c.cut(0, 0, 2048), (vec![Op::Plain { at: 0, len: 2048, virt: 0 }], 2048));
        assert_eq!(c.cut(2048, 2048, 4096), (vec![Op::Plain { at: 0, len: 2048, virt: 2048 }], 4096));
        assert_eq!(c.cut(4096, 4096, 5000), (vec![Op::Plain { at: 0, len: 904, virt: 4096 }], 5000));
    }
}
