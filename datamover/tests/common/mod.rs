//! Helpers shared by the integration tests: temp dirs, a seeded PRNG, synthetic images.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use _datamover::codec::Codec;
use _datamover::digest::DigestKind;
use _datamover::image::Format;
use _datamover::pipeline::{convert, Control, Request, Stats};
use _datamover::target::TargetOptions;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("spcs-dm-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A raw image of `size` bytes mixing text, written zeros, random bytes and holes.
pub fn make_raw(path: &Path, size: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut data = vec![0u8; size as usize];
    let mut at = 0usize;
    while at < data.len() {
        let run = (4096 + rng.below(200_000)) as usize;
        let end = (at + run).min(data.len());
        match rng.below(4) {
            0 => {
                for b in &mut data[at..end] {
                    *b = b"0123456789abcdef"[(rng.next() >> 60) as usize];
                }
            }
            1 => {
                for b in &mut data[at..end] {
                    *b = rng.next() as u8;
                }
            }
            _ => {}
        }
        at = end;
    }
    std::fs::write(path, &data).expect("write raw image");
}

pub fn have_qemu() -> bool {
    Command::new("qemu-img").arg("--version").output().is_ok_and(|o| o.status.success())
}

pub fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().expect("run qemu-img")
}

pub fn request(src: &Path, dst: &Path, format: Format, compression: Option<Codec>) -> Request {
    Request {
        src: src.to_path_buf(),
        dst: Some(dst.to_path_buf()),
        src_format: None,
        target: TargetOptions {
            format,
            compression,
            target_is_zero: false,
            direct: None,
            cluster_size: 65536,
            overwrite: false,
            encryption: None,
        },
        checksum: Some(DigestKind::Sha256),
        chain_limit: 16,
        confine_to: None,
        threads: 3,
        src_passphrase: None,
    }
}

pub fn run(req: &Request) -> _datamover::error::Result<Stats> {
    convert(req, &Control::default())
}
