//! Per-cluster compression as qcow2 stores it: raw deflate with a 4 KiB window (what QEMU
//! inflates with windowBits -12) or one zstd frame per cluster. Contexts are kept per thread
//! and reset between clusters rather than recreated.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zlib,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Zlib => "zlib",
            Codec::Zstd => "zstd",
        }
    }

    pub fn parse(name: &str) -> Option<Codec> {
        match name {
            "zlib" | "deflate" => Some(Codec::Zlib),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// QEMU's choices: zlib level 6 (Z_DEFAULT_COMPRESSION), zstd level 3 (ZSTD_CLEVEL_DEFAULT).
const ZLIB_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

#[derive(Default)]
pub struct Decompressor {
    libdeflate: Option<libdeflater::Decompressor>,
    inflate: Option<Decompress>,
    zstd: Option<DCtx<'static>>,
}

impl Decompressor {
    /// Decompresses one cluster into `out`, which must be filled exactly. `input` may carry
    /// trailing bytes (qcow2 stores a sector-rounded length), which are ignored.
    pub fn decompress(&mut self, codec: Codec, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match codec {
            Codec::Zlib => {
                // libdeflate inflates whole buffers faster than zlib; it ignores trailing input.
                let fast = self.libdeflate.get_or_insert_with(libdeflater::Decompressor::new);
                match fast.deflate_decompress(input, out) {
                    Ok(n) if n == out.len() => return Ok(()),
                    Ok(n) => return Err(format!("deflate stream ended after {n} of {} bytes", out.len())),
                    // A stream longer than the cluster: QEMU keeps the first cluster's worth,
                    // which streaming zlib does below.
                    Err(libdeflater::DecompressionError::InsufficientSpace) => {}
                    Err(e) => return Err(format!("deflate data is corrupt: {e}")),
                }
                // A 32 KiB window accepts streams written with any smaller window.
                let d = self.inflate.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
                d.reset(false);
                let status = d
                    .decompress(input, out, FlushDecompress::Finish)
                    .map_err(|e| format!("deflate data is corrupt: {e}"))?;
                let produced = d.total_out() as usize;
                if produced != out.len() {
                    return Err(format!("deflate stream ended after {produced} of {} bytes ({status:?})", out.len()));
                }
                Ok(())
            }
            Codec::Zstd => {
                let ctx = self.zstd.get_or_insert_with(DCtx::create);
                ctx.reset(ResetDirective::SessionOnly)
                    .map_err(|c| format!("zstd reset failed: {}", zstd::zstd_safe::get_error_name(c)))?;
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                // Stop once the cluster is complete: what follows is padding or another frame.
                while outb.pos() < outb.capacity() {
                    let (ip, op) = (inb.pos(), outb.pos());
                    ctx.decompress_stream(&mut outb, &mut inb)
                        .map_err(|c| format!("zstd data is corrupt: {}", zstd::zstd_safe::get_error_name(c)))?;
                    if inb.pos() == ip && outb.pos() == op {
                        return Err(format!("zstd stream ended after {} of {} bytes", outb.pos(), outb.capacity()));
                    }
                }
                Ok(())
            }
        }
    }
}

impl Decompressor {
    /// Bytes `skip..skip + out.len()` of a compressed cluster of `cluster` bytes; a part of a
    /// cluster goes through `whole` (resized to the cluster).
    pub fn decompress_part(
        &mut self,
        codec: Codec,
        input: &[u8],
        cluster: u64,
        skip: u64,
        out: &mut [u8],
        whole: &mut Vec<u8>,
    ) -> Result<(), String> {
        if skip == 0 && out.len() as u64 == cluster {
            return self.decompress(codec, input, out);
        }
        whole.resize(cluster as usize, 0);
        self.decompress(codec, input, whole)?;
        out.copy_from_slice(&whole[skip as usize..skip as usize + out.len()]);
        Ok(())
    }
}

#[derive(Default)]
pub struct Compressor {
    deflate: Option<Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// Compresses `input` into `out`; None if the result would not be smaller than `out.len()`
    /// (callers pass cluster_size - 1 bytes, so such clusters are stored uncompressed, as in QEMU).
    pub fn compress(&mut self, codec: Codec, input: &[u8], out: &mut [u8]) -> Result<Option<usize>, String> {
        match codec {
            Codec::Zlib => {
                let c = self
                    .deflate
                    .get_or_insert_with(|| Compress::new_with_window_bits(Compression::new(ZLIB_LEVEL), false, 12));
                c.reset();
                match c.compress(input, out, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => Ok(Some(c.total_out() as usize)),
                    Ok(_) => Ok(None),
                    Err(e) => Err(format!("deflate failed: {e}")),
                }
            }
            Codec::Zstd => {
                if self.zstd.is_none() {
                    let z = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| format!("zstd init failed: {e}"))?;
                    self.zstd = Some(z);
                }
                let Some(z) = self.zstd.as_mut() else { return Err("zstd context missing".into()) };
                match z.compress_to_buffer(input, out) {
                    Ok(n) => Ok(Some(n)),
                    // The only failure for a valid context is "destination too small".
                    Err(_) => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_garbage() {
        let data: Vec<u8> = (0..65536u32).map(|i| b"0123456789abcdef"[(i * 7 % 13) as usize]).collect();
        for codec in [Codec::Zlib, Codec::Zstd] {
            let mut c = Compressor::default();
            let mut out = vec![0u8; 65535];
            let n = c.compress(codec, &data, &mut out).unwrap().unwrap();
            assert!(n < 65535);
            // Trailing bytes after the stream, as in a sector-rounded qcow2 descriptor.
            out[n..n + 100].fill(0xa5);
            let mut d = Decompressor::default();
            let mut back = vec![0u8; 65536];
            d.decompress(codec, &out[..n + 100], &mut back).unwrap();
            assert_eq!(back, data);
            // A second use of the same contexts.
            let n2 = c.compress(codec, &data, &mut out).unwrap().unwrap();
            assert_eq!(n, n2);
            assert!(d.decompress(codec, &out[..n / 2], &mut back).is_err());
        }
    }

    #[test]
    fn deflate_stream_longer_than_the_cluster_keeps_the_first_cluster() {
        let data: Vec<u8> = (0..131072u32).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; 131072];
        let n = Compressor::default().compress(Codec::Zlib, &data, &mut out).unwrap().unwrap();
        let mut back = vec![0u8; 65536];
        Decompressor::default().decompress(Codec::Zlib, &out[..n], &mut back).unwrap();
        assert_eq!(back, data[..65536]);
    }

    #[test]
    fn incompressible_is_refused() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for codec in [Codec::Zlib, Codec::Zstd] {
            let mut out = vec![0u8; 65535];
            assert_eq!(Compressor::default().compress(codec, &data, &mut out).unwrap(), None);
        }
    }
}
