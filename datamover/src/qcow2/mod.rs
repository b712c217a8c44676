//! QCOW2 on-disk format (qemu docs/interop/qcow2.txt): header parsing and shared constants.

pub mod reader;
pub mod writer;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::source::{Description, ImageFile};
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
        }
    }

    /// Parses and validates the header of `img`, checking every table it points to lies
    /// inside the file.
    pub fn read(img: &ImageFile) -> Result<Header> {
        let path = &img.path;
        let bad = |m: String| Error::format(path, m);
        let mut fixed = [0u8; 112];
        let n = sys::pread_full(&img.file, &mut fixed, 0)
            .map_err(|e| Error::source_io(path, "read failed", Some(0), &e))?;
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
        if be32(&fixed, 32) != 0 {
            return Err(bad("encrypted qcow2 images are not supported".into()));
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
        if l1_offset.saturating_add(l1_size * 8) > img.len {
            return Err(bad(format!(
                "L1 table at offset {l1_offset} lies past the end of the file ({} bytes)",
                img.len
            )));
        }
        let rt_offset = be64(&fixed, 48);
        let rt_clusters = be32(&fixed, 56) as u64;
        if rt_clusters == 0 || rt_offset == 0 || !rt_offset.is_multiple_of(cluster_size) {
            return Err(bad(format!("refcount table offset {rt_offset} / {rt_clusters} clusters is invalid")));
        }
        if rt_offset.saturating_add(rt_clusters.saturating_mul(cluster_size)) > img.len {
            return Err(bad(format!(
                "refcount table at offset {rt_offset} lies past the end of the file ({} bytes)",
                img.len
            )));
        }

        // The rest of the first cluster: header extensions and the backing file name.
        let first_len = cluster_size.min(img.len) as usize;
        let mut first = vec![0u8; first_len];
        let got = sys::pread_full(&img.file, &mut first, 0)
            .map_err(|e| Error::source_io(path, "read failed", Some(0), &e))?;
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
                _ => {}
            }
            at = data + elen.div_ceil(8) * 8;
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
        })
    }
}
