//! Sources: a chain of opened images and the mapping of the virtual disk onto their files.
//!
//! The planner asks the top layer to `map` a virtual range into `Piece`s (zero, plain bytes at
//! a host offset, or part of a compressed cluster; see `image`). Workers then execute the
//! pieces with positional reads, so the copy never walks metadata in the hot path. This module
//! only opens files and chains layers; the formats (`raw`, `qcow2`) implement the layers.

mod raw;

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::crypt::luks1;
use crate::crypt::{Encryption, Key, Passphrase};
use crate::error::{Error, Kind, Result};
use crate::image::{Description, DirectReads, Format, ImageFile, Layer};
use crate::luks::{self, LuksLayer};
use crate::qcow2::{self, reader::Qcow2Layer};
use crate::sys;

pub use raw::RawLayer;

pub struct Source {
    pub files: Arc<Vec<ImageFile>>,
    pub top: Box<dyn Layer>,
    pub virtual_size: u64,
    pub format: Format,
    pub description: Description,
}

/// Opens `path` read-only, refusing what cannot be an image (directory, missing, socket...).
pub fn open_image_file(path: &Path) -> Result<ImageFile> {
    open_named(path, path)
}

/// Opens `real` but names it `path` in errors and in the chain (backing names resolve
/// against the name an image was opened by, as in QEMU, not against its real location).
fn open_named(real: &Path, path: &Path) -> Result<ImageFile> {
    let meta = std::fs::metadata(real).map_err(|e| Error::source_io(path, "cannot open", None, &e))?;
    if meta.is_dir() {
        return Err(Error::new(Kind::Source, "is a directory, not a disk image").at(path));
    }
    let is_block = meta.file_type().is_block_device();
    if !meta.is_file() && !is_block {
        return Err(Error::new(Kind::Source, "is neither a regular file nor a block device").at(path));
    }
    let file = File::open(real).map_err(|e| Error::source_io(path, "cannot open", None, &e))?;
    let len = sys::file_size(&file).map_err(|e| Error::source_io(path, "cannot get size", None, &e))?;
    sys::advise_sequential(&file);
    Ok(ImageFile { file, path: path.to_path_buf(), len, is_block, direct: DirectReads::open(real) })
}

/// The directory a confined source may read from: the top image and every file of its
/// backing chain must really (symlinks followed) lie inside it.
#[derive(Debug, Clone)]
pub struct Confine {
    /// Canonical form, compared against canonical paths.
    root: PathBuf,
    /// As the caller wrote it, for messages.
    shown: PathBuf,
}

const ABSOLUTE: &str = "absolute backing file names are not allowed here";
const PARENT: &str = "\"..\" components are not allowed here";
const SYMLINK: &str = "it resolves outside through a symlink";

impl Confine {
    pub fn new(dir: &Path) -> Result<Confine> {
        let root = std::fs::canonicalize(dir)
            .map_err(|e| Error::invalid(format!("confine_to directory {}: {e}", dir.display())))?;
        if !root.is_dir() {
            return Err(Error::invalid(format!("confine_to {} is not a directory", dir.display())));
        }
        Ok(Confine { root, shown: dir.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn contains(&self, real: &Path) -> bool {
        real.starts_with(&self.root)
    }

    fn refuse(&self, origin: Origin<'_>, path: &Path, reason: &str) -> Error {
        match origin {
            Origin::Top => Error::format(path, format!("image is outside {} ({reason})", self.shown.display())),
            Origin::Backing { of, name } => {
                Error::format(of, format!("backing file {name:?} is outside {} ({reason})", self.shown.display()))
            }
        }
    }
}

/// Who asked for a file of the chain: the caller, or an image's backing file name.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Top,
    Backing { of: &'a Path, name: &'a str },
}

/// Reads the magic to tell qcow2 from raw (anything that is not qcow2 is raw, as in QEMU).
pub fn probe(img: &ImageFile) -> Result<Format> {
    let mut magic = [0u8; 4];
    let n = sys::pread_full(&img.file, &mut magic, 0)
        .map_err(|e| Error::source_io(&img.path, "read failed", Some(0), &e))?;
    Ok(if n == 4 && magic == qcow2::MAGIC { Format::Qcow2 } else { Format::Raw })
}

/// What to do with encrypted images of the chain.
#[derive(Debug, Clone, Copy)]
pub enum Unlock<'a> {
    /// Read their headers only (`info`): their layers map nothing.
    No,
    /// Unlock each with this passphrase; none given is `Kind::BadPassphrase`.
    With(Option<&'a Passphrase>),
}

struct ChainBuilder<'a> {
    files: Vec<ImageFile>,
    seen: HashSet<(u64, u64)>,
    limit: u32,
    confine: Option<Confine>,
    unlock: Unlock<'a>,
}

impl ChainBuilder<'_> {
    /// Reads the LUKS header at `base` (`len` bytes of header area, `raw`: a raw volume whose
    /// payload follows) and unlocks it when asked.
    fn luks(&self, img: &ImageFile, base: u64, len: u64, raw: bool) -> Result<(luks1::Header, Option<Key>)> {
        let header = if raw {
            luks::read_header(img)?
        } else {
            luks1::Header::read(&img.path, base, len, false, &mut |buf, at| sys::pread_full(&img.file, buf, at))?
        };
        let key = match self.unlock {
            Unlock::No => None,
            Unlock::With(p) => Some(luks::unlock(img, &header, base, p)?),
        };
        Ok((header, key))
    }

    /// Opens `path`; when confined, only once its real location is known to be inside, and
    /// checks again on the open file (a symlink swapped in between) before reading a byte.
    fn open_file(&self, path: &Path, origin: Origin<'_>) -> Result<ImageFile> {
        let Some(c) = &self.confine else {
            return open_image_file(path);
        };
        let real = std::fs::canonicalize(path).map_err(|e| Error::source_io(path, "cannot open", None, &e))?;
        if !c.contains(&real) {
            let reason = match origin {
                // The caller chose this path: showing where it leads is no leak.
                Origin::Top => format!("it resolves to {}", real.display()),
                Origin::Backing { .. } => SYMLINK.to_string(),
            };
            return Err(c.refuse(origin, path, &reason));
        }
        let img = open_named(&real, path)?;
        let landed_inside = match sys::fd_path(&img.file) {
            Ok(p) => c.contains(&p),
            // No /proc: at least require the very file that was checked.
            Err(_) => {
                let opened = img.file.metadata().map_err(|e| Error::source_io(path, "cannot stat", None, &e))?;
                std::fs::metadata(&real).is_ok_and(|m| (m.dev(), m.ino()) == (opened.dev(), opened.ino()))
            }
        };
        if !landed_inside {
            return Err(c.refuse(origin, path, SYMLINK));
        }
        Ok(img)
    }

    fn open(
        &mut self,
        path: &Path,
        format: Option<Format>,
        depth: u32,
        origin: Origin<'_>,
    ) -> Result<(Box<dyn Layer>, Format, Description)> {
        let img = self.open_file(path, origin)?;
        let meta = img.file.metadata().map_err(|e| Error::source_io(path, "cannot stat", None, &e))?;
        if !self.seen.insert((meta.dev(), meta.ino())) {
            return Err(Error::format(path, "backing chain has a cycle: this file appears twice"));
        }
        let format = match format {
            Some(f) => f,
            None => probe(&img)?,
        };
        let index = self.files.len();
        match format {
            Format::Raw => {
                let layer = RawLayer::new(index, &img)?;
                self.files.push(img);
                Ok((Box::new(layer), Format::Raw, Description::default()))
            }
            Format::Luks => {
                let (header, key) = self.luks(&img, 0, img.len, true)?;
                let layer = LuksLayer::new(index, &img, &header, key);
                self.files.push(img);
                let desc = Description { encryption: Some(header.describe(true)), ..Description::default() };
                Ok((Box::new(layer), Format::Luks, desc))
            }
            Format::Qcow2 => {
                let header = qcow2::Header::read(&img)?;
                let (key, encryption): (Option<Key>, Option<Encryption>) = match header.crypto {
                    Some((base, len)) => {
                        let (h, k) = self.luks(&img, base, len, false)?;
                        (k, Some(h.describe(false)))
                    }
                    None => (None, None),
                };
                let backing = match &header.backing_file {
                    None => None,
                    Some(name) => {
                        if depth >= self.limit {
                            return Err(Error::format(
                                path,
                                format!("backing chain is longer than the limit of {} images", self.limit),
                            ));
                        }
                        let bpath = resolve_backing(path, name, self.confine.as_ref())?;
                        let bfmt = match header.backing_format.as_deref() {
                            None => None,
                            Some(f) => Some(Format::parse(f).map_err(|_| {
                                Error::format(path, format!("backing file format {f:?} is not supported"))
                            })?),
                        };
                        let at = self.files.len();
                        self.files.push(img);
                        let origin = Origin::Backing { of: path, name };
                        let (layer, _, _) = self.open(&bpath, bfmt, depth + 1, origin).map_err(|mut e| {
                            if e.kind == Kind::Source && e.path.as_deref() == Some(bpath.as_path()) {
                                e.message = format!("{} (backing file of {})", e.message, path.display());
                            }
                            e
                        })?;
                        let desc = Description { encryption, ..header.describe() };
                        let mut top = Qcow2Layer::open(at, &self.files[at], header, Some(layer))?;
                        if let Some(k) = key {
                            top.set_key(k);
                        }
                        return Ok((Box::new(top), Format::Qcow2, desc));
                    }
                };
                let desc = Description { encryption, ..header.describe() };
                let mut layer = Qcow2Layer::open(index, &img, header, backing)?;
                if let Some(k) = key {
                    layer.set_key(k);
                }
                self.files.push(img);
                Ok((Box::new(layer), Format::Qcow2, desc))
            }
        }
    }
}

/// The path of backing file `name` of `image`. Confined, names that point elsewhere by
/// their spelling alone are refused here, before the file system is asked anything.
fn resolve_backing(image: &Path, name: &str, confine: Option<&Confine>) -> Result<PathBuf> {
    if name.starts_with("json:") || (name.contains("://") && !name.starts_with('/')) {
        return Err(Error::format(image, format!("backing file {name:?} is not a local path")));
    }
    let p = Path::new(name);
    if let Some(c) = confine {
        let origin = Origin::Backing { of: image, name };
        if p.is_absolute() {
            return Err(c.refuse(origin, image, ABSOLUTE));
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(c.refuse(origin, image, PARENT));
        }
    }
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    // Relative names are relative to the directory of the image that names them (QEMU's rule).
    Ok(image.parent().unwrap_or(Path::new(".")).join(p))
}

/// Opens `path` and its backing chain. With `confine_to`, every file of the chain must
/// really lie inside that directory, and backing names may be neither absolute nor use `..`.
pub fn open_source(path: &Path, format: Option<Format>, chain_limit: u32, confine_to: Option<&Path>) -> Result<Source> {
    open_source_with(path, format, chain_limit, confine_to, Unlock::No)
}

/// `open_source`, unlocking the encrypted images of the chain as `unlock` says (the same
/// passphrase for each of them).
pub fn open_source_with(
    path: &Path,
    format: Option<Format>,
    chain_limit: u32,
    confine_to: Option<&Path>,
    unlock: Unlock<'_>,
) -> Result<Source> {
    let confine = confine_to.map(Confine::new).transpose()?;
    let mut b = ChainBuilder { files: Vec::new(), seen: HashSet::new(), limit: chain_limit, confine, unlock };
    let (top, format, description) = b.open(path, format, 0, Origin::Top)?;
    let virtual_size = top.size();
    Ok(Source { files: Arc::new(b.files), top, virtual_size, format, description })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory holding `root/` (the confine directory) and `outside/`.
    struct Dirs(PathBuf);

    impl Dirs {
        fn new(tag: &str) -> Dirs {
            let d = std::env::temp_dir().join(format!("spcs-confine-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("root/sub")).expect("mkdir root");
            std::fs::create_dir_all(d.join("outside")).expect("mkdir outside");
            Dirs(d)
        }
        fn root(&self) -> PathBuf {
            self.0.join("root")
        }
        fn confine(&self) -> Confine {
            Confine::new(&self.root()).expect("confine dir")
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn refused(image: &Path, name: &str, c: &Confine) -> Error {
        match resolve_backing(image, name, Some(c)) {
            Ok(p) => panic!("{name:?} resolved to {}", p.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn absolute_names_are_refused_only_when_confined() {
        let d = Dirs::new("abs");
        let img = d.root().join("t.qcow2");
        let e = refused(&img, "/etc/passwd", &d.confine());
        assert_eq!(e.kind, Kind::Format);
        assert_eq!(e.path.as_deref(), Some(img.as_path()));
        assert_eq!(e.message, format!("backing file \"/etc/passwd\" is outside {} ({ABSOLUTE})", d.root().display()));
        assert_eq!(resolve_backing(&img, "/etc/passwd", None).expect("unconfined"), Path::new("/etc/passwd"));
    }

    #[test]
    fn parent_components_are_refused_even_when_they_stay_inside() {
        let d = Dirs::new("dotdot");
        let img = d.root().join("sub/t.qcow2");
        for name in ["../outside.raw", "../../outside/secret", "a/../b.raw", "./.."] {
            let e = refused(&img, name, &d.confine());
            assert_eq!(e.kind, Kind::Format, "{name}");
            assert!(e.message.starts_with(&format!("backing file {name:?} is outside")), "{}", e.message);
            assert!(e.message.ends_with(&format!("({PARENT})")), "{}", e.message);
        }
        // Unconfined, qemu-img's rule: relative to the naming image's directory.
        assert_eq!(
            resolve_backing(&img, "../outside.raw", None).expect("unconfined"),
            d.root().join("sub/../outside.raw")
        );
    }

    #[test]
    fn plain_relative_names_resolve_next_to_the_image() {
        let d = Dirs::new("rel");
        let img = d.root().join("sub/t.qcow2");
        for name in ["base.raw", "deeper/base.raw", "./base.raw", "a..b"] {
            assert_eq!(resolve_backing(&img, name, Some(&d.confine())).expect(name), d.root().join("sub").join(name));
        }
    }

    #[test]
    fn protocol_names_are_refused_either_way() {
        let d = Dirs::new("proto");
        let img = d.root().join("t.qcow2");
        for name in ["json:{\"file.filename\":\"/etc/passwd\"}", "nbd://host/x"] {
            for c in [None, Some(d.confine())] {
                let e = resolve_backing(&img, name, c.as_ref()).expect_err(name);
                assert_eq!(e.kind, Kind::Format);
                assert!(e.message.contains("is not a local path"), "{}", e.message);
            }
        }
    }

    #[test]
    fn confine_directory_must_exist_and_be_a_directory() {
        let d = Dirs::new("dir");
        let e = Confine::new(&d.0.join("missing")).expect_err("missing dir");
        assert_eq!(e.kind, Kind::InvalidArgument);
        let f = d.root().join("file");
        std::fs::write(&f, b"x").expect("write");
        assert_eq!(Confine::new(&f).expect_err("a file").kind, Kind::InvalidArgument);
        // Through a symlink, the real directory is what counts.
        std::os::unix::fs::symlink(d.root(), d.0.join("alias")).expect("symlink");
        let c = Confine::new(&d.0.join("alias")).expect("alias");
        assert_eq!(c.root(), std::fs::canonicalize(d.root()).expect("canonical"));
    }

    #[test]
    fn top_image_is_checked_after_following_symlinks() {
        let d = Dirs::new("top");
        let secret = d.0.join("outside/secret.raw");
        std::fs::write(&secret, vec![7u8; 4096]).expect("write secret");
        let out = d.root().join("leads-out.raw");
        std::os::unix::fs::symlink(&secret, &out).expect("symlink out");
        let e = open_source(&out, Some(Format::Raw), 16, Some(&d.root())).err().expect("refused");
        assert_eq!(e.kind, Kind::Format);
        assert_eq!(e.path.as_deref(), Some(out.as_path()));
        assert!(e.message.starts_with(&format!("image is outside {}", d.root().display())), "{}", e.message);
        // The same file named from outside the directory is refused too.
        let e = open_source(&secret, Some(Format::Raw), 16, Some(&d.root())).err().expect("refused");
        assert_eq!(e.kind, Kind::Format);

        let real = d.root().join("sub/real.raw");
        std::fs::write(&real, vec![1u8; 4096]).expect("write");
        let inside = d.root().join("stays-inside.raw");
        std::os::unix::fs::symlink("sub/real.raw", &inside).expect("symlink in");
        let s = open_source(&inside, Some(Format::Raw), 16, Some(&d.root())).expect("inside");
        assert_eq!(s.virtual_size, 4096);
        assert_eq!(s.files[0].path, inside, "errors keep naming the path as given");
        // Unconfined, today's behaviour: symlinks anywhere are followed.
        assert_eq!(open_source(&out, Some(Format::Raw), 16, None).expect("unconfined").virtual_size, 4096);
    }

    #[test]
    fn missing_top_image_is_a_source_error() {
        let d = Dirs::new("missing");
        let p = d.root().join("nope.qcow2");
        let e = open_source(&p, None, 16, Some(&d.root())).err().expect("missing");
        assert_eq!(e.kind, Kind::Source);
        assert!(e.message.starts_with("cannot open"), "{}", e.message);
        assert_eq!(e.path.as_deref(), Some(p.as_path()));
    }
}
