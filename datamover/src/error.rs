//! The mover's error type: one kind per Python exception, with the file and offset it concerns.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, in the terms the caller acts on (each maps to one Python exception).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The source cannot be opened or read (missing, a directory, read error, short file).
    Source,
    /// The source image is malformed, or uses a feature the mover does not support.
    Format,
    /// An encrypted image: no key slot opens with the passphrase given (or none was given).
    BadPassphrase,
    /// An existing in-place target is smaller than the virtual size.
    TargetTooSmall,
    /// The destination exists and may not be replaced.
    TargetExists,
    /// The copy was cancelled.
    Cancelled,
    /// Writing, flushing or renaming the target failed.
    Io,
    /// The target ran out of space (ENOSPC, EDQUOT).
    NoSpace,
    /// The arguments do not make sense (unknown format, bad cluster size, ...).
    InvalidArgument,
    /// A bug in the mover (a caught panic).
    Internal,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub path: Option<PathBuf>,
    pub offset: Option<u64>,
    pub errno: Option<i32>,
    pub message: String,
    /// The copy wrote into an existing target (block device or in-place file) before failing.
    pub target_partial: bool,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, path: None, offset: None, errno: None, message: message.into(), target_partial: false }
    }

    pub fn at(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        Error::new(Kind::Format, message).at(path)
    }

    pub fn source_io(path: &Path, what: &str, offset: Option<u64>, err: &io::Error) -> Self {
        let mut e = Error::new(Kind::Source, format!("{what}: {err}")).at(path);
        e.offset = offset;
        e.errno = err.raw_os_error();
        e
    }

    /// A failure on the target: ENOSPC/EDQUOT become `NoSpace`, anything else `Io`.
    pub fn target_io(path: &Path, what: &str, offset: Option<u64>, err: &io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Kind::NoSpace,
            _ => Kind::Io,
        };
        let mut e = Error::new(kind, format!("{what}: {err}")).at(path);
        e.offset = offset;
        e.errno = err.raw_os_error();
        e
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(Kind::InvalidArgument, message)
    }

    pub fn cancelled() -> Self {
        Error::new(Kind::Cancelled, "copy cancelled")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        f.write_str(&self.message)?;
        if let Some(o) = self.offset {
            write!(f, " (at offset {o})")?;
        }
        if self.target_partial {
            f.write_str("; the target holds partial data")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
