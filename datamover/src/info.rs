//! `qemu-img info`-like inspection, optionally with a digest of the virtual disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::crypt::{Encryption, Passphrase};
use crate::digest::DigestKind;
use crate::error::{Error, Result};
use crate::image::{Description, Format};
use crate::pipeline::{convert, default_threads, Control, Request};
use crate::source::open_source;
use crate::target::TargetOptions;

#[derive(Debug, Clone)]
pub struct Info {
    pub format: Format,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub cluster_size: Option<u64>,
    pub compression: Option<&'static str>,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub compat: Option<String>,
    pub extended_l2: bool,
    pub dirty: bool,
    pub checksum: Option<String>,
    /// Read from the header alone: no passphrase needed.
    pub encryption: Option<Encryption>,
}

impl Info {
    /// The description of an image (no digest).
    pub fn described(format: Format, virtual_size: u64, actual_size: u64, d: Description) -> Info {
        Info {
            format,
            virtual_size,
            actual_size,
            cluster_size: d.cluster_size,
            compression: d.compression.map(|c| c.name()),
            backing_file: d.backing_file,
            backing_format: d.backing_format,
            compat: d.compat,
            extended_l2: d.extended_l2,
            dirty: d.dirty,
            checksum: None,
            encryption: d.encryption,
        }
    }
}

pub fn info(
    path: &Path,
    format: Option<Format>,
    checksum: Option<DigestKind>,
    chain_limit: u32,
    confine_to: Option<&Path>,
    ctl: &Control,
) -> Result<Info> {
    info_with(path, format, checksum, chain_limit, confine_to, None, ctl)
}

/// `info`; `passphrase` unlocks an encrypted image for the digest (the description itself
/// needs none).
pub fn info_with(
    path: &Path,
    format: Option<Format>,
    checksum: Option<DigestKind>,
    chain_limit: u32,
    confine_to: Option<&Path>,
    passphrase: Option<Arc<Passphrase>>,
    ctl: &Control,
) -> Result<Info> {
    let source = open_source(path, format, chain_limit, confine_to)?;
    let top = &source.files[0];
    let meta = top.file.metadata().map_err(|e| Error::source_io(path, "cannot stat", None, &e))?;
    let actual_size = if top.is_block { top.len } else { meta.blocks() * 512 };
    let mut out = Info::described(source.format, source.virtual_size, actual_size, source.description.clone());
    drop(source);
    if checksum.is_some() {
        let req = Request {
            src: path.to_path_buf(),
            dst: None,
            src_format: Some(out.format),
            target: TargetOptions {
                format: Format::Raw,
                compression: None,
                target_is_zero: true,
                direct: Some(false),
                cluster_size: 65536,
                overwrite: false,
                encryption: None,
            },
            checksum,
            chain_limit,
            confine_to: confine_to.map(Path::to_path_buf),
            threads: default_threads(),
            src_passphrase: passphrase,
        };
        out.checksum = convert(&req, ctl)?.checksum;
    }
    Ok(out)
}
