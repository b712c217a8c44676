//! The downloaded file as the copy reads it: the start of the body read first (probing and a
//! qcow2 header come from it), then the rest of the stream; and the metadata reads of a
//! qcow2 image, from that start when it holds them, else with range requests.

use std::sync::Arc;

use crate::error::Result;
use crate::http::{RangeReader, Stream};
use crate::image::ReadAt;

/// The start of the file is read before anything else: probing and a qcow2 image's header
/// (and, for most images, its tables) come from it without a range request.
pub const HEAD: u64 = 4 << 20;

/// The file as the engine reads it: the head already read, then the rest of the body.
pub struct Input {
    head: Arc<Vec<u8>>,
    stream: Stream,
    len: u64,
}

impl Input {
    pub fn new(stream: Stream, len: u64) -> Input {
        Input { head: Arc::new(Vec::new()), stream, len }
    }

    /// What was read of the start of the file, served before the rest of the stream.
    pub fn set_head(&mut self, head: Vec<u8>) {
        self.head = Arc::new(head);
    }

    pub fn head(&self) -> &Arc<Vec<u8>> {
        &self.head
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes received from the network.
    pub fn position(&self) -> u64 {
        self.stream.position()
    }

    /// Fills `buf` from file offset `at`, which is where the last read ended.
    pub fn read(&mut self, buf: &mut [u8], at: u64, stopped: &dyn Fn() -> bool) -> Result<usize> {
        let mut got = 0;
        if at < self.head.len() as u64 {
            let from = &self.head[at as usize..];
            got = from.len().min(buf.len());
            buf[..got].copy_from_slice(&from[..got]);
        }
        if got < buf.len() {
            got += self.stream.read_full(&mut buf[got..], stopped)?;
        }
        Ok(got)
    }
}

/// A qcow2 image's metadata reads: from the head as far as it holds them, range requests for
/// the rest.
pub struct HeadOrRange {
    head: Arc<Vec<u8>>,
    len: u64,
    ranges: RangeReader,
}

impl HeadOrRange {
    pub fn new(head: Arc<Vec<u8>>, len: u64, ranges: RangeReader) -> HeadOrRange {
        HeadOrRange { head, len, ranges }
    }
}

impl ReadAt for HeadOrRange {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let end = (offset + buf.len() as u64).min(self.len);
        let have = self.head.len() as u64;
        // What the head holds of the read, then a range request for the rest (if any).
        let n = end.min(have).saturating_sub(offset) as usize;
        buf[..n].copy_from_slice(&self.head[offset.min(have) as usize..][..n]);
        if offset + n as u64 >= end {
            return Ok(n);
        }
        Ok(n + self.ranges.read_at(&mut buf[n..], offset + n as u64)?)
    }
}
