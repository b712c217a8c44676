//! Property test: random corruptions of real images never panic, never leave files behind,
//! and always end in a typed error or a successful copy.
//!
//! Runs for SPCS_FUZZ_SECONDS (default 20 s) with a seed from SPCS_FUZZ_SEED (printed, so a
//! failure can be replayed).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use _datamover::codec::Codec;
use _datamover::error::Kind;
use _datamover::image::Format;
use _datamover::pipeline::Control;
use common::*;

/// Largest virtual size a mutant may claim before the copy is skipped (info still runs).
const MAX_COPY: u64 = 256 << 20;

fn seeds(d: &TempDir) -> Vec<(PathBuf, Vec<u8>)> {
    let raw = d.path("seed.raw");
    make_raw(&raw, 3 * 1024 * 1024 + 4096, 99);
    let mut out = Vec::new();
    let ours: [(u64, Option<Codec>); 4] =
        [(65536, None), (65536, Some(Codec::Zlib)), (4096, Some(Codec::Zstd)), (512, None)];
    for (i, (cs, comp)) in ours.into_iter().enumerate() {
        let q = d.path(&format!("seed{i}.qcow2"));
        let mut req = request(&raw, &q, Format::Qcow2, comp);
        req.target.cluster_size = cs;
        req.checksum = None;
        run(&req).expect("seed image");
        out.push(q);
    }
    if have_qemu() {
        let r = raw.to_str().unwrap_or_default().to_string();
        let specs: [(&str, &[&str]); 4] = [
            ("q-v2.qcow2", &["-o", "compat=0.10,cluster_size=4096"]),
            ("q-extl2.qcow2", &["-o", "extended_l2=on,cluster_size=65536"]),
            ("q-zstd.qcow2", &["-c", "-o", "compression_type=zstd,cluster_size=16384"]),
            ("q-zlib.qcow2", &["-c"]),
        ];
        for (name, opts) in specs {
            let p = d.path(name);
            let mut args = vec!["convert", "-O", "qcow2"];
            args.extend_from_slice(opts);
            let ps = p.to_str().unwrap_or_default().to_string();
            args.push(&r);
            args.push(&ps);
            assert!(qemu_img(&args).status.success(), "qemu-img convert {name}");
            out.push(p);
        }
        // An overlay with a backing file.
        let ov = d.path("q-overlay.qcow2");
        let base = d.path("q-v2.qcow2");
        let st = qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap_or_default(),
            "-F",
            "qcow2",
            ov.to_str().unwrap_or_default(),
        ]);
        assert!(st.status.success());
        out.push(ov);
    }
    out.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read seed"))).collect()
}

fn mutate(rng: &mut Rng, img: &[u8]) -> Vec<u8> {
    let mut m = img.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            // Truncate.
            0 => {
                let n = rng.below(m.len() as u64 + 1) as usize;
                m.truncate(n);
            }
            // Flip bytes in the first 64 KiB, where the header, L1 and most tables live.
            1 | 2 => {
                let span = m.len().min(65536) as u64;
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(span) as usize;
                    if i < m.len() {
                        m[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // Overwrite an 8-byte big-endian field at an 8-aligned offset with an extreme value.
            3 => {
                let span = (m.len() / 8).min(16384) as u64;
                let i = (rng.below(span) * 8) as usize;
                let v: u64 = match rng.below(4) {
                    0 => u64::MAX,
                    1 => 1 << rng.below(64),
                    2 => rng.next(),
                    _ => 0,
                };
                if i + 8 <= m.len() {
                    m[i..i + 8].copy_from_slice(&v.to_be_bytes());
                }
            }
            // Random bytes anywhere.
            4 => {
                for _ in 0..1 + rng.below(32) {
                    let i = rng.below(m.len() as u64) as usize;
                    if i < m.len() {
                        m[i] = rng.next() as u8;
                    }
                }
            }
            // Header fields specifically (offsets of the v2/v3 header).
            _ => {
                let fields = [4usize, 8, 16, 20, 24, 32, 36, 40, 48, 56, 72, 96, 100, 104];
                let f = fields[rng.below(fields.len() as u64) as usize];
                if f + 4 <= m.len() {
                    m[f..f + 4].copy_from_slice(&(rng.next() as u32).to_be_bytes());
                }
            }
        }
    }
    m
}

#[test]
fn corrupted_images_give_typed_errors() {
    let secs: u64 = std::env::var("SPCS_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("SPCS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("fuzz seed {seed} for {secs} s (SPCS_FUZZ_SEED={seed} to replay)");
    let work = TempDir::new("fuzz");
    let seeds = seeds(&work);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut ok, mut errors) = (0u32, 0u32, 0u32);
    while Instant::now() < deadline {
        let (seed_path, bytes) = &seeds[rng.below(seeds.len() as u64) as usize];
        let mutant = mutate(&mut rng, bytes);
        // Keep the mutant next to its seed so relative backing names resolve the same way.
        let src = work.path("mutant.img");
        std::fs::write(&src, &mutant).expect("write mutant");
        let out = TempDir::new("fuzz-out");
        let dst = out.path("dst.img");
        cases += 1;
        let info =
            catch_unwind(AssertUnwindSafe(|| _datamover::info::info(&src, None, None, 4, None, &Control::default())));
        let info = info.unwrap_or_else(|_| {
            panic!("info panicked on a mutant of {} (seed {seed}, case {cases})", seed_path.display())
        });
        if let Err(e) = &info {
            assert_ne!(e.kind, Kind::Internal, "internal error: {e}");
        }
        if info.as_ref().is_ok_and(|i| i.virtual_size > MAX_COPY) {
            continue;
        }
        let format = if rng.below(2) == 0 { Format::Raw } else { Format::Qcow2 };
        let mut req = request(&src, &dst, format, None);
        req.chain_limit = 4;
        let r = catch_unwind(AssertUnwindSafe(|| run(&req)));
        let r = r.unwrap_or_else(|_| {
            panic!("convert panicked on a mutant of {} (seed {seed}, case {cases})", seed_path.display())
        });
        match r {
            Ok(_) => {
                ok += 1;
                assert_eq!(out.entries(), vec!["dst.img".to_string()], "only the destination exists after success");
            }
            Err(e) => {
                errors += 1;
                assert_ne!(e.kind, Kind::Internal, "internal error: {e}");
                assert!(e.to_string().contains('/'), "error names a path: {e}");
                assert!(out.entries().is_empty(), "nothing left behind after {e}: {:?}", out.entries());
            }
        }
    }
    eprintln!("fuzz: {cases} mutants, {ok} copied, {errors} typed errors");
    assert!(cases > 10, "the fuzz loop ran too few cases");
}
