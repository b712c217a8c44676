//! Mapping a qcow2 image's virtual disk through its L1/L2 tables.
//!
//! Only the planner thread walks metadata, sequentially, so one cached L2 table per image is
//! enough; memory stays at one cluster per image whatever the disk size.

use std::fs::File;
use std::path::PathBuf;

use super::{Header, OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::source::{map_backing, push_piece, HoleMap, ImageFile, Layer, Piece};
use crate::sys;

pub struct Qcow2Layer {
    index: usize,
    path: PathBuf,
    file: File,
    file_len: u64,
    cluster_bits: u32,
    cluster_size: u64,
    /// Clusters mapped by one L2 table.
    l2_entries: u64,
    extended: bool,
    zero_flag: bool,
    codec: Codec,
    size: u64,
    l1: Vec<u64>,
    l2_index: Option<usize>,
    l2: Vec<u64>,
    backing: Option<Box<dyn Layer>>,
    holes: HoleMap,
}

/// How one cluster (or subcluster) of the image reads.
enum Status {
    Data(u64),
    Zero,
    Unallocated,
}

impl Qcow2Layer {
    pub fn open(index: usize, img: &ImageFile, header: Header, backing: Option<Box<dyn Layer>>) -> Result<Qcow2Layer> {
        let path = img.path.clone();
        let mut raw = vec![0u8; (header.l1_size * 8) as usize];
        let n = sys::pread_full(&img.file, &mut raw, header.l1_offset)
            .map_err(|e| Error::source_io(&path, "cannot read L1 table", Some(header.l1_offset), &e))?;
        if n != raw.len() {
            return Err(Error::format(&path, "L1 table is truncated").offset(header.l1_offset));
        }
        let l1 = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        let file =
            img.file.try_clone().map_err(|e| Error::source_io(&path, "cannot duplicate descriptor", None, &e))?;
        let extended = header.extended_l2();
        Ok(Qcow2Layer {
            index,
            file,
            file_len: img.len,
            cluster_bits: header.cluster_bits,
            cluster_size: header.cluster_size(),
            l2_entries: header.cluster_size() / if extended { 16 } else { 8 },
            extended,
            zero_flag: header.version >= 3,
            codec: header.compression,
            size: header.size,
            l1,
            l2_index: None,
            l2: Vec::new(),
            backing,
            holes: HoleMap::new(img)?,
            path,
        })
    }

    /// The L2 entry (and subcluster bitmap) of virtual cluster `cluster`.
    fn entry(&mut self, cluster: u64) -> Result<(u64, u64)> {
        let l1i = (cluster / self.l2_entries) as usize;
        let l2i = (cluster % self.l2_entries) as usize;
        let Some(&l1e) = self.l1.get(l1i) else { return Ok((0, 0)) };
        let l2_offset = l1e & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok((0, 0));
        }
        if self.l2_index != Some(l1i) {
            if !l2_offset.is_multiple_of(self.cluster_size) {
                return Err(Error::format(
                    &self.path,
                    format!("L2 table offset {l2_offset} is not cluster aligned (L1 entry {l1i})"),
                ));
            }
            if l2_offset.saturating_add(self.cluster_size) > self.file_len {
                return Err(Error::format(
                    &self.path,
                    format!("L2 table at offset {l2_offset} lies past the end of the file (L1 entry {l1i})"),
                ));
            }
            let mut raw = vec![0u8; self.cluster_size as usize];
            let n = sys::pread_full(&self.file, &mut raw, l2_offset)
                .map_err(|e| Error::source_io(&self.path, "cannot read L2 table", Some(l2_offset), &e))?;
            if n != raw.len() {
                return Err(Error::format(&self.path, "L2 table is truncated").offset(l2_offset));
            }
            self.l2.clear();
            self.l2.extend(raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))));
            self.l2_index = Some(l1i);
        }
        Ok(if self.extended { (self.l2[l2i * 2], self.l2[l2i * 2 + 1]) } else { (self.l2[l2i], 0) })
    }

    /// Emits a data run, split where the qcow2 file itself has holes (preallocated metadata).
    fn data(&mut self, host: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
        if host >= self.file_len {
            return Err(Error::format(
                &self.path,
                format!("data cluster at host offset {host} lies past the end of the file ({} bytes)", self.file_len),
            ));
        }
        self.holes.pieces(self.index, host, len, true, out)
    }

    fn emit(&mut self, status: Status, virt: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
        match status {
            Status::Data(host) => self.data(host, len, out),
            Status::Zero => {
                push_piece(out, Piece::Zero { len });
                Ok(())
            }
            Status::Unallocated => map_backing(self.backing.as_mut(), virt, len, out),
        }
    }

    fn map_cluster(&mut self, pos: u64, n: u64, out: &mut Vec<Piece>) -> Result<()> {
        let cluster = pos >> self.cluster_bits;
        let within = pos & (self.cluster_size - 1);
        let (entry, bitmap) = self.entry(cluster)?;
        if entry & OFLAG_COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = ((entry & !OFLAG_COMPRESSED & !super::OFLAG_COPIED) >> x) + 1;
            let stored = sectors * 512 - (host & 511);
            if host == 0 || host >= self.file_len {
                return Err(Error::format(
                    &self.path,
                    format!("compressed cluster {cluster} at host offset {host} lies outside the file"),
                ));
            }
            push_piece(
                out,
                Piece::Compressed {
                    file: self.index,
                    host,
                    stored,
                    codec: self.codec,
                    cluster: self.cluster_size,
                    skip: within,
                    len: n,
                },
            );
            return Ok(());
        }
        let host = entry & OFFSET_MASK;
        if host != 0 && !host.is_multiple_of(self.cluster_size) {
            return Err(Error::format(&self.path, format!("cluster {cluster} has an unaligned host offset {host}")));
        }
        if !self.extended {
            let status = if self.zero_flag && entry & OFLAG_ZERO != 0 {
                Status::Zero
            } else if host == 0 {
                Status::Unallocated
            } else {
                Status::Data(host + within)
            };
            return self.emit(status, pos, n, out);
        }
        // Extended L2: 32 subclusters, each allocated, zero, or unallocated.
        let sc = self.cluster_size / 32;
        let (mut p, end) = (within, within + n);
        while p < end {
            let i = p / sc;
            let m = ((i + 1) * sc).min(end) - p;
            let alloc = bitmap >> i & 1 != 0;
            let zero = bitmap >> (32 + i) & 1 != 0;
            let status = match (alloc, zero) {
                (true, true) => {
                    return Err(Error::format(
                        &self.path,
                        format!("cluster {cluster} subcluster {i} is both allocated and zero"),
                    ));
                }
                (true, false) if host == 0 => {
                    return Err(Error::format(
                        &self.path,
                        format!("cluster {cluster} has allocated subclusters but no host offset"),
                    ));
                }
                (true, false) => Status::Data(host + p),
                (false, true) => Status::Zero,
                (false, false) => Status::Unallocated,
            };
            self.emit(status, (cluster << self.cluster_bits) + p, m, out)?;
            p += m;
        }
        Ok(())
    }
}

impl Layer for Qcow2Layer {
    fn size(&self) -> u64 {
        self.size
    }

    fn map(&mut self, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = (self.cluster_size - (pos & (self.cluster_size - 1))).min(end - pos);
            self.map_cluster(pos, n, out)?;
            pos += n;
        }
        Ok(())
    }
}
