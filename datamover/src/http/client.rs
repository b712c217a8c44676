//! The client of one download (ureq: redirects, trust roots, timeouts, shutdown) and the
//! remote file it opened: length, validators, range requests, errors in our words.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body, BodyReader, ResponseExt};

use crate::error::{Error, Kind, Result};
use crate::image::ReadAt;

use super::url::{self, Url};

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// PEM bundle trusted instead of the host's trust store.
    pub ca_file: Option<PathBuf>,
    pub max_redirects: u32,
    /// Largest file accepted (its Content-Length).
    pub max_bytes: Option<u64>,
    /// No byte for this long (connecting, waiting for headers, or mid-body) is an error.
    pub stall_timeout: Duration,
}

/// Loads `ca_file` (all its certificates) or the host's trust store.
pub fn trusted_roots(ca_file: Option<&Path>) -> Result<Vec<Certificate<'static>>> {
    let Some(path) = ca_file else {
        let found = rustls_native_certs::load_native_certs();
        let roots: Vec<_> = found.certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
        if roots.is_empty() {
            return Err(Error::new(Kind::Source, "no trusted CA certificates found on this host (pass ca_file)"));
        }
        return Ok(roots);
    };
    let pem = std::fs::read(path).map_err(|e| Error::invalid(format!("ca_file {}: {e}", path.display())))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => roots.push(c),
            Ok(_) => {}
            Err(e) => return Err(Error::invalid(format!("ca_file {}: not a PEM bundle ({e})", path.display()))),
        }
    }
    if roots.is_empty() {
        return Err(Error::invalid(format!("ca_file {} holds no PEM certificate", path.display())));
    }
    Ok(roots)
}

/// An opened remote file.
pub struct Remote {
    agent: Agent,
    /// Where range requests go: the URL the redirects led to.
    location: String,
    /// Credentials of the URL, when `location` is still that URL.
    auth: Option<String>,
    /// The URL for messages (see `Url::shown`).
    pub shown: String,
    pub len: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    stall: Duration,
}

fn header(r: &Response<Body>, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The rustls error inside a ureq error, if any (handshake failures arrive either way).
fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// Whether an I/O error of a body read is the per-read timeout.
pub(super) fn is_stall(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// The HTTP client of one download; `shutdown` interrupts whatever it is doing.
#[derive(Clone)]
pub struct Client {
    agent: Agent,
}

impl Client {
    pub fn new(url: &Url, opts: &HttpOptions) -> Result<Client> {
        let roots = if url.https { Some(trusted_roots(opts.ca_file.as_deref())?) } else { None };
        let mut cfg = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(opts.max_redirects)
            .timeout_resolve(Some(opts.stall_timeout))
            .timeout_connect(Some(opts.stall_timeout))
            .timeout_per_read(Some(opts.stall_timeout))
            .timeout_per_write(Some(opts.stall_timeout));
        if let Some(r) = roots {
            cfg = cfg.tls_config(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&r)).build());
        }
        Ok(Client { agent: Agent::new_with_config(cfg.build()) })
    }

    /// Closes every connection: a read blocked on one fails at once (cancel).
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }
}

impl Remote {
    /// The file at `url`, before its first answer.
    fn unopened(client: &Client, url: &Url, opts: &HttpOptions) -> Remote {
        Remote {
            agent: client.agent.clone(),
            location: url.request.clone(),
            auth: url.auth.clone(),
            shown: url.shown.clone(),
            len: 0,
            etag: None,
            last_modified: None,
            stall: opts.stall_timeout,
        }
    }

    /// Takes what the first answer says of the file: where the redirects led, its length
    /// (`len`, from Content-Length or Content-Range), which `max_bytes` bounds, and its
    /// validators.
    fn adopt(&mut self, resp: &Response<Body>, len: Option<u64>, opts: &HttpOptions) -> Result<()> {
        let final_uri = resp.get_uri().to_string();
        if final_uri != self.location {
            // Credentials were for the URL given, not for where it redirects.
            self.location = final_uri;
            self.auth = None;
        }
        self.len = len.ok_or_else(|| {
            self.err("the server sent no Content-Length: the size of the image must be known before writing")
        })?;
        if let Some(max) = opts.max_bytes.filter(|&m| self.len > m) {
            return Err(self.err(format!("the file is {} bytes, more than max_bytes ({max})", self.len)));
        }
        self.etag = header(resp, "etag");
        self.last_modified = header(resp, "last-modified");
        Ok(())
    }

    /// GETs `url` and checks the answer; returns the file and the reader of its body.
    pub fn open(client: &Client, url: &Url, opts: &HttpOptions) -> Result<(Arc<Remote>, BodyReader<'static>)> {
        let mut remote = Remote::unopened(client, url, opts);
        let resp = remote.get(None, opts.max_redirects)?;
        if resp.status().as_u16() != 200 {
            return Err(remote.status_error(&resp, opts.max_redirects));
        }
        remote.adopt(&resp, resp.body().content_length(), opts)?;
        Ok((Arc::new(remote), resp.into_body().into_reader()))
    }

    /// The file at `url` and its first `n` bytes (all of it if shorter), from one GET of
    /// that range; the rest of the body is never asked for. A server that ignores the range
    /// (200) sends the whole body, of which only the first `n` bytes are read before the
    /// connection is dropped.
    pub fn open_head(client: &Client, url: &Url, opts: &HttpOptions, n: u64) -> Result<(Arc<Remote>, Vec<u8>)> {
        let mut remote = Remote::unopened(client, url, opts);
        let resp = remote.get(Some((0, Some(n.max(1) - 1))), opts.max_redirects)?;
        let range = header(&resp, "content-range").unwrap_or_default();
        // The file's length after the `/` of a Content-Range (`*`: unknown).
        let total = || range.rsplit_once('/').map(|(_, t)| t.trim().parse::<u64>().ok());
        let len = match resp.status().as_u16() {
            200 => resp.body().content_length(),
            206 => match total() {
                Some(len) if range.starts_with("bytes 0-") => len,
                _ => {
                    return Err(remote.err(format!(
                        "the server answered a range of the file with Content-Range {range:?} (asked from 0)"
                    )))
                }
            },
            // Nothing to send from an empty file.
            416 if total() == Some(Some(0)) => Some(0),
            _ => return Err(remote.status_error(&resp, opts.max_redirects)),
        };
        remote.adopt(&resp, len, opts)?;
        let mut head = vec![0u8; n.min(remote.len) as usize];
        remote.fill(resp.into_body().into_reader(), &mut head, 0)?;
        Ok((Arc::new(remote), head))
    }

    pub(super) fn err(&self, message: impl Into<String>) -> Error {
        Error::new(Kind::Source, message).at(Path::new(&self.shown))
    }

    fn get(&self, range: Option<(u64, Option<u64>)>, max_redirects: u32) -> Result<Response<Body>> {
        let mut req = self.agent.get(&self.location);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        if let Some((from, to)) = range {
            let to = to.map(|t| t.to_string()).unwrap_or_default();
            req = req.header("Range", format!("bytes={from}-{to}"));
        }
        req.call().map_err(|e| self.call_error(e, max_redirects))
    }

    /// A failed request, without the URL's credentials or the library's wording of it.
    fn call_error(&self, e: ureq::Error, max_redirects: u32) -> Error {
        if let Some(t) = tls_error(&e) {
            return match t {
                rustls::Error::InvalidCertificate(c) => self.err(format!("TLS certificate verification failed: {c:?}")),
                other => self.err(format!("TLS handshake failed: {other}")),
            };
        }
        match e {
            ureq::Error::TooManyRedirects => self.err(format!("more than {max_redirects} redirects")),
            ureq::Error::Timeout(_) => self.stalled(),
            ureq::Error::HostNotFound => self.err("host not found"),
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => self.err("invalid URL"),
            ureq::Error::Io(io) => {
                let mut err = self.err(format!("cannot connect: {io}"));
                err.errno = io.raw_os_error();
                err
            }
            other => self.err(format!("request failed: {other}")),
        }
    }

    pub(super) fn stalled(&self) -> Error {
        self.err(format!("no data from the server for {} s (stall_timeout)", self.stall.as_secs_f64()))
    }

    fn status_error(&self, resp: &Response<Body>, max_redirects: u32) -> Error {
        let status = resp.status();
        let code = status.as_u16();
        let what = match code {
            300..=399 if max_redirects == 0 => {
                let to = header(resp, "location").map(|l| url::show(&l)).unwrap_or_default();
                format!("redirect to {to} not followed (max_redirects is 0)")
            }
            401 => "authentication required".to_string(),
            403 => "access denied".to_string(),
            404 => "not found".to_string(),
            _ => "the server refused the request".to_string(),
        };
        self.err(format!("{what} (HTTP {code} {})", status.canonical_reason().unwrap_or("")).trim_end().to_string())
    }

    /// GETs `offset..` (to `end`, exclusive, if given), expecting 206 from the same file.
    pub fn get_range(&self, offset: u64, end: Option<u64>) -> Result<Response<Body>> {
        let resp = self.get(Some((offset, end.map(|e| e - 1))), 0)?;
        match resp.status().as_u16() {
            206 => {}
            200 => return Err(self.err("the server ignores Range requests (answered 200 instead of 206)")),
            _ => return Err(self.status_error(&resp, 0)),
        }
        let changed = |name: &str, was: &Option<String>| was.is_some() && header(&resp, name) != *was;
        if changed("etag", &self.etag) || changed("last-modified", &self.last_modified) {
            return Err(self.err("the file changed on the server during the download (ETag or Last-Modified differ)"));
        }
        let want = format!("bytes {offset}-");
        let range = header(&resp, "content-range").unwrap_or_default();
        if !range.starts_with(&want) || !range.ends_with(&format!("/{}", self.len)) {
            return Err(self.err(format!(
                "the server answered a range of the file with Content-Range {range:?} (asked from {offset} of {} bytes)",
                self.len
            )));
        }
        Ok(resp)
    }

    /// Reads `buf.len()` bytes at `offset` with a range request (fewer at the end of the file).
    pub fn read_range(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(self.len);
        let resp = self.get_range(offset, Some(end))?;
        let want = (end - offset) as usize;
        self.fill(resp.into_body().into_reader(), &mut buf[..want], offset)?;
        Ok(want)
    }

    /// Fills `buf` from `reader`, the body of an answer starting at file offset `offset`.
    fn fill(&self, mut reader: BodyReader<'static>, buf: &mut [u8], offset: u64) -> Result<()> {
        let want = buf.len();
        let mut got = 0;
        while got < want {
            match io::Read::read(&mut reader, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_stall(&e) => return Err(self.stalled()),
                Err(e) => return Err(self.err(format!("reading {want} bytes at offset {offset}: {e}"))),
            }
        }
        if got < want {
            return Err(self.err(format!("the server sent {got} of the {want} bytes asked at offset {offset}")));
        }
        Ok(())
    }
}

/// Range reads of a remote file, for a layer's metadata (`image::ReadAt`).
pub struct RangeReader(pub Arc<Remote>);

impl ReadAt for RangeReader {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // The layer adds the URL and offset to the message.
        self.0.read_range(buf, offset).map_err(|e| io::Error::other(e.message))
    }
}
