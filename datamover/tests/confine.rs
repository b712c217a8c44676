//! Confined sources (`confine_to`): backing chains built by qemu-img whose names point out of
//! the allowed directory are refused by open, info and convert; names that stay inside work.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use _datamover::error::{Error, Kind};
use _datamover::image::Format;
use _datamover::info::info;
use _datamover::pipeline::Control;
use _datamover::source::open_source;
use common::*;

const SECRET: &[u8] = b"spcs-test-secret-token-0123456789\n";

/// `root/` (the allowed directory, with `root/sub/base.raw`) and `outside/secret.raw`.
struct Layout {
    d: TempDir,
}

impl Layout {
    fn new(tag: &str) -> Layout {
        let d = TempDir::new(tag);
        std::fs::create_dir_all(d.path("root/sub")).expect("mkdir");
        std::fs::create_dir_all(d.path("outside")).expect("mkdir");
        make_raw(&d.path("root/sub/base.raw"), 1 << 20, 5);
        std::fs::write(d.path("outside/secret.raw"), SECRET.repeat(1 << 15)).expect("secret");
        Layout { d }
    }
    fn root(&self) -> PathBuf {
        self.d.path("root")
    }
    fn at(&self, rel: &str) -> PathBuf {
        self.d.path(rel)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A 1 MiB qcow2 at `path` whose header names `name` (format `fmt`), written without
/// qemu-img opening it (`rebase -u`), so hostile names need not exist.
fn overlay(path: &Path, name: &str, fmt: &str) {
    let o = qemu_img(&["create", "-f", "qcow2", s(path), "1M"]);
    assert!(o.status.success(), "create: {}", String::from_utf8_lossy(&o.stderr));
    let o = qemu_img(&["rebase", "-u", "-f", "qcow2", "-b", name, "-F", fmt, s(path)]);
    assert!(o.status.success(), "rebase: {}", String::from_utf8_lossy(&o.stderr));
}

fn convert_confined(src: &Path, dst: &Path, root: &Path) -> _datamover::error::Result<String> {
    let mut req = request(src, dst, Format::Raw, None);
    req.confine_to = Some(root.to_path_buf());
    run(&req).map(|st| st.checksum.unwrap_or_default())
}

fn info_confined(path: &Path, root: &Path) -> _datamover::error::Result<_datamover::info::Info> {
    info(path, None, None, 16, Some(root), &Control::default())
}

/// open, info and convert all refuse `top` with a format error naming `name`, `of` and `why`.
fn assert_refused(l: &Layout, top: &Path, of: &Path, name: &str, why: &str) {
    let root = l.root();
    let want = format!("{}: backing file {name:?} is outside {} ({why})", of.display(), root.display());
    let check = |what: &str, e: Error| {
        assert_eq!(e.kind, Kind::Format, "{what}: {e}");
        assert_eq!(e.to_string(), want, "{what}");
        assert!(!e.to_string().contains("spcs-test-secret"), "{what}");
    };
    check("open", open_source(top, None, 16, Some(&root)).err().expect("open refused"));
    check("info", info_confined(top, &root).expect_err("info refused"));
    let dst = l.at("out.raw");
    check("convert", convert_confined(top, &dst, &root).expect_err("convert refused"));
    assert!(!dst.exists(), "a refused convert must not create the destination");
    let leftovers: Vec<String> = l.d.entries().into_iter().filter(|e| e.starts_with("out.raw")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn hostile_backing_names_are_refused() {
    if !have_qemu() {
        eprintln!("qemu-img not installed: skipped");
        return;
    }
    let l = Layout::new("hostile");
    let secret = l.at("outside/secret.raw");
    symlink(&secret, l.at("root/leads-out.raw")).expect("symlink");
    symlink(l.at("outside"), l.at("root/outdir")).expect("dir symlink");
    let cases = [
        (s(&secret).to_string(), "absolute backing file names are not allowed here"),
        ("../outside/secret.raw".to_string(), "\"..\" components are not allowed here"),
        ("sub/../../outside/secret.raw".to_string(), "\"..\" components are not allowed here"),
        ("leads-out.raw".to_string(), "it resolves outside through a symlink"),
        ("outdir/secret.raw".to_string(), "it resolves outside through a symlink"),
    ];
    for (i, (name, why)) in cases.iter().enumerate() {
        let top = l.at(&format!("root/t{i}.qcow2"));
        overlay(&top, name, "raw");
        assert_refused(&l, &top, &top, name, why);
        // Without confinement qemu-img's behaviour stays: the name is followed.
        let dst = l.at(&format!("free{i}.raw"));
        let mut req = request(&top, &dst, Format::Raw, None);
        req.checksum = None;
        run(&req).unwrap_or_else(|e| panic!("unconfined {name}: {e}"));
        assert_eq!(std::fs::read(&dst).expect("read")[..SECRET.len()], *SECRET, "{name}");
        assert_eq!(
            info(&top, None, None, 16, None, &Control::default()).expect("info").backing_file.as_deref(),
            Some(name.as_str())
        );
    }
}

#[test]
fn names_that_stay_inside_are_followed() {
    if !have_qemu() {
        eprintln!("qemu-img not installed: skipped");
        return;
    }
    let l = Layout::new("inside");
    let root = l.root();
    let base = l.at("root/sub/base.raw");
    symlink("sub/base.raw", l.at("root/alias.raw")).expect("symlink");
    symlink("sub", l.at("root/subdir")).expect("dir symlink");
    for (i, name) in ["sub/base.raw", "alias.raw", "subdir/base.raw", "./sub/base.raw"].into_iter().enumerate() {
        let top = l.at(&format!("root/t{i}.qcow2"));
        overlay(&top, name, "raw");
        let got = info_confined(&top, &root).unwrap_or_else(|e| panic!("info {name}: {e}"));
        assert_eq!(got.backing_file.as_deref(), Some(name));
        let dst = l.at(&format!("out{i}.raw"));
        convert_confined(&top, &dst, &root).unwrap_or_else(|e| panic!("convert {name}: {e}"));
        assert_eq!(std::fs::read(&dst).expect("out"), std::fs::read(&base).expect("base"), "{name}");
    }
}

#[test]
fn every_level_of_the_chain_is_checked() {
    if !have_qemu() {
        eprintln!("qemu-img not installed: skipped");
        return;
    }
    let l = Layout::new("nested");
    let root = l.root();
    let top = l.at("root/top.qcow2");
    let mid = l.at("root/sub/mid.qcow2");
    overlay(&top, "sub/mid.qcow2", "qcow2");

    // The second-level name is resolved from mid's directory: one `..` would still be inside
    // the root, but is refused all the same.
    overlay(&mid, "../../outside/secret.raw", "raw");
    assert_refused(&l, &top, &mid, "../../outside/secret.raw", "\"..\" components are not allowed here");
    symlink(l.at("outside/secret.raw"), l.at("root/sub/escape.raw")).expect("symlink");
    overlay(&mid, "escape.raw", "raw");
    assert_refused(&l, &top, &mid, "escape.raw", "it resolves outside through a symlink");
    let abs = l.at("outside/secret.raw");
    overlay(&mid, s(&abs), "raw");
    assert_refused(&l, &top, &mid, s(&abs), "absolute backing file names are not allowed here");

    // A legit two-level chain inside the root.
    overlay(&mid, "base.raw", "raw");
    let dst = l.at("chain.raw");
    convert_confined(&top, &dst, &root).expect("confined chain");
    assert_eq!(std::fs::read(&dst).expect("out"), std::fs::read(l.at("root/sub/base.raw")).expect("base"));
}

#[test]
fn missing_backing_file_is_still_a_source_error() {
    if !have_qemu() {
        eprintln!("qemu-img not installed: skipped");
        return;
    }
    let l = Layout::new("missing");
    let top = l.at("root/top.qcow2");
    overlay(&top, "gone.raw", "raw");
    let e = info_confined(&top, &l.root()).expect_err("missing backing");
    assert_eq!(e.kind, Kind::Source, "{e}");
    assert_eq!(e.path.as_deref(), Some(l.at("root/gone.raw").as_path()));
    assert!(e.message.starts_with("cannot open") && e.message.contains("backing file of"), "{e}");
    // A dangling symlink is missing too, wherever it would have pointed.
    symlink(l.at("outside/nothing.raw"), l.at("root/dangling.raw")).expect("symlink");
    overlay(&top, "dangling.raw", "raw");
    assert_eq!(info_confined(&top, &l.root()).expect_err("dangling").kind, Kind::Source);
}

#[test]
fn external_data_file_is_refused_when_confined() {
    if !have_qemu() {
        eprintln!("qemu-img not installed: skipped");
        return;
    }
    let l = Layout::new("datafile");
    let top = l.at("root/ext.qcow2");
    let data = format!("data_file={}", s(&l.at("outside/secret.raw")));
    let o = qemu_img(&["create", "-f", "qcow2", "-o", &data, s(&top), "1M"]);
    assert!(o.status.success(), "create: {}", String::from_utf8_lossy(&o.stderr));
    for r in [info_confined(&top, &l.root()).map(|_| ()), convert_confined(&top, &l.at("o.raw"), &l.root()).map(|_| ())]
    {
        let e = r.expect_err("data file");
        assert_eq!(e.kind, Kind::Format);
        assert!(e.message.contains("external data file"), "{e}");
    }
    assert!(!l.at("o.raw").exists());
}
