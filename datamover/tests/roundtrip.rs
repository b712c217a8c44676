//! Writer/reader round trips through the public pipeline, judged by our own digest and,
//! when qemu-img is installed, by `qemu-img compare` and `qemu-img check`.

mod common;

use _datamover::codec::Codec;
use _datamover::image::Format;
use common::*;

fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn raw_to_qcow2_to_raw_keeps_contents() {
    let d = TempDir::new("rt");
    let raw = d.path("src.raw");
    make_raw(&raw, 9 * 1024 * 1024 + 512 * 3, 7);
    let want = sha256_file(&raw);
    for (i, (cs, comp)) in [
        (65536u64, None),
        (512, None),
        (2 << 20, None),
        (65536, Some(Codec::Zlib)),
        (4096, Some(Codec::Zstd)),
        (2 << 20, Some(Codec::Zstd)),
    ]
    .into_iter()
    .enumerate()
    {
        let q = d.path(&format!("mid{i}.qcow2"));
        let mut req = request(&raw, &q, Format::Qcow2, comp);
        req.target.cluster_size = cs;
        let s = run(&req).expect("raw -> qcow2");
        assert_eq!(s.checksum.as_deref(), Some(want.as_str()), "digest of the source, cluster {cs} {comp:?}");
        let back = d.path(&format!("back{i}.raw"));
        let s2 = run(&request(&q, &back, Format::Raw, None)).expect("qcow2 -> raw");
        assert_eq!(s2.checksum.as_deref(), Some(want.as_str()));
        assert_eq!(sha256_file(&back), want, "bytes after the round trip, cluster {cs} {comp:?}");
        if have_qemu() {
            let c = qemu_img(&["check", q.to_str().unwrap_or_default()]);
            assert!(c.status.success(), "qemu-img check: {}", String::from_utf8_lossy(&c.stdout));
            let c = qemu_img(&["compare", "-q", raw.to_str().unwrap_or_default(), q.to_str().unwrap_or_default()]);
            assert!(c.status.success(), "qemu-img compare differs for cluster {cs} {comp:?}");
        }
    }
}

#[test]
fn empty_and_tiny_images() {
    let d = TempDir::new("tiny");
    for size in [0u64, 1, 511, 512, 4097] {
        let raw = d.path(&format!("s{size}.raw"));
        make_raw(&raw, size, size + 3);
        let q = d.path(&format!("s{size}.qcow2"));
        run(&request(&raw, &q, Format::Qcow2, Some(Codec::Zlib))).expect("to qcow2");
        let back = d.path(&format!("s{size}.back"));
        let s = run(&request(&q, &back, Format::Raw, None)).expect("to raw");
        assert_eq!(s.virtual_size, size.next_multiple_of(512));
        let a = std::fs::read(&raw).expect("read");
        let b = std::fs::read(&back).expect("read");
        assert_eq!(&b[..a.len()], &a[..]);
        assert!(b[a.len()..].iter().all(|&x| x == 0));
        if have_qemu() {
            let c = qemu_img(&["check", q.to_str().unwrap_or_default()]);
            assert!(c.status.success(), "qemu-img check of {size}-byte image: {}", String::from_utf8_lossy(&c.stdout));
        }
    }
}
