//! HTTP(S) sources: a blocking client (ureq on rustls) with bounded redirects, the host's trust
//! store or a given CA bundle, a per-read stall timeout and a shutdown that interrupts a
//! blocked read (cancel). `Remote` is an opened file: its length and validators from the
//! first response, range reads (`ReadAt`, for image metadata), and the `Stream` of its body
//! that resumes a dropped connection (`stream.rs`).

mod client;
mod stream;
mod url;

pub use client::{trusted_roots, Client, HttpOptions, RangeReader, Remote};
pub use stream::{open, Stream};
pub use url::Url;
