//! Mapping a qcow2 image's virtual disk through its L1/L2 tables.
//!
//! Only the planner thread walks metadata, sequentially, so one cached L2 table per image is
//! enough; memory stays at one cluster per image whatever the disk size.

use std::path::{Path, PathBuf};

use super::{Descriptor, Header, Subcluster, OFFSET_MASK};
use crate::codec::Codec;
use crate::crypt::Key;
use crate::error::{Error, Result};
use crate::image::{map_backing, push_piece, HoleMap, ImageFile, Layer, Piece, ReadAt};

pub struct Qcow2Layer {
    index: usize,
    path: PathBuf,
    /// Where the L1 and L2 tables are read from.
    meta: Box<dyn ReadAt>,
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
    /// The qcow2 file's own holes (None: a file without any, such as a remote one).
    holes: Option<HoleMap>,
    /// LUKS-encrypted image: its data key once unlocked (`set_key`).
    encrypted: bool,
    key: Option<Key>,
}

/// How one cluster (or subcluster) of the image reads.
enum Status {
    Data(u64),
    Zero,
    Unallocated,
}

impl Qcow2Layer {
    pub fn open(index: usize, img: &ImageFile, header: Header, backing: Option<Box<dyn Layer>>) -> Result<Qcow2Layer> {
        let file =
            img.file.try_clone().map_err(|e| Error::source_io(&img.path, "cannot duplicate descriptor", None, &e))?;
        let holes = HoleMap::new(img)?;
        Qcow2Layer::open_with(index, &img.path, img.len, Box::new(file), Some(holes), header, backing)
    }

    /// `open` for a file read through `meta`, of `file_len` bytes, named `path`.
    pub fn open_with(
        index: usize,
        path: &Path,
        file_len: u64,
        mut meta: Box<dyn ReadAt>,
        holes: Option<HoleMap>,
        header: Header,
        backing: Option<Box<dyn Layer>>,
    ) -> Result<Qcow2Layer> {
        let path = path.to_path_buf();
        let mut raw = vec![0u8; (header.l1_size * 8) as usize];
        let n = meta
            .read_at(&mut raw, header.l1_offset)
            .map_err(|e| Error::source_io(&path, "cannot read L1 table", Some(header.l1_offset), &e))?;
        if n != raw.len() {
            return Err(Error::format(&path, "L1 table is truncated").offset(header.l1_offset));
        }
        let l1 = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        let extended = header.extended_l2();
        let encrypted = header.crypto.is_some();
        Ok(Qcow2Layer {
            index,
            meta,
            file_len,
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
            holes,
            path,
            encrypted,
            key: None,
        })
    }

    /// The data key of an encrypted image (see `crypt::luks1`).
    pub fn set_key(&mut self, key: Key) {
        self.key = Some(key);
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
            let n = self
                .meta
                .read_at(&mut raw, l2_offset)
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
        if !self.encrypted {
            match &mut self.holes {
                Some(h) => return h.pieces(self.index, host, len, true, out),
                None => {
                    push_piece(out, Piece::Data { file: self.index, host, len, pad: true });
                    return Ok(());
                }
            }
        }
        // Ciphertext: even a hole of the file decrypts to something (as in QEMU), and the
        // tweak is the host sector (qemu's crypt_physical_offset for LUKS).
        let Some(key) = &self.key else {
            return Err(Error::format(&self.path, "the image is encrypted and was not unlocked"));
        };
        if !host.is_multiple_of(512) || !len.is_multiple_of(512) {
            return Err(Error::format(
                &self.path,
                format!("encrypted data at host offset {host} is not sector aligned"),
            ));
        }
        push_piece(out, Piece::Encrypted { file: self.index, host, len, sector: host / 512, key: key.clone() });
        Ok(())
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
        let (host, zero) = match Descriptor::decode(entry, self.cluster_bits) {
            // A compressed cluster has no subclusters: its bitmap is reserved, zero (QEMU
            // calls a cluster with one set invalid).
            Descriptor::Compressed { .. } if bitmap != 0 => {
                return Err(Error::format(
                    &self.path,
                    format!("compressed cluster {cluster} has a non-zero subcluster bitmap"),
                ));
            }
            Descriptor::Compressed { host, stored } => return self.compressed(cluster, host, stored, within, n, out),
            Descriptor::Standard { host, zero } => (host, zero),
        };
        if host != 0 && !host.is_multiple_of(self.cluster_size) {
            return Err(Error::format(&self.path, format!("cluster {cluster} has an unaligned host offset {host}")));
        }
        if !self.extended {
            let status = if self.zero_flag && zero {
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
            let status = match Subcluster::of(bitmap, i) {
                Subcluster::Invalid => {
                    return Err(Error::format(
                        &self.path,
                        format!("cluster {cluster} subcluster {i} is both allocated and zero"),
                    ));
                }
                Subcluster::Allocated if host == 0 => {
                    return Err(Error::format(
                        &self.path,
                        format!("cluster {cluster} has allocated subclusters but no host offset"),
                    ));
                }
                Subcluster::Allocated => Status::Data(host + p),
                Subcluster::Zero => Status::Zero,
                Subcluster::Unallocated => Status::Unallocated,
            };
            self.emit(status, (cluster << self.cluster_bits) + p, m, out)?;
            p += m;
        }
        Ok(())
    }

    /// Emits bytes `within..within + n` of compressed cluster `cluster`.
    fn compressed(
        &self,
        cluster: u64,
        host: u64,
        stored: u64,
        within: u64,
        n: u64,
        out: &mut Vec<Piece>,
    ) -> Result<()> {
        if host == 0 || host >= self.file_len {
            return Err(Error::format(
                &self.path,
                format!("compressed cluster {cluster} at host offset {host} lies outside the file"),
            ));
        }
        if self.encrypted {
            return Err(Error::format(
                &self.path,
                format!("compressed cluster {cluster} in an encrypted image (QEMU never writes one)"),
            ));
        }
        let (file, codec, size) = (self.index, self.codec, self.cluster_size);
        push_piece(out, Piece::Compressed { file, host, stored, codec, cluster: size, skip: within, len: n });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::qcow2::testing::{image, put64};
    use crate::qcow2::{INCOMPAT_EXTL2, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
    use std::fs::File;

    /// An image written to a temporary file, removed on drop.
    struct TempImage(PathBuf);

    impl TempImage {
        fn new(tag: &str, bytes: &[u8]) -> TempImage {
            let p = std::env::temp_dir().join(format!("spcs-qcow2-reader-{tag}-{}.qcow2", std::process::id()));
            std::fs::write(&p, bytes).expect("write image");
            TempImage(p)
        }

        fn open(&self) -> ImageFile {
            let file = File::open(&self.0).expect("open image");
            let len = file.metadata().expect("stat").len();
            ImageFile { file, path: self.0.clone(), len, is_block: false, direct: None }
        }

        fn layer(&self, backing: Option<Box<dyn Layer>>) -> Qcow2Layer {
            let img = self.open();
            let header = Header::read(&img).expect("header");
            Qcow2Layer::open(0, &img, header, backing).expect("open layer")
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A backing layer whose virtual bytes are file 1's bytes at the same offsets.
    struct Identity(u64);

    impl Layer for Identity {
        fn size(&self) -> u64 {
            self.0
        }

        fn map(&mut self, offset: u64, len: u64, out: &mut Vec<Piece>) -> Result<()> {
            push_piece(out, Piece::Data { file: 1, host: offset, len, pad: false });
            Ok(())
        }
    }

    fn map(layer: &mut Qcow2Layer, offset: u64, len: u64) -> Result<Vec<Piece>> {
        let mut out = Vec::new();
        layer.map(offset, len, &mut out)?;
        assert_eq!(out.iter().map(Piece::len).sum::<u64>(), len, "pieces cover the range");
        Ok(out)
    }

    fn refused(layer: &mut Qcow2Layer, offset: u64, len: u64) -> String {
        let e = map(layer, offset, len).expect_err("should be refused");
        assert_eq!(e.kind, Kind::Format, "{e}");
        e.message
    }

    const C: u64 = 65536;

    /// 64 KiB clusters, 4 of virtual disk: header, L1, refcount table, L2 at cluster 3, data
    /// at 4, compressed data in 5. L2 entries are given; `host` 4 is filled with 0x5a.
    fn standard(version: u32, l2: [u64; 4]) -> Vec<u8> {
        let mut b = image(version, 16, 4 * C, 0, 6);
        put64(&mut b, C as usize, (3 * C) | OFLAG_COPIED);
        for (i, e) in l2.into_iter().enumerate() {
            put64(&mut b, (3 * C) as usize + 8 * i, e);
        }
        b[(4 * C) as usize..(5 * C) as usize].fill(0x5a);
        b
    }

    #[test]
    fn standard_l2_entries_map_to_pieces() {
        // Compressed data 100 bytes into cluster 5, one sector more: 1024 - 100 bytes stored.
        let compressed = OFLAG_COMPRESSED | 1 << 54 | (5 * C + 100);
        let t = TempImage::new("standard", &standard(3, [(4 * C) | OFLAG_COPIED, OFLAG_ZERO, 0, compressed]));
        let mut l = t.layer(None);
        assert_eq!(l.size(), 4 * C);
        let whole = Piece::Compressed {
            file: 0,
            host: 5 * C + 100,
            stored: 924,
            codec: Codec::Zlib,
            cluster: C,
            skip: 0,
            len: C,
        };
        assert_eq!(
            map(&mut l, 0, 4 * C).expect("map"),
            vec![
                Piece::Data { file: 0, host: 4 * C, len: C, pad: true },
                // The zero cluster and the unallocated one without a backing file.
                Piece::Zero { len: 2 * C },
                whole,
            ]
        );
        // Inside clusters: the offset within the cluster carries over.
        assert_eq!(
            map(&mut l, 100, 200).expect("map"),
            vec![Piece::Data { file: 0, host: 4 * C + 100, len: 200, pad: true }]
        );
        let part = Piece::Compressed {
            file: 0,
            host: 5 * C + 100,
            stored: 924,
            codec: Codec::Zlib,
            cluster: C,
            skip: 512,
            len: 1024,
        };
        assert_eq!(map(&mut l, 3 * C + 512, 1024).expect("map"), vec![part]);
    }

    #[test]
    fn unallocated_clusters_read_from_the_backing_layer() {
        let t = TempImage::new("backing", &standard(3, [0, OFLAG_ZERO, 4 * C, 0]));
        // The backing layer is shorter than the image: past its end reads as zeros.
        let mut l = t.layer(Some(Box::new(Identity(3 * C + 4096))));
        assert_eq!(
            map(&mut l, 0, 4 * C).expect("map"),
            vec![
                Piece::Data { file: 1, host: 0, len: C, pad: false },
                // A zero cluster hides the backing file.
                Piece::Zero { len: C },
                Piece::Data { file: 0, host: 4 * C, len: C, pad: true },
                Piece::Data { file: 1, host: 3 * C, len: 4096, pad: false },
                Piece::Zero { len: C - 4096 },
            ]
        );
    }

    #[test]
    fn zero_flag_counts_only_in_version_3() {
        let entries = [(4 * C) | OFLAG_ZERO, 0, 0, 0];
        let v3 = TempImage::new("zero-v3", &standard(3, entries));
        assert_eq!(map(&mut v3.layer(None), 0, C).expect("map"), vec![Piece::Zero { len: C }]);
        // Version 2 has no zero flag: bit 0 is reserved, the cluster is data.
        let v2 = TempImage::new("zero-v2", &standard(2, entries));
        assert_eq!(
            map(&mut v2.layer(None), 0, C).expect("map"),
            vec![Piece::Data { file: 0, host: 4 * C, len: C, pad: true }]
        );
    }

    #[test]
    fn bad_l2_entries_are_refused() {
        let t = TempImage::new("bad", &standard(3, [4 * C + 512, OFLAG_COMPRESSED | (6 * C), OFLAG_COMPRESSED, 9 * C]));
        let mut l = t.layer(None);
        assert_eq!(refused(&mut l, 0, C), "cluster 0 has an unaligned host offset 262656");
        assert_eq!(refused(&mut l, C, C), "compressed cluster 1 at host offset 393216 lies outside the file");
        assert_eq!(refused(&mut l, 2 * C, C), "compressed cluster 2 at host offset 0 lies outside the file");
        assert_eq!(
            refused(&mut l, 3 * C, C),
            "data cluster at host offset 589824 lies past the end of the file (393216 bytes)"
        );
    }

    #[test]
    fn a_compressed_cluster_with_a_subcluster_bitmap_is_refused() {
        const C: u64 = 16384;
        let mut b = image(3, 14, C, INCOMPAT_EXTL2, 5);
        put64(&mut b, C as usize, (3 * C) | OFLAG_COPIED);
        let l2 = (3 * C) as usize;
        put64(&mut b, l2, OFLAG_COMPRESSED | (4 * C));
        put64(&mut b, l2 + 8, 1);
        let t = TempImage::new("compressed-bitmap", &b);
        let mut l = t.layer(None);
        assert_eq!(refused(&mut l, 0, C), "compressed cluster 0 has a non-zero subcluster bitmap");
    }

    #[test]
    fn extended_l2_subclusters_map_to_pieces() {
        // 16 KiB clusters (512-byte subclusters), 3 of virtual disk; 16-byte L2 entries.
        const C: u64 = 16384;
        let mut b = image(3, 14, 3 * C, INCOMPAT_EXTL2, 5);
        put64(&mut b, C as usize, (3 * C) | OFLAG_COPIED);
        let l2 = (3 * C) as usize;
        // Cluster 0 at host cluster 4: subclusters 0-1 allocated, 2 zero, the rest unallocated.
        put64(&mut b, l2, (4 * C) | OFLAG_COPIED);
        put64(&mut b, l2 + 8, 0b11 | 1 << (32 + 2));
        // Cluster 1: an allocated subcluster but no host cluster.
        put64(&mut b, l2 + 16, 0);
        put64(&mut b, l2 + 24, 1 << 7);
        // Cluster 2: subcluster 5 both allocated and zero.
        put64(&mut b, l2 + 32, 4 * C);
        put64(&mut b, l2 + 40, 1 << 5 | 1 << (32 + 5));
        b[(4 * C) as usize..].fill(0x5a);
        let t = TempImage::new("extended", &b);
        let mut l = t.layer(Some(Box::new(Identity(3 * C))));
        assert_eq!(
            map(&mut l, 0, C).expect("map"),
            vec![
                Piece::Data { file: 0, host: 4 * C, len: 1024, pad: true },
                Piece::Zero { len: 512 },
                Piece::Data { file: 1, host: 1536, len: C - 1536, pad: false },
            ]
        );
        // Part of a subcluster, and across the allocated/zero boundary.
        assert_eq!(
            map(&mut l, 600, 100).expect("map"),
            vec![Piece::Data { file: 0, host: 4 * C + 600, len: 100, pad: true }]
        );
        assert_eq!(
            map(&mut l, 1000, 600).expect("map"),
            vec![
                Piece::Data { file: 0, host: 4 * C + 1000, len: 24, pad: true },
                Piece::Zero { len: 512 },
                Piece::Data { file: 1, host: 1536, len: 64, pad: false },
            ]
        );
        // Subclusters before the allocated one of cluster 1 still map to the backing file.
        assert_eq!(
            map(&mut l, C, 7 * 512).expect("map"),
            vec![Piece::Data { file: 1, host: C, len: 7 * 512, pad: false }]
        );
        assert_eq!(refused(&mut l, C, C), "cluster 1 has allocated subclusters but no host offset");
        assert_eq!(refused(&mut l, 2 * C, C), "cluster 2 subcluster 5 is both allocated and zero");
    }
}
