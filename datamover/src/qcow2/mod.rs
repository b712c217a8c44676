//! QCOW2 on-disk format (qemu docs/interop/qcow2.txt): header parsing, L2 entry decoding and
//! shared constants. `reader` maps images through their tables, `writer` writes new ones.

pub mod reader;
pub mod writer;

use std::io;
use std::path::Path;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::image::{Description, ImageFile};
use crate::sys;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Host offset bits of L1 and standard L2 entries (bits 9..55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = (1 << 5) - 1;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Full disk encryption header: where the LUKS header lives (qemu docs/interop/qcow2.txt).
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// `crypt_method` of a LUKS-encrypted image (1 is the legacy AES-CBC, not supported).
pub const CRYPT_LUKS: u32 = 2;

/// QEMU refuses L1 tables above 32 MiB; so do we (it bounds memory on hostile input).
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest virtual size accepted (QEMU's limit is 2^63 - 512; this keeps arithmetic far from overflow).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 60;

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u64,
    pub l1_offset: u64,
    pub incompatible: u64,
    pub compression: Codec,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// LUKS encryption: (offset, length) of the clusters holding the LUKS header. Data
    /// clusters are encrypted with XTS, the tweak sector being the host offset / 512.
    pub crypto: Option<(u64, u64)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Number of L1 entries needed to map `size` bytes.
pub fn l1_entries_for(size: u64, cluster_bits: u32, extended_l2: bool) -> u64 {
    let l2_bits = cluster_bits - if extended_l2 { 4 } else { 3 };
    let per_l1 = 1u64 << (cluster_bits + l2_bits);
    size.div_ceil(per_l1)
}

/// Bit where the sector count of a compressed cluster descriptor starts (the spec's `x`).
fn compressed_shift(cluster_bits: u32) -> u32 {
    62 - (cluster_bits - 8)
}

/// What the first 64 bits of an L2 entry (the cluster descriptor) say about a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Compressed data starting at byte `host` of the file and spanning at most `stored`
    /// bytes (to the end of its last 512-byte sector).
    Compressed { host: u64, stored: u64 },
    /// A standard cluster at `host` (0: unallocated) with the "reads as zeros" bit, which only
    /// means that in version 3 images without extended L2 entries (the caller knows which).
    Standard { host: u64, zero: bool },
}

impl Descriptor {
    /// Decodes an L2 entry of an image with `cluster_bits`; the COPIED bit and reserved bits
    /// are ignored.
    pub fn decode(entry: u64, cluster_bits: u32) -> Descriptor {
        if entry & OFLAG_COMPRESSED == 0 {
            return Descriptor::Standard { host: entry & OFFSET_MASK, zero: entry & OFLAG_ZERO != 0 };
        }
        let x = compressed_shift(cluster_bits);
        let host = entry & ((1u64 << x) - 1);
        // The count is of sectors beyond the one holding `host`.
        let sectors = ((entry & !OFLAG_COMPRESSED & !OFLAG_COPIED) >> x) + 1;
        Descriptor::Compressed { host, stored: sectors * 512 - (host & 511) }
    }
}

/// The L2 entry of a compressed cluster whose `len` stored bytes start at `host`.
pub fn compressed_entry(host: u64, len: u64, cluster_bits: u32) -> u64 {
    let additional = ((host + len - 1) >> 9) - (host >> 9);
    OFLAG_COMPRESSED | additional << compressed_shift(cluster_bits) | host
}

/// How one of the 32 subclusters of an extended L2 entry reads, from its allocation bitmap
/// (bit `i`: allocated, bit `32 + i`: reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcluster {
    Allocated,
    Zero,
    Unallocated,
    /// Both bits set, which the spec forbids.
    Invalid,
}

impl Subcluster {
    pub fn of(bitmap: u64, i: u64) -> Subcluster {
        match (bitmap >> i & 1 != 0, bitmap >> (32 + i) & 1 != 0) {
            (true, true) => Subcluster::Invalid,
            (true, false) => Subcluster::Allocated,
            (false, true) => Subcluster::Zero,
            (false, false) => Subcluster::Unallocated,
        }
    }
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    pub fn describe(&self) -> Description {
        Description {
            cluster_size: Some(self.cluster_size()),
            compression: Some(self.compression),
            backing_file: self.backing_file.clone(),
            backing_format: self.backing_format.clone(),
            compat: Some(if self.version == 2 { "0.10" } else { "1.1" }.to_string()),
            extended_l2: self.extended_l2(),
            dirty: self.incompatible & INCOMPAT_DIRTY != 0,
            corrupt: self.incompatible & INCOMPAT_CORRUPT != 0,
            encryption: None,
        }
    }

    /// Parses and validates the header of `img`, checking every table it points to lies
    /// inside the file.
    pub fn read(img: &ImageFile) -> Result<Header> {
        Header::parse(&img.path, img.len, |buf, offset| sys::pread_full(&img.file, buf, offset))
    }

    /// `read` for a file of `file_len` bytes named `path`, read through `read_at` (fills a
    /// buffer from an offset like `sys::pread_full`, returning the bytes read).
    pub fn parse(
        path: &Path,
        file_len: u64,
        mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> Result<Header> {
        let bad = |m: String| Error::format(path, m);
        let mut fixed = [0u8; 112];
        let n = read_at(&mut fixed, 0).map_err(|e| Error::source_io(path, "read failed", Some(0), &e))?;
        if n < 72 {
            return Err(bad(format!("file is too short ({n} bytes) to hold a qcow2 header")));
        }
        if fixed[..4] != MAGIC {
            return Err(bad("not a qcow2 image (bad magic)".into()));
        }
        let version = be32(&fixed, 4);
        if version != 2 && version != 3 {
            return Err(bad(format!("unsupported qcow2 version {version}")));
        }
        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(format!("invalid cluster bits {cluster_bits} (expected 9..=21)")));
        }
        let cluster_size = 1u64 << cluster_bits;
        let (mut incompatible, refcount_order, header_length) = if version == 3 {
            if n < 104 {
                return Err(bad("file is too short for a qcow2 version 3 header".into()));
            }
            (be64(&fixed, 72), be32(&fixed, 96), be32(&fixed, 100) as u64)
        } else {
            (0, 4, 72)
        };
        if version == 3 && (header_length < 104 || header_length > cluster_size || !header_length.is_multiple_of(8)) {
            return Err(bad(format!("invalid header length {header_length}")));
        }
        if refcount_order > 6 {
            return Err(bad(format!("invalid refcount order {refcount_order}")));
        }
        let crypt_method = be32(&fixed, 32);
        match crypt_method {
            0 | CRYPT_LUKS => {}
            1 => return Err(bad("qcow2 images with the legacy AES encryption are not supported (only LUKS)".into())),
            m => return Err(bad(format!("unknown qcow2 encryption method {m}"))),
        }
        if incompatible & !INCOMPAT_KNOWN != 0 {
            return Err(bad(format!("unknown incompatible features 0x{:x}", incompatible & !INCOMPAT_KNOWN)));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(bad("the image keeps its data in an external data file, which is not supported".into()));
        }
        let ctype = if header_length > 104 && n > 104 { fixed[104] } else { 0 };
        let compression = match ctype {
            0 => Codec::Zlib,
            1 => Codec::Zstd,
            t => return Err(bad(format!("unknown compression type {t}"))),
        };
        if ctype != 0 && incompatible & INCOMPAT_COMPRESSION == 0 {
            return Err(bad("compression type set without its incompatible feature bit".into()));
        }
        // The bit says "read the compression type field", which a 104-byte header lacks
        // (QEMU refuses such an image too).
        if incompatible & INCOMPAT_COMPRESSION != 0 && header_length <= 104 {
            return Err(bad(format!(
                "the compression type feature bit is set but the {header_length}-byte header has no compression type field"
            )));
        }
        if incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
            return Err(bad("extended L2 entries need clusters of at least 16 KiB".into()));
        }
        if version == 2 {
            incompatible = 0;
        }
        let extended = incompatible & INCOMPAT_EXTL2 != 0;

        // QEMU addresses qcow2 images in whole 512-byte sectors and ignores a partial last one.
        let size = be64(&fixed, 24) & !511;
        if size > MAX_VIRTUAL_SIZE {
            return Err(bad(format!("virtual size {size} is too large")));
        }
        let l1_size = be32(&fixed, 36) as u64;
        let l1_offset = be64(&fixed, 40);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(bad(format!("L1 table of {l1_size} entries is too large")));
        }
        if l1_size < l1_entries_for(size, cluster_bits, extended) {
            return Err(bad(format!("L1 table of {l1_size} entries is too small for virtual size {size}")));
        }
        if l1_size > 0 && (!l1_offset.is_multiple_of(cluster_size) || l1_offset == 0) {
            return Err(bad(format!("L1 table offset {l1_offset} is invalid")));
        }
        if l1_offset.saturating_add(l1_size * 8) > file_len {
            return Err(bad(format!(
                "L1 table at offset {l1_offset} lies past the end of the file ({file_len} bytes)"
            )));
        }
        let rt_offset = be64(&fixed, 48);
        let rt_clusters = be32(&fixed, 56) as u64;
        if rt_clusters == 0 || rt_offset == 0 || !rt_offset.is_multiple_of(cluster_size) {
            return Err(bad(format!("refcount table offset {rt_offset} / {rt_clusters} clusters is invalid")));
        }
        if rt_offset.saturating_add(rt_clusters.saturating_mul(cluster_size)) > file_len {
            return Err(bad(format!(
                "refcount table at offset {rt_offset} lies past the end of the file ({file_len} bytes)"
            )));
        }

        // The rest of the first cluster: header extensions and the backing file name.
        let first_len = cluster_size.min(file_len) as usize;
        let mut first = vec![0u8; first_len];
        let got = read_at(&mut first, 0).map_err(|e| Error::source_io(path, "read failed", Some(0), &e))?;
        first.truncate(got);

        let bf_offset = be64(&fixed, 8);
        let bf_size = be32(&fixed, 16) as u64;
        let backing_file = if bf_offset != 0 && bf_size != 0 {
            if bf_size > 1023 || bf_offset.saturating_add(bf_size) > first.len() as u64 {
                return Err(bad(format!("backing file name at offset {bf_offset} ({bf_size} bytes) is invalid")));
            }
            let raw = &first[bf_offset as usize..(bf_offset + bf_size) as usize];
            Some(String::from_utf8(raw.to_vec()).map_err(|_| bad("backing file name is not valid UTF-8".into()))?)
        } else {
            None
        };

        let mut backing_format = None;
        let mut crypto = None;
        let ext_end = if bf_offset != 0 { (bf_offset as usize).min(first.len()) } else { first.len() };
        let mut at = header_length as usize;
        while at + 8 <= ext_end {
            let etype = be32(&first, at);
            let elen = be32(&first, at + 4) as usize;
            if etype == EXT_END {
                break;
            }
            let data = at + 8;
            if data + elen > ext_end {
                return Err(bad(format!("header extension 0x{etype:x} at offset {at} overflows the header")));
            }
            match etype {
                EXT_BACKING_FORMAT => {
                    let f = String::from_utf8(first[data..data + elen].to_vec())
                        .map_err(|_| bad("backing format name is not valid UTF-8".into()))?;
                    backing_format = Some(f);
                }
                EXT_DATA_FILE => {
                    return Err(bad("the image names an external data file, which is not supported".into()));
                }
                EXT_CRYPTO => {
                    if elen != 16 {
                        return Err(bad(format!("encryption header extension has {elen} bytes (expected 16)")));
                    }
                    let (offset, length) = (be64(&first, data), be64(&first, data + 8));
                    if offset == 0 || !offset.is_multiple_of(cluster_size) || length == 0 {
                        return Err(bad(format!("LUKS header at offset {offset} ({length} bytes) is invalid")));
                    }
                    if offset.saturating_add(length) > file_len {
                        return Err(bad(format!(
                            "LUKS header at offset {offset} ({length} bytes) lies past the end of the file ({file_len} bytes)"
                        )));
                    }
                    crypto = Some((offset, length));
                }
                _ => {}
            }
            at = data + elen.div_ceil(8) * 8;
        }

        match (crypt_method, crypto) {
            (CRYPT_LUKS, None) => {
                return Err(bad("LUKS-encrypted image has no encryption header extension".into()));
            }
            (0, Some(_)) => return Err(bad("encryption header extension in an image that is not encrypted".into())),
            _ => {}
        }
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_offset,
            incompatible,
            compression,
            backing_file,
            backing_format,
            crypto,
        })
    }
}

/// Images written byte by byte for the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// A valid image of `clusters` (at least 3) clusters of `1 << bits` bytes: the header in
    /// cluster 0 (version 3: 104 bytes, 16-bit refcounts), an all-zero L1 table sized for
    /// `size` in cluster 1, a one-cluster refcount table in cluster 2, the rest zeros.
    pub fn image(version: u32, bits: u32, size: u64, incompatible: u64, clusters: u64) -> Vec<u8> {
        let c = 1u64 << bits;
        let mut b = vec![0u8; (clusters * c) as usize];
        b[0..4].copy_from_slice(&MAGIC);
        put32(&mut b, 4, version);
        put32(&mut b, 20, bits);
        put64(&mut b, 24, size);
        put32(&mut b, 36, l1_entries_for(size, bits, incompatible & INCOMPAT_EXTL2 != 0) as u32);
        put64(&mut b, 40, c);
        put64(&mut b, 48, 2 * c);
        put32(&mut b, 56, 1);
        if version == 3 {
            put64(&mut b, 72, incompatible);
            put32(&mut b, 96, 4);
            put32(&mut b, 100, 104);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{image, put32, put64};
    use super::*;
    use crate::error::Kind;

    const KIB: u64 = 1024;

    fn parse(bytes: &[u8]) -> Result<Header> {
        Header::parse(Path::new("t.qcow2"), bytes.len() as u64, |buf, offset| {
            let from = (offset as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - from);
            buf[..n].copy_from_slice(&bytes[from..from + n]);
            Ok(n)
        })
    }

    fn parsed(bytes: &[u8]) -> Header {
        parse(bytes).unwrap_or_else(|e| panic!("refused: {e}"))
    }

    /// The message of the format error the header gets.
    fn refused(bytes: &[u8]) -> String {
        let e = parse(bytes).expect_err("the header should be refused");
        assert_eq!(e.kind, Kind::Format, "{e}");
        assert_eq!(e.path.as_deref(), Some(Path::new("t.qcow2")));
        e.message
    }

    #[test]
    fn version_3_header_fields() {
        let mut b = image(3, 16, 10 * 1024 * KIB + 1000, 0, 3);
        let h = parsed(&b);
        assert_eq!((h.version, h.cluster_bits, h.cluster_size()), (3, 16, 65536));
        // A partial last sector is ignored, as QEMU does.
        assert_eq!(h.size, 10 * 1024 * KIB + 512);
        assert_eq!((h.l1_size, h.l1_offset, h.incompatible), (1, 65536, 0));
        assert_eq!(h.compression, Codec::Zlib);
        assert_eq!((h.backing_file.as_deref(), h.backing_format.as_deref()), (None, None));
        assert!(!h.extended_l2());
        let d = h.describe();
        assert_eq!(d.cluster_size, Some(65536));
        assert_eq!(d.compression, Some(Codec::Zlib));
        assert_eq!(d.compat.as_deref(), Some("1.1"));
        assert!(!d.extended_l2 && !d.dirty && !d.corrupt);

        // A 112-byte header holds the compression type at byte 104.
        put32(&mut b, 100, 112);
        put64(&mut b, 72, INCOMPAT_COMPRESSION);
        b[104] = 1;
        let h = parsed(&b);
        assert_eq!(h.compression, Codec::Zstd);
        assert_eq!(h.incompatible, INCOMPAT_COMPRESSION);
        assert_eq!(h.describe().compression, Some(Codec::Zstd));
    }

    #[test]
    fn version_2_header_has_no_feature_fields_and_extensions_start_at_72() {
        // 512-byte clusters: one L1 entry maps 64 clusters (32 KiB), so 1 MiB needs 32.
        let mut b = image(2, 9, 1024 * KIB, 0, 3);
        put32(&mut b, 72, EXT_BACKING_FORMAT);
        put32(&mut b, 76, 3);
        b[80..83].copy_from_slice(b"raw");
        put64(&mut b, 8, 200);
        put32(&mut b, 16, 8);
        b[200..208].copy_from_slice(b"base.raw");
        let h = parsed(&b);
        assert_eq!((h.version, h.cluster_size(), h.size, h.l1_size), (2, 512, 1024 * KIB, 32));
        assert_eq!(h.incompatible, 0);
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        assert_eq!(h.backing_file.as_deref(), Some("base.raw"));
        let d = h.describe();
        assert_eq!(d.compat.as_deref(), Some("0.10"));
        assert_eq!(d.backing_file.as_deref(), Some("base.raw"));
    }

    #[test]
    fn header_extensions_are_walked_to_the_end_marker() {
        let mut b = image(3, 16, 1024 * KIB, 0, 3);
        // Feature name table (one 48-byte entry): skipped.
        put32(&mut b, 104, 0x6803_f857);
        put32(&mut b, 108, 48);
        b[112..160].fill(0xee);
        // Backing format "qcow2": 5 bytes, padded to 8.
        put32(&mut b, 160, EXT_BACKING_FORMAT);
        put32(&mut b, 164, 5);
        b[168..176].copy_from_slice(b"qcow2\xff\xff\xff");
        // An unknown, empty extension, then the end marker at 184.
        put32(&mut b, 176, 0x1234_5678);
        // Whatever follows the end marker is not an extension.
        put32(&mut b, 192, EXT_DATA_FILE);
        put32(&mut b, 196, 4);
        put64(&mut b, 8, 512);
        put32(&mut b, 16, 10);
        b[512..522].copy_from_slice(b"base.qcow2");
        let h = parsed(&b);
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(h.backing_file.as_deref(), Some("base.qcow2"));

        // Without the end marker the walk ends where the backing file name starts.
        put32(&mut b, 184, 0x1234_5679);
        put32(&mut b, 188, 512 - 192);
        assert_eq!(parsed(&b).backing_format.as_deref(), Some("qcow2"));
        put32(&mut b, 188, 512 - 192 + 1);
        assert_eq!(refused(&b), "header extension 0x12345679 at offset 184 overflows the header");
    }

    #[test]
    fn bad_extensions_are_refused() {
        let base = image(3, 16, 1024 * KIB, 0, 3);
        let mut b = base.clone();
        put32(&mut b, 104, EXT_DATA_FILE);
        put32(&mut b, 108, 8);
        b[112..120].copy_from_slice(b"data.raw");
        assert_eq!(refused(&b), "the image names an external data file, which is not supported");

        let mut b = base.clone();
        put32(&mut b, 104, EXT_BACKING_FORMAT);
        put32(&mut b, 108, 2);
        b[112..114].copy_from_slice(&[0xc3, 0x28]);
        assert_eq!(refused(&b), "backing format name is not valid UTF-8");

        // The extension area ends where the backing file name starts (here at 120).
        let mut b = base;
        put32(&mut b, 104, EXT_BACKING_FORMAT);
        put32(&mut b, 108, 9);
        put64(&mut b, 8, 120);
        put32(&mut b, 16, 4);
        b[120..124].copy_from_slice(b"base");
        assert_eq!(refused(&b), "header extension 0xe2792aca at offset 104 overflows the header");
        put32(&mut b, 108, 8);
        assert_eq!(parsed(&b).backing_file.as_deref(), Some("base"));
    }

    #[test]
    fn bad_magic_version_and_short_files_are_refused() {
        let good = image(3, 16, 1024 * KIB, 0, 3);
        let mut b = good.clone();
        b[3] = 0xfa;
        assert_eq!(refused(&b), "not a qcow2 image (bad magic)");
        for version in [0, 1, 4, 0x0300_0000] {
            let mut b = good.clone();
            put32(&mut b, 4, version);
            assert_eq!(refused(&b), format!("unsupported qcow2 version {version}"));
        }
        assert_eq!(refused(&good[..71]), "file is too short (71 bytes) to hold a qcow2 header");
        assert_eq!(refused(&good[..103]), "file is too short for a qcow2 version 3 header");
        // 72 bytes are a whole version 2 header, but its tables lie past the end.
        let v2 = image(2, 16, 1024 * KIB, 0, 3);
        assert_eq!(refused(&v2[..72]), "L1 table at offset 65536 lies past the end of the file (72 bytes)");
    }

    #[test]
    fn feature_bits() {
        let with = |bits: u32, incompatible: u64| image(3, bits, 1024 * KIB, incompatible, 3);
        for (bit, shown) in [(1u64 << 5, "0x20"), (1 << 63, "0x8000000000000000"), (0x7fff_ffe0, "0x7fffffe0")] {
            // Known bits set beside an unknown one do not hide it.
            let msg = refused(&with(16, bit | INCOMPAT_DIRTY));
            assert_eq!(msg, format!("unknown incompatible features {shown}"));
        }
        assert_eq!(
            refused(&with(16, INCOMPAT_DATA_FILE)),
            "the image keeps its data in an external data file, which is not supported"
        );
        assert_eq!(
            refused(&with(16, INCOMPAT_COMPRESSION)),
            "the compression type feature bit is set but the 104-byte header has no compression type field"
        );
        let h = parsed(&with(16, INCOMPAT_DIRTY | INCOMPAT_CORRUPT));
        let d = h.describe();
        assert!(d.dirty && d.corrupt);

        // Extended L2 entries: 16 KiB clusters at least, and 16-byte L2 entries (an L1 entry
        // of 16 KiB clusters maps 1024 clusters, 16 MiB, instead of 2048).
        assert_eq!(refused(&with(13, INCOMPAT_EXTL2)), "extended L2 entries need clusters of at least 16 KiB");
        let mut b = image(3, 14, 32 * 1024 * KIB, INCOMPAT_EXTL2, 3);
        let h = parsed(&b);
        assert!(h.extended_l2() && h.describe().extended_l2);
        assert_eq!(h.l1_size, 2);
        put32(&mut b, 36, 1);
        assert_eq!(refused(&b), "L1 table of 1 entries is too small for virtual size 33554432");

        // The compression type and its feature bit go together.
        let mut b = with(16, 0);
        put32(&mut b, 100, 112);
        b[104] = 1;
        assert_eq!(refused(&b), "compression type set without its incompatible feature bit");
        b[104] = 2;
        assert_eq!(refused(&b), "unknown compression type 2");
    }

    #[test]
    fn fixed_fields_are_checked() {
        let good = image(3, 16, 1024 * KIB, 0, 3);
        for bits in [0, 8, 22, 64] {
            let mut b = good.clone();
            put32(&mut b, 20, bits);
            assert_eq!(refused(&b), format!("invalid cluster bits {bits} (expected 9..=21)"));
        }
        for len in [0, 100, 108, 65544] {
            let mut b = good.clone();
            put32(&mut b, 100, len);
            assert_eq!(refused(&b), format!("invalid header length {len}"));
        }
        let mut b = good.clone();
        put32(&mut b, 96, 7);
        assert_eq!(refused(&b), "invalid refcount order 7");
        let mut b = good.clone();
        put32(&mut b, 32, 1);
        assert_eq!(refused(&b), "qcow2 images with the legacy AES encryption are not supported (only LUKS)");
        put32(&mut b, 32, 2);
        assert_eq!(refused(&b), "LUKS-encrypted image has no encryption header extension");
        let mut b = good.clone();
        put64(&mut b, 24, (1 << 60) + 512);
        assert_eq!(refused(&b), "virtual size 1152921504606847488 is too large");
    }

    #[test]
    fn table_offsets_are_checked_against_the_file() {
        // 512-byte clusters, three of them: L1 at 512, refcount table at 1024.
        let good = image(3, 9, 64 * KIB, 0, 3);
        assert_eq!(parsed(&good).l1_size, 2);
        let with = |at: usize, v: u64, wide: bool| {
            let mut b = good.clone();
            if wide {
                put64(&mut b, at, v)
            } else {
                put32(&mut b, at, v as u32)
            }
            b
        };
        assert_eq!(refused(&with(40, 520, true)), "L1 table offset 520 is invalid");
        assert_eq!(refused(&with(40, 0, true)), "L1 table offset 0 is invalid");
        assert_eq!(refused(&with(36, 1, false)), "L1 table of 1 entries is too small for virtual size 65536");
        // 32 MiB of L1 table is QEMU's limit: allowed (but past this file's end), one more is not.
        assert_eq!(refused(&with(36, (4 << 20) + 1, false)), "L1 table of 4194305 entries is too large");
        assert_eq!(
            refused(&with(36, 4 << 20, false)),
            "L1 table at offset 512 lies past the end of the file (1536 bytes)"
        );
        assert_eq!(refused(&with(36, 129, false)), "L1 table at offset 512 lies past the end of the file (1536 bytes)");
        assert_eq!(refused(&with(56, 0, false)), "refcount table offset 1024 / 0 clusters is invalid");
        assert_eq!(refused(&with(48, 1000, true)), "refcount table offset 1000 / 1 clusters is invalid");
        assert_eq!(
            refused(&with(56, 2, false)),
            "refcount table at offset 1024 lies past the end of the file (1536 bytes)"
        );
        // An empty disk needs no L1 table, wherever it points.
        let mut b = image(3, 9, 0, 0, 3);
        put64(&mut b, 40, 0);
        assert_eq!(parsed(&b).l1_size, 0);
    }

    #[test]
    fn luks_encryption_header_extension() {
        // 4 KiB clusters, 8 of them: the LUKS header area in clusters 3..5.
        let base = image(3, 12, 1024 * KIB, 0, 8);
        let with = |method: u32, ext: Option<(u32, u64, u64)>| {
            let mut b = base.clone();
            put32(&mut b, 32, method);
            if let Some((len, offset, length)) = ext {
                put32(&mut b, 104, EXT_CRYPTO);
                put32(&mut b, 108, len);
                put64(&mut b, 112, offset);
                put64(&mut b, 120, length);
            }
            b
        };
        let h = parsed(&with(CRYPT_LUKS, Some((16, 3 * 4096, 8192))));
        assert_eq!(h.crypto, Some((3 * 4096, 8192)));
        assert_eq!(parsed(&base).crypto, None);
        assert_eq!(refused(&with(CRYPT_LUKS, None)), "LUKS-encrypted image has no encryption header extension");
        assert_eq!(
            refused(&with(0, Some((16, 3 * 4096, 8192)))),
            "encryption header extension in an image that is not encrypted"
        );
        assert_eq!(refused(&with(3, None)), "unknown qcow2 encryption method 3");
        assert_eq!(
            refused(&with(CRYPT_LUKS, Some((8, 3 * 4096, 8192)))),
            "encryption header extension has 8 bytes (expected 16)"
        );
        assert_eq!(
            refused(&with(CRYPT_LUKS, Some((16, 3 * 4096 + 512, 8192)))),
            "LUKS header at offset 12800 (8192 bytes) is invalid"
        );
        assert_eq!(
            refused(&with(CRYPT_LUKS, Some((16, 3 * 4096, 0)))),
            "LUKS header at offset 12288 (0 bytes) is invalid"
        );
        assert_eq!(
            refused(&with(CRYPT_LUKS, Some((16, 6 * 4096, 3 * 4096)))),
            "LUKS header at offset 24576 (12288 bytes) lies past the end of the file (32768 bytes)"
        );
        assert_eq!(
            refused(&with(CRYPT_LUKS, Some((16, 6 * 4096, u64::MAX)))),
            "LUKS header at offset 24576 (18446744073709551615 bytes) lies past the end of the file (32768 bytes)"
        );
    }

    #[test]
    fn backing_file_name_bounds() {
        // 4 KiB clusters: the name must end inside the first one and be at most 1023 bytes.
        let good = image(3, 12, 1024 * KIB, 0, 3);
        let named = |offset: u64, len: u32, byte: u8| {
            let mut b = good.clone();
            put64(&mut b, 8, offset);
            put32(&mut b, 16, len);
            b[offset as usize..offset as usize + len as usize].fill(byte);
            b
        };
        let name = parsed(&named(1024, 1023, b'n')).backing_file.expect("a backing file");
        assert_eq!(name, "n".repeat(1023));
        assert_eq!(refused(&named(1024, 1024, b'n')), "backing file name at offset 1024 (1024 bytes) is invalid");
        assert_eq!(parsed(&named(4086, 10, b'x')).backing_file.as_deref(), Some("xxxxxxxxxx"));
        assert_eq!(refused(&named(4087, 10, b'x')), "backing file name at offset 4087 (10 bytes) is invalid");
        assert_eq!(refused(&named(512, 3, 0xff)), "backing file name is not valid UTF-8");
        // An offset or a size of zero means no backing file.
        assert_eq!(parsed(&named(512, 0, b'x')).backing_file, None);
        let mut b = named(512, 4, b'x');
        put64(&mut b, 8, 0);
        assert_eq!(parsed(&b).backing_file, None);
        // An offset far past the file (the end would overflow) is refused, not read.
        put64(&mut b, 8, u64::MAX - 1);
        assert_eq!(refused(&b), "backing file name at offset 18446744073709551614 (4 bytes) is invalid");
    }

    #[test]
    fn l1_entries_cover_the_virtual_size() {
        // 64 KiB clusters: an L2 table maps 8192 clusters (512 MiB), or 4096 (256 MiB) extended.
        assert_eq!(l1_entries_for(0, 16, false), 0);
        assert_eq!(l1_entries_for(1, 16, false), 1);
        assert_eq!(l1_entries_for(512 << 20, 16, false), 1);
        assert_eq!(l1_entries_for((512 << 20) + 1, 16, false), 2);
        assert_eq!(l1_entries_for(1 << 30, 16, true), 4);
        // 512-byte clusters: 64 clusters (32 KiB) per table; 2 MiB: 2^18 clusters (512 GiB).
        assert_eq!(l1_entries_for(1 << 20, 9, false), 32);
        assert_eq!(l1_entries_for(1 << 40, 21, false), 2);
    }

    #[test]
    fn standard_cluster_descriptors() {
        let d = |entry: u64| Descriptor::decode(entry, 16);
        assert_eq!(d(0), Descriptor::Standard { host: 0, zero: false });
        // COPIED (bit 63) and a host cluster at 320 KiB.
        assert_eq!(d(0x8000_0000_0005_0000), Descriptor::Standard { host: 0x5_0000, zero: false });
        // Bit 0: reads as zeros, with or without a preallocated host cluster.
        assert_eq!(d(0x0000_0000_0005_0001), Descriptor::Standard { host: 0x5_0000, zero: true });
        assert_eq!(d(1), Descriptor::Standard { host: 0, zero: true });
        // Reserved bits 1-8 and 56-61 are not part of the offset.
        assert_eq!(d(0x3f00_0000_0005_01fe), Descriptor::Standard { host: 0x5_0000, zero: false });
        // The highest offset bits 9-55 can hold.
        assert_eq!(d(0x00ff_ffff_ffff_fe00), Descriptor::Standard { host: (1 << 56) - 512, zero: false });
    }

    #[test]
    fn compressed_cluster_descriptors_for_each_cluster_size() {
        let d = Descriptor::decode;
        // 64 KiB clusters: x = 62 - (16 - 8) = 54; 3 more sectors after the one holding
        // 0x12345 (which starts 0x145 = 325 bytes into its sector): 4 * 512 - 325 bytes.
        assert_eq!(d(0x40c0_0000_0001_2345, 16), Descriptor::Compressed { host: 0x1_2345, stored: 1723 });
        // COPIED is never set on compressed clusters, but it is not part of the count either.
        assert_eq!(d(0xc0c0_0000_0001_2345, 16), Descriptor::Compressed { host: 0x1_2345, stored: 1723 });
        // 512-byte clusters: x = 61, a one-bit count.
        assert_eq!(d(0x6000_0000_0000_0200, 9), Descriptor::Compressed { host: 0x200, stored: 1024 });
        assert_eq!(d(0x5fff_ffff_ffff_ffff, 9), Descriptor::Compressed { host: (1 << 61) - 1, stored: 1 });
        // 2 MiB clusters: x = 49, a 13-bit count: at most 8192 sectors (4 MiB).
        assert_eq!(d(0x7ffe_0001_0000_0000, 21), Descriptor::Compressed { host: 1 << 32, stored: 4 << 20 });
        // Where the offset ends depends on the cluster size: bit 54 is an offset bit with
        // 4 KiB clusters (x = 58) and the lowest count bit with 64 KiB ones.
        let entry = OFLAG_COMPRESSED | 1 << 54;
        assert_eq!(d(entry, 12), Descriptor::Compressed { host: 1 << 54, stored: 512 });
        assert_eq!(d(entry, 16), Descriptor::Compressed { host: 0, stored: 1024 });

        // The writer's encoding is the same layout.
        assert_eq!(compressed_entry(0x1_2345, 1723, 16), 0x40c0_0000_0001_2345);
        assert_eq!(compressed_entry(0x1_0000, 512, 16), 0x4000_0000_0001_0000);
        assert_eq!(compressed_entry(0x1_0000, 513, 16), 0x4040_0000_0001_0000);
        assert_eq!(compressed_entry(1 << 32, 4 << 20, 21), 0x7ffe_0001_0000_0000);
        for (host, len, bits) in [(0x1_0000u64, 700u64, 16u32), (4095, 2, 9), (0x20_0000 + 17, 1 << 20, 21)] {
            let Descriptor::Compressed { host: h, stored } = d(compressed_entry(host, len, bits), bits) else {
                panic!("not compressed")
            };
            assert_eq!(h, host);
            // `stored` reaches the end of the last sector the data touches.
            assert!(stored >= len && stored - len < 512 && (host + stored).is_multiple_of(512), "{host} {len}");
        }
    }

    #[test]
    fn subcluster_allocation_bitmaps() {
        // Subclusters 0, 1 and 30 allocated; 2 and 31 read as zeros; 3 has both bits (invalid).
        let bitmap: u64 = 0b11 | 1 << 30 | 1 << (32 + 2) | 1 << (32 + 31) | 1 << 3 | 1 << (32 + 3);
        assert_eq!(bitmap, 0x8000_000c_4000_000b);
        let got: Vec<Subcluster> = (0..32).map(|i| Subcluster::of(bitmap, i)).collect();
        assert_eq!(
            &got[..5],
            &[
                Subcluster::Allocated,
                Subcluster::Allocated,
                Subcluster::Zero,
                Subcluster::Invalid,
                Subcluster::Unallocated
            ]
        );
        assert!(got[4..30].iter().all(|&s| s == Subcluster::Unallocated));
        assert_eq!((got[30], got[31]), (Subcluster::Allocated, Subcluster::Zero));
        assert!((0..32).all(|i| Subcluster::of(0, i) == Subcluster::Unallocated));
        assert!((0..32).all(|i| Subcluster::of(u64::MAX, i) == Subcluster::Invalid));
    }
}
