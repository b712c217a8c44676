//! Python bindings: `spcs._datamover`. Long work runs with the GIL released; waiting polls
//! for signals so Ctrl-C reaches Python.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::codec::Codec;
use crate::crypt::luks1::MAX_ITER_TIME_MS;
use crate::crypt::{Encrypt, Passphrase};
use crate::digest::DigestKind;
use crate::download::{download as fetch, url_info as describe_url, DownloadRequest};
use crate::error::{Error, Kind};
use crate::http::{trusted_roots, HttpOptions, Url};
use crate::image::Format;
use crate::info as inspect;
use crate::job;
use crate::luks;
use crate::pipeline::{default_threads, Control, Request, Stats};
use crate::source::Confine;
use crate::target::TargetOptions;

create_exception!(spcs.datamover, DataMoverError, PyException, "Base class of data mover errors.");
create_exception!(spcs.datamover, SourceError, DataMoverError, "The source cannot be opened or read.");
create_exception!(
    spcs.datamover,
    FormatError,
    DataMoverError,
    "The source image is malformed or uses an unsupported feature."
);
create_exception!(
    spcs.datamover,
    BadPassphrase,
    FormatError,
    "An encrypted image: no key slot opens with the passphrase given (or none was given)."
);
create_exception!(
    spcs.datamover,
    TargetTooSmall,
    DataMoverError,
    "The existing target is smaller than the virtual size."
);
create_exception!(spcs.datamover, TargetExists, DataMoverError, "The destination exists and may not be replaced.");
create_exception!(spcs.datamover, Cancelled, DataMoverError, "The copy was cancelled.");
create_exception!(spcs.datamover, IoError, DataMoverError, "Writing or flushing the target failed.");
create_exception!(spcs.datamover, NoSpace, IoError, "The target ran out of space.");

/// Builds the Python exception for `e`, with `path`, `offset`, `errno` and `target_partial`.
fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    let msg = e.to_string();
    let err = match e.kind {
        Kind::Source => SourceError::new_err(msg),
        Kind::Format => FormatError::new_err(msg),
        Kind::BadPassphrase => BadPassphrase::new_err(msg),
        Kind::TargetTooSmall => TargetTooSmall::new_err(msg),
        Kind::TargetExists => TargetExists::new_err(msg),
        Kind::Cancelled => Cancelled::new_err(msg),
        Kind::Io => IoError::new_err(msg),
        Kind::NoSpace => NoSpace::new_err(msg),
        Kind::InvalidArgument => return PyValueError::new_err(msg),
        Kind::Internal => DataMoverError::new_err(msg),
    };
    let v = err.value(py);
    let path = e.path.as_ref().map(|p| p.to_string_lossy().into_owned());
    // Attribute setting on a fresh exception instance cannot fail in practice; if it does, the
    // message still carries everything.
    let _ = v.setattr("path", path);
    let _ = v.setattr("offset", e.offset);
    let _ = v.setattr("errno", e.errno);
    let _ = v.setattr("target_partial", e.target_partial);
    err
}

/// Result of a finished copy.
#[pyclass(frozen, get_all, module = "spcs.datamover")]
#[derive(Clone)]
pub struct ConvertStats {
    bytes_read: u64,
    bytes_written: u64,
    bytes_skipped: u64,
    virtual_size: u64,
    seconds: f64,
    checksum: Option<String>,
}

#[pymethods]
impl ConvertStats {
    fn __repr__(&self) -> String {
        format!(
            "ConvertStats(bytes_read={}, bytes_written={}, bytes_skipped={}, virtual_size={}, seconds={:.3}, checksum={:?})",
            self.bytes_read, self.bytes_written, self.bytes_skipped, self.virtual_size, self.seconds, self.checksum
        )
    }
}

impl From<&Stats> for ConvertStats {
    fn from(s: &Stats) -> Self {
        ConvertStats {
            bytes_read: s.bytes_read,
            bytes_written: s.bytes_written,
            bytes_skipped: s.bytes_skipped,
            virtual_size: s.virtual_size,
            seconds: s.seconds,
            checksum: s.checksum.clone(),
        }
    }
}

/// A snapshot of a running copy.
#[pyclass(frozen, get_all, module = "spcs.datamover")]
pub struct Progress {
    done_bytes: u64,
    total_bytes: u64,
    rate_bytes_per_sec: f64,
    elapsed_seconds: f64,
}

#[pymethods]
impl Progress {
    fn __repr__(&self) -> String {
        format!(
            "Progress(done_bytes={}, total_bytes={}, rate_bytes_per_sec={:.0}, elapsed_seconds={:.3})",
            self.done_bytes, self.total_bytes, self.rate_bytes_per_sec, self.elapsed_seconds
        )
    }
}

/// What `info()` or `url_info()` found.
#[pyclass(frozen, get_all, module = "spcs.datamover")]
pub struct ImageInfo {
    format: String,
    virtual_size: u64,
    actual_size: u64,
    cluster_size: Option<u64>,
    compression: Option<String>,
    backing_file: Option<String>,
    backing_format: Option<String>,
    compat: Option<String>,
    extended_l2: bool,
    dirty: bool,
    checksum: Option<String>,
    encryption: Option<String>,
    payload_offset: Option<u64>,
}

#[pymethods]
impl ImageInfo {
    fn __repr__(&self) -> String {
        format!(
            "ImageInfo(format={:?}, virtual_size={}, actual_size={}, cluster_size={:?}, compression={:?}, backing_file={:?}, encryption={:?}, checksum={:?})",
            self.format, self.virtual_size, self.actual_size, self.cluster_size, self.compression, self.backing_file, self.encryption, self.checksum
        )
    }
}

impl From<inspect::Info> for ImageInfo {
    fn from(i: inspect::Info) -> Self {
        ImageInfo {
            format: i.format.name().to_string(),
            virtual_size: i.virtual_size,
            actual_size: i.actual_size,
            cluster_size: i.cluster_size,
            compression: i.compression.map(str::to_string),
            backing_file: i.backing_file,
            backing_format: i.backing_format,
            compat: i.compat,
            extended_l2: i.extended_l2,
            dirty: i.dirty,
            checksum: i.checksum,
            encryption: i.encryption.as_ref().map(|e| e.format.to_string()),
            payload_offset: i.encryption.and_then(|e| e.payload_offset),
        }
    }
}

/// A copy running in the background.
#[pyclass(frozen, module = "spcs.datamover")]
pub struct Job {
    inner: Arc<job::Job>,
}

impl Job {
    /// Waits with the GIL released, in slices, checking for signals between them.
    fn wait_inner(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let slice = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(100)),
            };
            let inner = self.inner.clone();
            if py.detach(move || inner.wait(Some(slice))) {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Waits for the end; an interrupt (Ctrl-C) cancels the copy and waits for its cleanup.
    fn finish(&self, py: Python<'_>) -> PyResult<ConvertStats> {
        if let Err(interrupt) = self.wait_inner(py, None) {
            self.inner.cancel();
            let inner = self.inner.clone();
            py.detach(move || inner.wait(None));
            return Err(interrupt);
        }
        self.outcome(py)?.ok_or_else(|| DataMoverError::new_err("copy finished without a result"))
    }

    fn outcome(&self, py: Python<'_>) -> PyResult<Option<ConvertStats>> {
        self.inner.with_result(|r| match r {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(ConvertStats::from(s))),
            Some(Err(e)) => Err(to_pyerr(py, e)),
        })
    }
}

#[pymethods]
impl Job {
    /// Bytes of the virtual disk processed so far, the total, and the average rate.
    fn progress(&self) -> Progress {
        let p = self.inner.progress();
        Progress {
            done_bytes: p.done_bytes,
            total_bytes: p.total_bytes,
            rate_bytes_per_sec: p.rate_bytes_per_sec,
            elapsed_seconds: p.elapsed_seconds,
        }
    }

    /// Asks the copy to stop; `wait()` then raises `Cancelled` (unless it had already finished).
    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Waits for the copy; returns its stats, None if still running after `timeout` seconds,
    /// or raises the copy's error.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<ConvertStats>> {
        if !self.wait_inner(py, timeout)? {
            return Ok(None);
        }
        self.outcome(py)
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.finished()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A copy nobody can wait for any more is stopped; its thread cleans up.
        if !self.inner.finished() {
            self.inner.cancel();
        }
    }
}

/// The keyword arguments of `convert` and `start_convert`, as Python passed them. Built once,
/// by the functions `conversion_function!` declares.
struct ConvertOptions {
    src: PathBuf,
    dst: PathBuf,
    src_format: Option<String>,
    dst_format: String,
    compression: Option<String>,
    target_is_zero: bool,
    direct: Option<bool>,
    checksum: Option<String>,
    cluster_size: u64,
    backing_chain_limit: u32,
    overwrite: bool,
    threads: Option<usize>,
    confine_to: Option<PathBuf>,
    encryption: Option<String>,
    passphrase: Option<Passphrase>,
    src_passphrase: Option<Passphrase>,
    iter_time_ms: u32,
}

/// Checks a passphrase given from Python (never shown in a message). A `bytearray` is taken
/// too, so a caller can wipe its only copy after the call (bytes objects cannot be wiped).
fn to_passphrase(name: &str, p: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Passphrase>> {
    let Some(obj) = p else { return Ok(None) };
    let pass = if let Ok(b) = obj.cast::<PyBytes>() {
        Passphrase::new(b.as_bytes())
    } else if let Ok(a) = obj.cast::<PyByteArray>() {
        // SAFETY: the GIL is held and nothing runs Python code while the bytes are copied.
        Passphrase::new(unsafe { a.as_bytes() })
    } else {
        return Err(PyTypeError::new_err(format!("{name} must be bytes or bytearray")));
    };
    if pass.expose().is_empty() {
        return Err(PyValueError::new_err(format!("{name} must not be empty")));
    }
    Ok(Some(pass))
}

fn check_iter_time(ms: u32) -> PyResult<()> {
    if ms == 0 || ms > MAX_ITER_TIME_MS {
        return Err(PyValueError::new_err(format!("iter_time_ms {ms} must be from 1 to {MAX_ITER_TIME_MS}")));
    }
    Ok(())
}

impl ConvertOptions {
    /// Checks the options and builds the copy request; a bad value is a `ValueError` of the
    /// call itself, not of the job's `wait()`.
    fn request(self) -> PyResult<Request> {
        let verr = |e: Error| PyValueError::new_err(e.to_string());
        let src_format = self.src_format.as_deref().map(Format::parse).transpose().map_err(verr)?;
        let format = Format::parse(&self.dst_format).map_err(verr)?;
        let compression = match self.compression.as_deref() {
            None => None,
            Some(c) => Some(Codec::parse(c).ok_or_else(|| {
                PyValueError::new_err(format!("unknown compression {c:?} (expected \"zlib\" or \"zstd\")"))
            })?),
        };
        if compression.is_some() && format != Format::Qcow2 {
            return Err(PyValueError::new_err("compression needs dst_format=\"qcow2\""));
        }
        match self.encryption.as_deref() {
            None | Some("luks") => {}
            Some(e) => return Err(PyValueError::new_err(format!("unknown encryption {e:?} (expected \"luks\")"))),
        }
        let encrypted = format == Format::Luks || self.encryption.is_some();
        if self.encryption.is_some() && format == Format::Raw {
            return Err(PyValueError::new_err("raw output cannot be encrypted (use dst_format=\"luks\")"));
        }
        if encrypted && compression.is_some() {
            return Err(PyValueError::new_err("compression cannot be used with encryption (qemu refuses it too)"));
        }
        check_iter_time(self.iter_time_ms)?;
        let encryption = match (encrypted, self.passphrase) {
            (true, Some(p)) => Some(Encrypt { passphrase: Arc::new(p), iter_time_ms: self.iter_time_ms }),
            (true, None) => return Err(PyValueError::new_err("encrypted output needs a passphrase")),
            (false, Some(_)) => {
                return Err(PyValueError::new_err(
                    "a passphrase was given but the output is not encrypted (dst_format=\"luks\", or encryption=\"luks\" with qcow2)",
                ))
            }
            (false, None) => None,
        };
        let checksum = parse_checksum(self.checksum)?;
        let cluster_size = self.cluster_size;
        if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
            return Err(PyValueError::new_err(format!(
                "cluster_size {cluster_size} must be a power of two from 512 to 2097152"
            )));
        }
        if self.threads == Some(0) {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        // Checked here too so that a bad directory is a ValueError of start_convert itself, not
        // of the job's wait().
        if let Some(dir) = &self.confine_to {
            Confine::new(dir).map_err(verr)?;
        }
        let (target_is_zero, direct, overwrite) = (self.target_is_zero, self.direct, self.overwrite);
        Ok(Request {
            src: self.src,
            dst: Some(self.dst),
            src_format,
            target: TargetOptions { format, compression, target_is_zero, direct, cluster_size, overwrite, encryption },
            checksum,
            chain_limit: self.backing_chain_limit,
            confine_to: self.confine_to,
            threads: self.threads.unwrap_or_else(default_threads),
            src_passphrase: self.src_passphrase.map(Arc::new),
        })
    }

    /// Checks the options and starts the copy on its own thread.
    fn start(self) -> PyResult<Job> {
        let req = self.request()?;
        let inner =
            job::Job::start(req).map_err(|e| DataMoverError::new_err(format!("cannot start the copy thread: {e}")))?;
        Ok(Job { inner })
    }
}

fn parse_checksum(checksum: Option<String>) -> PyResult<Option<DigestKind>> {
    match checksum.as_deref() {
        None => Ok(None),
        Some(c) => Ok(Some(DigestKind::parse(c).ok_or_else(|| {
            PyValueError::new_err(format!("unknown checksum {c:?} (expected \"sha256\" or \"blake3\")"))
        })?)),
    }
}

/// Declares a Python function taking the conversion keywords (the one place they and their
/// defaults are written); its body sees them as the `ConvertOptions` named by the second
/// identifier, the first naming the `Python` token.
macro_rules! conversion_function {
    ($(#[$attr:meta])* fn $name:ident($py:ident, $opts:ident) -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[pyfunction]
        #[pyo3(signature = (src, dst, *, src_format=None, dst_format="raw".to_string(), compression=None,
                            target_is_zero=false, direct=None, checksum=None, cluster_size=65536,
                            backing_chain_limit=16, overwrite=false, threads=None, confine_to=None,
                            encryption=None, passphrase=None, src_passphrase=None, iter_time_ms=2000))]
        #[allow(clippy::too_many_arguments)]
        fn $name(
            $py: Python<'_>,
            src: PathBuf,
            dst: PathBuf,
            src_format: Option<String>,
            dst_format: String,
            compression: Option<String>,
            target_is_zero: bool,
            direct: Option<bool>,
            checksum: Option<String>,
            cluster_size: u64,
            backing_chain_limit: u32,
            overwrite: bool,
            threads: Option<usize>,
            confine_to: Option<PathBuf>,
            encryption: Option<String>,
            passphrase: Option<Bound<'_, PyAny>>,
            src_passphrase: Option<Bound<'_, PyAny>>,
            iter_time_ms: u32,
        ) -> $ret {
            let $opts = ConvertOptions {
                src,
                dst,
                src_format,
                dst_format,
                compression,
                target_is_zero,
                direct,
                checksum,
                cluster_size,
                backing_chain_limit,
                overwrite,
                threads,
                confine_to,
                encryption,
                passphrase: to_passphrase("passphrase", passphrase.as_ref())?,
                src_passphrase: to_passphrase("src_passphrase", src_passphrase.as_ref())?,
                iter_time_ms,
            };
            $body
        }
    };
}

conversion_function! {
    /// Starts a copy in the background and returns its `Job`. With `confine_to`, the source and
    /// every file of its backing chain must lie in that directory (else `FormatError`).
    fn start_convert(_py, options) -> PyResult<Job> {
        options.start()
    }
}

conversion_function! {
    /// Copies/converts `src` to `dst` and returns the stats. Ctrl-C cancels the copy cleanly.
    fn convert(py, options) -> PyResult<ConvertStats> {
        let job = options.start()?;
        job.finish(py)
    }
}

/// The keyword arguments of `download` and `start_download`.
struct DownloadOptions {
    url: String,
    dst: PathBuf,
    src_format: Option<String>,
    checksum: Option<(String, String)>,
    ca_file: Option<PathBuf>,
    max_redirects: u32,
    max_bytes: Option<u64>,
    stall_timeout: f64,
    target_is_zero: bool,
    overwrite: bool,
    threads: Option<usize>,
}

/// The most redirects a download may be told to follow.
const MAX_REDIRECTS: u32 = 20;

/// Checks `(algorithm, hex digest)`; the digest is compared in lowercase.
fn parse_file_checksum(checksum: Option<(String, String)>) -> PyResult<Option<(DigestKind, String)>> {
    let Some((algo, hex)) = checksum else { return Ok(None) };
    let kind = DigestKind::parse_file(&algo).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown checksum algorithm {algo:?} (expected \"md5\", \"sha1\", \"sha256\" or \"sha512\")"
        ))
    })?;
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PyValueError::new_err(format!(
            "a {algo} checksum is {} hex digits, not {:?}",
            kind.hex_len(),
            hex
        )));
    }
    Ok(Some((kind, hex)))
}

/// Checks the URL and the HTTP keywords shared by `download` and `url_info`.
fn http_options(
    url: &str,
    src_format: Option<&str>,
    ca_file: Option<PathBuf>,
    max_redirects: u32,
    max_bytes: Option<u64>,
    stall_timeout: f64,
) -> PyResult<(Option<Format>, HttpOptions)> {
    let verr = |e: Error| PyValueError::new_err(e.to_string());
    Url::parse(url).map_err(verr)?;
    let src_format = match src_format {
        None => None,
        Some("raw") => Some(Format::Raw),
        Some("qcow2") => Some(Format::Qcow2),
        Some(f) => {
            return Err(PyValueError::new_err(format!(
                "src_format {f:?} cannot be downloaded (expected \"raw\" or \"qcow2\")"
            )))
        }
    };
    if !(stall_timeout.is_finite() && stall_timeout > 0.0 && stall_timeout <= 86400.0) {
        return Err(PyValueError::new_err("stall_timeout must be more than 0 and at most 86400 seconds"));
    }
    if max_redirects > MAX_REDIRECTS {
        return Err(PyValueError::new_err(format!("max_redirects must be at most {MAX_REDIRECTS}")));
    }
    if let Some(ca) = &ca_file {
        trusted_roots(Some(ca)).map_err(verr)?;
    }
    let stall_timeout = Duration::from_secs_f64(stall_timeout);
    Ok((src_format, HttpOptions { ca_file, max_redirects, max_bytes, stall_timeout }))
}

impl DownloadOptions {
    /// Checks the options; a bad value is a `ValueError` of the call, not of `wait()`.
    fn request(self) -> PyResult<DownloadRequest> {
        let (src_format, http) = http_options(
            &self.url,
            self.src_format.as_deref(),
            self.ca_file,
            self.max_redirects,
            self.max_bytes,
            self.stall_timeout,
        )?;
        if self.threads == Some(0) {
            return Err(PyValueError::new_err("threads must be at least 1"));
        }
        Ok(DownloadRequest {
            url: self.url,
            dst: self.dst,
            src_format,
            checksum: parse_file_checksum(self.checksum)?,
            http,
            target_is_zero: self.target_is_zero,
            overwrite: self.overwrite,
            threads: self.threads.unwrap_or_else(default_threads),
        })
    }

    fn start(self) -> PyResult<Job> {
        let req = self.request()?;
        let inner = job::Job::spawn("spcs-download", move |ctl| fetch(&req, ctl))
            .map_err(|e| DataMoverError::new_err(format!("cannot start the download thread: {e}")))?;
        Ok(Job { inner })
    }
}

/// Declares a Python function taking the download keywords, seen by its body as the
/// `DownloadOptions` named by the second identifier.
macro_rules! download_function {
    ($(#[$attr:meta])* fn $name:ident($py:ident, $opts:ident) -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[pyfunction]
        #[pyo3(signature = (url, dst, *, src_format=None, checksum=None, ca_file=None, max_redirects=5,
                            max_bytes=None, stall_timeout=30.0, target_is_zero=false, overwrite=false,
                            threads=None))]
        #[allow(clippy::too_many_arguments)]
        fn $name(
            $py: Python<'_>,
            url: String,
            dst: PathBuf,
            src_format: Option<String>,
            checksum: Option<(String, String)>,
            ca_file: Option<PathBuf>,
            max_redirects: u32,
            max_bytes: Option<u64>,
            stall_timeout: f64,
            target_is_zero: bool,
            overwrite: bool,
            threads: Option<usize>,
        ) -> $ret {
            let $opts = DownloadOptions {
                url,
                dst,
                src_format,
                checksum,
                ca_file,
                max_redirects,
                max_bytes,
                stall_timeout,
                target_is_zero,
                overwrite,
                threads,
            };
            $body
        }
    };
}

download_function! {
    /// Starts downloading `url` into `dst` (always raw) and returns its `Job`.
    fn start_download(_py, options) -> PyResult<Job> {
        options.start()
    }
}

download_function! {
    /// Downloads `url` into `dst` (always raw) and returns the stats. Ctrl-C cancels it.
    fn download(py, options) -> PyResult<ConvertStats> {
        let job = options.start()?;
        job.finish(py)
    }
}

/// Describes an image like `qemu-img info`; with `checksum`, also digests the virtual disk.
/// `confine_to` as for `start_convert`.
#[pyfunction]
#[pyo3(signature = (path, *, checksum=None, src_format=None, backing_chain_limit=16, confine_to=None,
                    src_passphrase=None))]
fn info(
    py: Python<'_>,
    path: PathBuf,
    checksum: Option<String>,
    src_format: Option<String>,
    backing_chain_limit: u32,
    confine_to: Option<PathBuf>,
    src_passphrase: Option<Bound<'_, PyAny>>,
) -> PyResult<ImageInfo> {
    let pass = to_passphrase("src_passphrase", src_passphrase.as_ref())?.map(Arc::new);
    let checksum = parse_checksum(checksum)?;
    let format =
        src_format.as_deref().map(Format::parse).transpose().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let ctl = Control::default();
    let r = py
        .detach(|| inspect::info_with(&path, format, checksum, backing_chain_limit, confine_to.as_deref(), pass, &ctl));
    Ok(ImageInfo::from(r.map_err(|e| to_pyerr(py, &e))?))
}

/// Describes the image at `url` (its format and virtual size, to size a destination before
/// `download`) from the first bytes of the file: a range request or two, never its body.
/// The keywords and errors are `download`'s.
#[pyfunction]
#[pyo3(signature = (url, *, src_format=None, ca_file=None, max_redirects=5, max_bytes=None, stall_timeout=30.0))]
fn url_info(
    py: Python<'_>,
    url: String,
    src_format: Option<String>,
    ca_file: Option<PathBuf>,
    max_redirects: u32,
    max_bytes: Option<u64>,
    stall_timeout: f64,
) -> PyResult<ImageInfo> {
    let (format, http) = http_options(&url, src_format.as_deref(), ca_file, max_redirects, max_bytes, stall_timeout)?;
    let r = py.detach(|| describe_url(&url, format, &http));
    Ok(ImageInfo::from(r.map_err(|e| to_pyerr(py, &e))?))
}

/// Writes a LUKS1 header (aes-xts-plain64, 512-bit key, sha256, key slot 0 opened by
/// `passphrase`) at the start of an existing file or block device without touching its
/// payload, like `cryptsetup luksFormat --type luks1`. Returns the volume's UUID.
#[pyfunction]
#[pyo3(signature = (path, passphrase, *, iter_time_ms=2000))]
fn luks_format(py: Python<'_>, path: PathBuf, passphrase: Bound<'_, PyAny>, iter_time_ms: u32) -> PyResult<String> {
    check_iter_time(iter_time_ms)?;
    let Some(p) = to_passphrase("passphrase", Some(&passphrase))? else {
        return Err(PyValueError::new_err("passphrase must not be empty"));
    };
    let enc = Encrypt { passphrase: Arc::new(p), iter_time_ms };
    let r = py.detach(|| luks::format_volume(&path, &enc));
    let header = r.map_err(|e| to_pyerr(py, &e))?;
    Ok(header.uuid)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<ConvertStats>()?;
    m.add_class::<Progress>()?;
    m.add_class::<ImageInfo>()?;
    m.add_class::<Job>()?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(start_convert, m)?)?;
    m.add_function(wrap_pyfunction!(download, m)?)?;
    m.add_function(wrap_pyfunction!(start_download, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(url_info, m)?)?;
    m.add_function(wrap_pyfunction!(luks_format, m)?)?;
    m.add("DataMoverError", py.get_type::<DataMoverError>())?;
    m.add("SourceError", py.get_type::<SourceError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("BadPassphrase", py.get_type::<BadPassphrase>())?;
    m.add("TargetTooSmall", py.get_type::<TargetTooSmall>())?;
    m.add("TargetExists", py.get_type::<TargetExists>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    m.add("NoSpace", py.get_type::<NoSpace>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
