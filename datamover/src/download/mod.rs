//! Direct download: an image at an HTTP(S) URL streamed into a raw destination, with no copy
//! of the file on the host. A raw file is one GET written as it arrives. A qcow2 image's
//! header and tables are read first (from the start of the body, range requests for the
//! rest), then the body is read once in file order and each data cluster written to its
//! virtual offset (`plan`, `engine`). The file's checksum is computed in the same pass.
//! `url_info` describes the image at a URL from its first bytes, for sizing a destination.

mod engine;
mod input;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::digest::DigestKind;
use crate::error::{Error, Kind, Result};
use crate::http::{self, Client, HttpOptions, RangeReader, Remote, Url};
use crate::image::{Description, Format, Layer, ReadAt};
use crate::info::Info;
use crate::pipeline::{Control, Stats};
use crate::qcow2::{self, reader::Qcow2Layer};
use crate::target::{Destination, TargetOptions};

use engine::{Run, Tallies};
use input::{HeadOrRange, Input, HEAD};
use plan::Plan;

#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub url: String,
    pub dst: PathBuf,
    /// None: qcow2 if the file starts with its magic, else raw.
    pub src_format: Option<Format>,
    /// The expected digest of the file (lowercase hex).
    pub checksum: Option<(DigestKind, String)>,
    pub http: HttpOptions,
    pub target_is_zero: bool,
    pub overwrite: bool,
    pub threads: usize,
}

/// The format of the file whose first bytes are `head`: `src_format`, else probed.
fn format_of(src_format: Option<Format>, head: &[u8]) -> Format {
    match src_format {
        Some(f) => f,
        None if head.starts_with(&qcow2::MAGIC) => Format::Qcow2,
        None => Format::Raw,
    }
}

/// Parses a qcow2 image's header, from `head` (the start of the file) or with range
/// requests, refusing what a URL cannot have (an external data file is refused by the
/// parser itself). Returns the header and the reader of the image's metadata.
fn qcow2_header(remote: &Arc<Remote>, head: &Arc<Vec<u8>>, name: &Path) -> Result<(qcow2::Header, HeadOrRange)> {
    let mut meta = HeadOrRange::new(head.clone(), remote.len, RangeReader(remote.clone()));
    let header = qcow2::Header::parse(name, remote.len, |buf, at| meta.read_at(buf, at))?;
    if let Some(b) = &header.backing_file {
        return Err(Error::format(
            name,
            format!("the image has a backing file ({b:?}); a download has no backing chain"),
        ));
    }
    if header.crypto.is_some() {
        return Err(Error::format(name, "the image is encrypted; encrypted images cannot be downloaded"));
    }
    Ok((header, meta))
}

/// Reads a qcow2 image's header and tables into a plan.
fn qcow2_plan(remote: &Arc<Remote>, head: &Arc<Vec<u8>>, name: &Path) -> Result<Plan> {
    let (header, meta) = qcow2_header(remote, head, name)?;
    let mut layer = Qcow2Layer::open_with(0, name, remote.len, Box::new(meta), None, header, None)?;
    Plan::of_layer(&mut layer as &mut dyn Layer, remote.len)
}

/// What `url_info` reads of the start of the file: a qcow2 header with its extensions (the
/// first cluster) for clusters up to 64 KiB, qemu-img's default; larger clusters take one
/// range request more.
pub const PROBE: u64 = 64 << 10;

/// Describes the image at `url` as `info::info` describes a file, without reading its body:
/// one GET of its first `PROBE` bytes (the length from Content-Range or Content-Length;
/// probing and a qcow2 header come from them), a range request for the rest of the first
/// cluster if larger. Refuses what `download` refuses, with the same errors.
pub fn url_info(url: &str, src_format: Option<Format>, opts: &HttpOptions) -> Result<Info> {
    let url = Url::parse(url)?;
    let client = Client::new(&url, opts)?;
    let name = PathBuf::from(&url.shown);
    let (remote, head) = Remote::open_head(&client, &url, opts, PROBE)?;
    let head = Arc::new(head);
    let (format, virtual_size, description) = match format_of(src_format, &head) {
        Format::Qcow2 => {
            let (header, _) = qcow2_header(&remote, &head, &name)?;
            (Format::Qcow2, header.size, header.describe())
        }
        f => (f, remote.len, Description::default()),
    };
    Ok(Info::described(format, virtual_size, remote.len, description))
}

/// Shuts the client down once the copy is stopped (cancel or failure), so that a read
/// blocked on the network returns within the poll interval.
fn watchdog(client: &Client, ctl: &Control, abort: &AtomicBool, finished: &AtomicBool) {
    while !finished.load(Ordering::Relaxed) {
        if ctl.cancel.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) {
            client.shutdown();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Downloads `req.url` into `req.dst` (raw), checks its checksum, commits or cleans up.
pub fn download(req: &DownloadRequest, ctl: &Control) -> Result<Stats> {
    let url = Url::parse(&req.url)?;
    let client = Client::new(&url, &req.http)?;
    let (abort, finished) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        s.spawn(|| watchdog(&client, ctl, &abort, &finished));
        let r = fetch(req, &url, &client, ctl, &abort);
        finished.store(true, Ordering::Relaxed);
        match r {
            // What a cancel's shutdown made fail is the cancel.
            Err(e) if ctl.cancel.load(Ordering::Relaxed) && e.kind != Kind::Cancelled => {
                Err(Error { target_partial: e.target_partial, ..Error::cancelled() })
            }
            r => r,
        }
    })
}

fn fetch(req: &DownloadRequest, url: &Url, client: &Client, ctl: &Control, abort: &AtomicBool) -> Result<Stats> {
    let start = Instant::now();
    let name = PathBuf::from(&url.shown);
    let (remote, stream) = http::open(client, url, &req.http)?;
    ctl.total.store(remote.len, Ordering::Relaxed);
    let mut head = vec![0u8; remote.len.min(HEAD) as usize];
    let mut input = Input::new(stream, remote.len);
    // In pieces, so that progress moves on a slow link.
    for (i, piece) in head.chunks_mut(256 << 10).enumerate() {
        let at = (i * (256 << 10)) as u64;
        input.read(piece, at, &|| ctl.cancel.load(Ordering::Relaxed))?;
        ctl.done.store(at + piece.len() as u64, Ordering::Relaxed);
    }
    input.set_head(head);
    let plan = match format_of(req.src_format, input.head()) {
        Format::Qcow2 => qcow2_plan(&remote, input.head(), &name)?,
        _ => Plan::raw(remote.len),
    };
    let opts = TargetOptions {
        format: Format::Raw,
        compression: None,
        target_is_zero: req.target_is_zero,
        direct: None,
        cluster_size: 65536,
        overwrite: req.overwrite,
        encryption: None,
    };
    let dest = Destination::prepare(&req.dst, &opts, plan.virtual_size, &[])?;
    if ctl.cancel.load(Ordering::Relaxed) {
        return Err(dest.abandon(Error::cancelled()));
    }
    let tallies = Tallies::default();
    let run = Run {
        ctl,
        target: dest.target.as_ref(),
        name: &name,
        plan: &plan,
        digest: req.checksum.as_ref().map(|c| c.0),
        threads: req.threads,
        zero_holes: !req.target_is_zero && dest.in_place_target(),
        tallies: &tallies,
        abort,
    };
    if !run.zero_holes {
        // Left as they are: the target reads as zeros there already.
        tallies.skipped.fetch_add(plan.zeros.iter().map(|z| z.1).sum(), Ordering::Relaxed);
    }
    let digest = match engine::run(&run, &mut input) {
        Ok(d) => d,
        Err(e) => return Err(dest.abandon(e)),
    };
    if let (Some((kind, want)), Some(got)) = (&req.checksum, &digest) {
        if want != got {
            let e = Error::new(
                Kind::Format,
                format!("checksum mismatch: expected {} {want}, the file has {got}", kind.name()),
            )
            .at(&name);
            return Err(dest.abandon(e));
        }
    }
    let meta = dest.commit()?;
    ctl.done.store(remote.len, Ordering::Relaxed);
    Ok(Stats {
        bytes_read: input.position(),
        bytes_written: tallies.written.load(Ordering::Relaxed) + meta,
        bytes_skipped: tallies.skipped.load(Ordering::Relaxed),
        virtual_size: plan.virtual_size,
        seconds: start.elapsed().as_secs_f64(),
        checksum: digest,
    })
}
