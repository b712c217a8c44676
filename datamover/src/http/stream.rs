//! The body of a remote file, read once from start to end. A connection that drops mid-body
//! is reopened with `Range: bytes=<offset>-` (a few times, with a short backoff), as long as
//! the server answers 206 for the same file; a stall (no byte for `stall_timeout`) is not
//! retried, since waiting again would double the time an operator waits for the error.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::BodyReader;

use super::client::{is_stall, Client, HttpOptions, Remote};
use super::url::Url;
use crate::error::{Error, Result};

/// Reconnections after drops, in all (not in a row: a flaky link may drop now and then).
const RESUMES: u32 = 5;
const BACKOFF: Duration = Duration::from_millis(200);

/// GETs `url`: the remote file and the stream of its body.
pub fn open(client: &Client, url: &Url, opts: &HttpOptions) -> Result<(Arc<Remote>, Stream)> {
    let (remote, body) = Remote::open(client, url, opts)?;
    Ok((remote.clone(), Stream { remote, body: Some(body), pos: 0, resumes: 0 }))
}

pub struct Stream {
    remote: Arc<Remote>,
    body: Option<BodyReader<'static>>,
    pos: u64,
    resumes: u32,
}

impl Stream {
    /// Bytes of the file read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Reconnections so far.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Fills `buf` from the file, fewer bytes only at its end. `stopped` is checked whenever
    /// a read fails (a cancel shuts the connection down, which fails the read at once).
    pub fn read_full(&mut self, buf: &mut [u8], stopped: &dyn Fn() -> bool) -> Result<usize> {
        let mut got = 0;
        let len = self.remote.len;
        while got < buf.len() && self.pos < len {
            let want = ((len - self.pos) as usize).min(buf.len() - got);
            let r = match self.body.as_mut() {
                Some(b) => b.read(&mut buf[got..got + want]),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
            };
            match r {
                Ok(0) => self.resume(stopped, "the connection closed early")?,
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if stopped() => return Err(Error::cancelled()),
                Err(e) if is_stall(&e) => return Err(self.remote.stalled().offset(self.pos)),
                Err(e) => self.resume(stopped, &e.to_string())?,
            }
        }
        Ok(got)
    }

    /// Reopens the body at the current position after `why` ended the last connection.
    fn resume(&mut self, stopped: &dyn Fn() -> bool, why: &str) -> Result<()> {
        self.body = None;
        let lost = format!("the download stopped after {} of {} bytes ({why})", self.pos, self.remote.len);
        if self.resumes >= RESUMES {
            return Err(self.fail(format!("{lost}; gave up after {RESUMES} reconnections")));
        }
        self.resumes += 1;
        let until = Instant::now() + BACKOFF * self.resumes;
        while Instant::now() < until {
            if stopped() {
                return Err(Error::cancelled());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.remote.get_range(self.pos, None) {
            Ok(resp) => {
                self.body = Some(resp.into_body().into_reader());
                Ok(())
            }
            Err(_) if stopped() => Err(Error::cancelled()),
            Err(e) => Err(self.fail(format!("{lost}; cannot resume: {}", e.message))),
        }
    }

    fn fail(&self, message: String) -> Error {
        self.remote.err(message).offset(self.pos)
    }
}
