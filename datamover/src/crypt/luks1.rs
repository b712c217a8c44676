//! The LUKS1 header (cryptsetup's on-disk format 1.2.3, as qemu's `luks` driver and
//! `cryptsetup luksFormat --type luks1` write it): parsing with every field checked, unlocking
//! a key slot with a passphrase, and creating a new header.
//!
//! Layout (big-endian): magic "LUKS\xba\xbe", version 1, cipher name, cipher mode and hash
//! (NUL-terminated, 32 bytes each), payload offset (sectors), key bytes, the master key
//! digest (PBKDF2 of the master key, 20 bytes) with its salt and iterations, the UUID, then 8
//! key slots of 48 bytes (state, PBKDF2 iterations and salt, start sector of the key material,
//! anti-forensic stripes). A slot's key material is the master key spread over 4000 stripes
//! by the AF splitter and encrypted with the key PBKDF2 derives from the passphrase, sector
//! numbers counted from the start of the material.
//!
//! Only aes-xts-plain64 with a 512-bit key and sha256 is supported, which is what CloudStack,
//! qemu and cryptsetup use by default; anything else is refused by name.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{Encrypt, Encryption, Key, Passphrase, Xts};
use crate::error::{Error, Kind, Result};

pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
pub const HEADER_BYTES: usize = 592;
pub const SECTOR: u64 = 512;
pub const KEY_BYTES: usize = 64;
pub const STRIPES: u32 = 4000;
pub const SLOTS: usize = 8;
const DIGEST_BYTES: usize = 20;
const SALT_BYTES: usize = 32;
const SLOT_ACTIVE: u32 = 0x00ac_71f3;
const SLOT_DISABLED: u32 = 0x0000_dead;
/// Bytes of one slot's key material: the key spread over every stripe.
pub const MATERIAL_BYTES: usize = KEY_BYTES * STRIPES as usize;
/// cryptsetup's default layout: key material areas aligned to 4 KiB from sector 8 (each 504
/// sectors for a 512-bit key), and the payload aligned to 1 MiB, at sector 4096 (2 MiB). qemu
/// itself would put the payload right after the last area, at sector 4040; cryptsetup's is the
/// layout CloudStack sizes its volumes for (created size + 2 MiB).
pub const FIRST_SLOT_SECTOR: u32 = 8;
pub const SLOT_SECTORS: u32 = (MATERIAL_BYTES as u64).div_ceil(SECTOR).next_multiple_of(8) as u32;
pub const PAYLOAD_SECTORS: u32 = 4096;
pub const PAYLOAD_OFFSET: u64 = PAYLOAD_SECTORS as u64 * SECTOR;
/// PBKDF2 iterations accepted from a header (per key slot and for the digest): cryptsetup at
/// 2000 ms on today's CPUs stays well below; a crafted header asking for 2^32 would keep the
/// host busy for hours.
pub const MAX_ITERATIONS: u32 = 1 << 25;
/// cryptsetup's and qemu's floor.
pub const MIN_ITERATIONS: u32 = 1000;
/// The longest iteration time accepted when creating a key slot.
pub const MAX_ITER_TIME_MS: u32 = 60_000;

#[derive(Debug, Clone)]
pub struct Slot {
    pub active: bool,
    pub iterations: u32,
    pub salt: [u8; SALT_BYTES],
    /// First sector of the key material, from the start of the header.
    pub key_offset: u32,
    pub stripes: u32,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub cipher_name: String,
    pub cipher_mode: String,
    pub hash_spec: String,
    pub payload_sectors: u32,
    pub key_bytes: u32,
    pub mk_digest: [u8; DIGEST_BYTES],
    pub mk_salt: [u8; SALT_BYTES],
    pub mk_iterations: u32,
    pub uuid: String,
    pub slots: Vec<Slot>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::new(Kind::Internal, format!("cannot get random bytes: {e}")))
}

fn pbkdf2(secret: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, out);
}

/// The AF splitter's diffusion: each 32-byte block of `buf` (the last one possibly shorter)
/// becomes SHA-256(block index, big-endian u32 || block), truncated to the block.
fn diffuse(buf: &mut [u8]) {
    for (i, block) in buf.chunks_mut(32).enumerate() {
        let mut h = Sha256::new();
        h.update((i as u32).to_be_bytes());
        h.update(&*block);
        let d = h.finalize();
        let n = block.len();
        block.copy_from_slice(&d[..n]);
    }
}

/// Joins `stripes` stripes of `key.len()` bytes back into the key.
fn af_merge(material: &[u8], stripes: usize, key: &mut [u8]) {
    let n = key.len();
    key.fill(0);
    for s in 0..stripes - 1 {
        for (k, m) in key.iter_mut().zip(&material[s * n..(s + 1) * n]) {
            *k ^= m;
        }
        diffuse(key);
    }
    for (k, m) in key.iter_mut().zip(&material[(stripes - 1) * n..stripes * n]) {
        *k ^= m;
    }
}

/// Spreads `key` over `stripes` stripes: all but the last random, the last chosen so that
/// `af_merge` gives the key back.
fn af_split(key: &[u8], stripes: usize, material: &mut [u8]) -> Result<()> {
    let n = key.len();
    random(&mut material[..(stripes - 1) * n])?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for s in 0..stripes - 1 {
        for (x, m) in d.iter_mut().zip(&material[s * n..(s + 1) * n]) {
            *x ^= m;
        }
        diffuse(&mut d);
    }
    for ((out, x), k) in material[(stripes - 1) * n..stripes * n].iter_mut().zip(d.iter()).zip(key) {
        *out = x ^ k;
    }
    Ok(())
}

/// A NUL-terminated ASCII field.
fn text(path: &Path, raw: &[u8], what: &str) -> Result<String> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::format(path, format!("LUKS header: the {what} field is not NUL-terminated")))?;
    let s = &raw[..end];
    if !s.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Error::format(path, format!("LUKS header: the {what} field is not printable ASCII")));
    }
    Ok(String::from_utf8_lossy(s).into_owned())
}

fn put_text(out: &mut [u8], s: &str) {
    out[..s.len()].copy_from_slice(s.as_bytes());
}

/// Whether `raw` starts with a LUKS magic (any version).
pub fn has_magic(raw: &[u8]) -> bool {
    raw.len() >= MAGIC.len() && raw[..MAGIC.len()] == MAGIC
}

impl Header {
    /// Parses the first `HEADER_BYTES` of `raw`. The header and its key material live in an
    /// area of `area_len` bytes (a raw volume, or the header clusters of a qcow2 image); with
    /// `payload_inside`, the payload offset must lie inside it too, after the key material.
    pub fn parse(path: &Path, raw: &[u8], area_len: u64, payload_inside: bool) -> Result<Header> {
        let bad = |m: String| Error::format(path, m);
        if raw.len() < HEADER_BYTES {
            return Err(bad(format!("too short ({} bytes) to hold a LUKS header", raw.len())));
        }
        if !has_magic(raw) {
            return Err(bad("not a LUKS volume (bad magic)".into()));
        }
        match be16(raw, 6) {
            1 => {}
            2 => return Err(bad("LUKS2 headers are not supported (only LUKS1)".into())),
            v => return Err(bad(format!("unsupported LUKS version {v}"))),
        }
        let cipher_name = text(path, &raw[8..40], "cipher name")?;
        let cipher_mode = text(path, &raw[40..72], "cipher mode")?;
        let hash_spec = text(path, &raw[72..104], "hash")?;
        if cipher_name != "aes" || cipher_mode != "xts-plain64" {
            return Err(bad(format!(
                "unsupported LUKS cipher \"{cipher_name}-{cipher_mode}\" (only aes-xts-plain64 is supported)"
            )));
        }
        if hash_spec != "sha256" {
            return Err(bad(format!("unsupported LUKS hash \"{hash_spec}\" (only sha256 is supported)")));
        }
        let payload_sectors = be32(raw, 104);
        let key_bytes = be32(raw, 108);
        if key_bytes as usize != KEY_BYTES {
            return Err(bad(format!(
                "unsupported LUKS key size of {} bits (aes-xts-plain64 with a 512-bit key is supported)",
                key_bytes as u64 * 8
            )));
        }
        let mut mk_digest = [0u8; DIGEST_BYTES];
        mk_digest.copy_from_slice(&raw[112..132]);
        let mut mk_salt = [0u8; SALT_BYTES];
        mk_salt.copy_from_slice(&raw[132..164]);
        let mk_iterations = be32(raw, 164);
        if mk_iterations == 0 || mk_iterations > MAX_ITERATIONS {
            return Err(bad(format!(
                "LUKS master key digest asks for {mk_iterations} PBKDF2 iterations (accepted: 1 to {MAX_ITERATIONS})"
            )));
        }
        let uuid = text(path, &raw[168..208], "UUID")?;
        let payload = payload_sectors as u64 * SECTOR;
        if payload_inside && payload > area_len {
            return Err(bad(format!(
                "LUKS payload offset {payload} lies past the end of the volume ({area_len} bytes)"
            )));
        }
        let mut slots = Vec::with_capacity(SLOTS);
        for i in 0..SLOTS {
            let s = &raw[208 + 48 * i..208 + 48 * (i + 1)];
            let state = be32(s, 0);
            let active = match state {
                SLOT_ACTIVE => true,
                SLOT_DISABLED => false,
                other => return Err(bad(format!("LUKS key slot {i} has an invalid state 0x{other:08x}"))),
            };
            let mut salt = [0u8; SALT_BYTES];
            salt.copy_from_slice(&s[8..40]);
            let slot = Slot { active, iterations: be32(s, 4), salt, key_offset: be32(s, 40), stripes: be32(s, 44) };
            if active {
                if slot.stripes != STRIPES {
                    return Err(bad(format!(
                        "LUKS key slot {i} has {} anti-forensic stripes (only {STRIPES} are supported)",
                        slot.stripes
                    )));
                }
                if slot.iterations == 0 || slot.iterations > MAX_ITERATIONS {
                    return Err(bad(format!(
                        "LUKS key slot {i} asks for {} PBKDF2 iterations (accepted: 1 to {MAX_ITERATIONS})",
                        slot.iterations
                    )));
                }
                let start = slot.key_offset as u64 * SECTOR;
                let end = start + MATERIAL_BYTES as u64;
                if start < HEADER_BYTES as u64 {
                    return Err(bad(format!(
                        "LUKS key slot {i}'s key material at sector {} overlaps the header",
                        slot.key_offset
                    )));
                }
                if end > area_len {
                    return Err(bad(format!(
                        "LUKS key slot {i}'s key material (bytes {start}..{end}) lies past the end of the volume ({area_len} bytes)"
                    )));
                }
                if payload_inside && end > payload {
                    return Err(bad(format!(
                        "LUKS key slot {i}'s key material (bytes {start}..{end}) overlaps the payload at {payload}"
                    )));
                }
            }
            slots.push(slot);
        }
        if !slots.iter().any(|s| s.active) {
            return Err(bad("LUKS header has no active key slot".into()));
        }
        Ok(Header {
            cipher_name,
            cipher_mode,
            hash_spec,
            payload_sectors,
            key_bytes,
            mk_digest,
            mk_salt,
            mk_iterations,
            uuid,
            slots,
        })
    }

    /// Reads and parses the header at `base` of a file through `read_at` (as `parse`).
    pub fn read(
        path: &Path,
        base: u64,
        area_len: u64,
        payload_inside: bool,
        read_at: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> Result<Header> {
        let mut raw = [0u8; HEADER_BYTES];
        let n = read_at(&mut raw, base).map_err(|e| Error::source_io(path, "read failed", Some(base), &e))?;
        let n = n.min(area_len as usize);
        Header::parse(path, &raw[..n], area_len, payload_inside)
    }

    pub fn payload_offset(&self) -> u64 {
        self.payload_sectors as u64 * SECTOR
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_text(&mut b[8..40], &self.cipher_name);
        put_text(&mut b[40..72], &self.cipher_mode);
        put_text(&mut b[72..104], &self.hash_spec);
        b[104..108].copy_from_slice(&self.payload_sectors.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_salt);
        b[164..168].copy_from_slice(&self.mk_iterations.to_be_bytes());
        put_text(&mut b[168..208], &self.uuid);
        for (i, s) in self.slots.iter().enumerate() {
            let at = 208 + 48 * i;
            let state = if s.active { SLOT_ACTIVE } else { SLOT_DISABLED };
            b[at..at + 4].copy_from_slice(&state.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&s.iterations.to_be_bytes());
            b[at + 8..at + 40].copy_from_slice(&s.salt);
            b[at + 40..at + 44].copy_from_slice(&s.key_offset.to_be_bytes());
            b[at + 44..at + 48].copy_from_slice(&s.stripes.to_be_bytes());
        }
        b
    }

    /// What `info` shows; `payload_offset` for a raw volume, None inside qcow2.
    pub fn describe(&self, raw_volume: bool) -> Encryption {
        Encryption {
            format: "luks",
            cipher: format!("{}-{}", self.cipher_name, self.cipher_mode),
            key_bits: self.key_bytes * 8,
            payload_offset: raw_volume.then(|| self.payload_offset()),
            uuid: self.uuid.clone(),
        }
    }

    /// Tries every active key slot with `passphrase`; the key slot material is read through
    /// `read_at` at `base` + its offset. A passphrase that opens no slot (or none given) is
    /// `Kind::BadPassphrase`, naming the image.
    pub fn unlock(
        &self,
        path: &Path,
        passphrase: Option<&Passphrase>,
        base: u64,
        read_at: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> Result<Key> {
        let Some(passphrase) = passphrase else {
            return Err(Error::new(Kind::BadPassphrase, "is LUKS-encrypted and no passphrase was given").at(path));
        };
        let mut material = Zeroizing::new(vec![0u8; MATERIAL_BYTES]);
        let mut derived = Zeroizing::new([0u8; KEY_BYTES]);
        let mut candidate = Zeroizing::new([0u8; KEY_BYTES]);
        let mut tried = 0;
        for slot in self.slots.iter().filter(|s| s.active) {
            tried += 1;
            let at = base + slot.key_offset as u64 * SECTOR;
            let n = read_at(&mut material, at).map_err(|e| Error::source_io(path, "read failed", Some(at), &e))?;
            if n < MATERIAL_BYTES {
                return Err(Error::format(path, "LUKS key material is truncated").offset(at + n as u64));
            }
            pbkdf2(passphrase.expose(), &slot.salt, slot.iterations, &mut derived[..]);
            Xts::new(&derived).decrypt(&mut material, 0);
            af_merge(&material, slot.stripes as usize, &mut candidate[..]);
            let mut digest = [0u8; DIGEST_BYTES];
            pbkdf2(&candidate[..], &self.mk_salt, self.mk_iterations, &mut digest);
            if digest == self.mk_digest {
                return Ok(Key::new(Xts::new(&candidate)));
            }
        }
        Err(Error::new(
            Kind::BadPassphrase,
            format!("no LUKS key slot opened with the given passphrase ({tried} active slot(s) tried)"),
        )
        .at(path))
    }
}

/// PBKDF2-HMAC-SHA256 iterations for `out_len` bytes of output that take about `ms` here
/// (cryptsetup's and qemu's way: time a run, scale), within `MIN_ITERATIONS..=MAX_ITERATIONS`.
pub fn iterations_for(ms: u32, out_len: usize) -> u32 {
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    let salt = [0x5a; SALT_BYTES];
    let mut n: u32 = 1000;
    loop {
        let t = Instant::now();
        pbkdf2(b"spcs-pbkdf2-benchmark", &salt, n, &mut out);
        let took = t.elapsed();
        if took >= Duration::from_millis(20) || n >= MAX_ITERATIONS {
            let per_ms = n as f64 / (took.as_secs_f64() * 1000.0).max(1e-3);
            let want = per_ms * ms as f64;
            return want.clamp(MIN_ITERATIONS as f64, MAX_ITERATIONS as f64) as u32;
        }
        n = n.saturating_mul(4);
    }
}

/// A new LUKS1 volume header: the 2 MiB area up to the payload (header, slot 0's key
/// material, the other areas zero) and the data key.
pub struct Created {
    pub header: Header,
    pub area: Vec<u8>,
    pub key: Key,
}

fn uuid_v4() -> Result<String> {
    let mut b = [0u8; 16];
    random(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// Creates a header for aes-xts-plain64, a random 512-bit master key, sha256, with key slot 0
/// opened by `enc.passphrase` (cryptsetup's default layout; see `PAYLOAD_SECTORS`).
pub fn create(enc: &Encrypt) -> Result<Created> {
    if enc.iter_time_ms == 0 || enc.iter_time_ms > MAX_ITER_TIME_MS {
        return Err(Error::invalid(format!("iter_time_ms {} must be from 1 to {MAX_ITER_TIME_MS}", enc.iter_time_ms)));
    }
    let mut master = Zeroizing::new([0u8; KEY_BYTES]);
    random(&mut master[..])?;
    let mut mk_salt = [0u8; SALT_BYTES];
    random(&mut mk_salt)?;
    let mut slot_salt = [0u8; SALT_BYTES];
    random(&mut slot_salt)?;
    // cryptsetup spends 1/16 of the slot's time on the master key digest (125 of 2000 ms).
    let mk_iterations = iterations_for(enc.iter_time_ms / 16, DIGEST_BYTES);
    let slot_iterations = iterations_for(enc.iter_time_ms, KEY_BYTES);
    let mut mk_digest = [0u8; DIGEST_BYTES];
    pbkdf2(&master[..], &mk_salt, mk_iterations, &mut mk_digest);

    let mut derived = Zeroizing::new([0u8; KEY_BYTES]);
    pbkdf2(enc.passphrase.expose(), &slot_salt, slot_iterations, &mut derived[..]);
    let mut material = Zeroizing::new(vec![0u8; MATERIAL_BYTES]);
    af_split(&master[..], STRIPES as usize, &mut material)?;
    Xts::new(&derived).encrypt(&mut material, 0);

    let slots = (0..SLOTS as u32)
        .map(|i| Slot {
            active: i == 0,
            iterations: if i == 0 { slot_iterations } else { 0 },
            salt: if i == 0 { slot_salt } else { [0; SALT_BYTES] },
            key_offset: FIRST_SLOT_SECTOR + i * SLOT_SECTORS,
            stripes: STRIPES,
        })
        .collect();
    let header = Header {
        cipher_name: "aes".into(),
        cipher_mode: "xts-plain64".into(),
        hash_spec: "sha256".into(),
        payload_sectors: PAYLOAD_SECTORS,
        key_bytes: KEY_BYTES as u32,
        mk_digest,
        mk_salt,
        mk_iterations,
        uuid: uuid_v4()?,
        slots,
    };
    let mut area = vec![0u8; PAYLOAD_OFFSET as usize];
    area[..HEADER_BYTES].copy_from_slice(&header.encode());
    let at = (FIRST_SLOT_SECTOR as u64 * SECTOR) as usize;
    area[at..at + MATERIAL_BYTES].copy_from_slice(&material);
    Ok(Created { header, area, key: Key::new(Xts::new(&master)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn enc(p: &[u8]) -> Encrypt {
        Encrypt { passphrase: Arc::new(Passphrase::new(p)), iter_time_ms: 1 }
    }

    fn reader(area: &[u8]) -> impl FnMut(&mut [u8], u64) -> io::Result<usize> + '_ {
        move |buf: &mut [u8], at: u64| {
            let from = (at as usize).min(area.len());
            let n = buf.len().min(area.len() - from);
            buf[..n].copy_from_slice(&area[from..from + n]);
            Ok(n)
        }
    }

    const PATH: &str = "v.luks";

    fn refused(raw: &[u8]) -> String {
        let e = Header::parse(Path::new(PATH), raw, 4 << 20, true).expect_err("refused");
        assert_eq!(e.kind, Kind::Format, "{e}");
        e.message
    }

    #[test]
    fn layout_is_cryptsetups_default() {
        assert_eq!(SLOT_SECTORS, 504);
        let offsets: Vec<u32> = (0..8).map(|i| FIRST_SLOT_SECTOR + i * SLOT_SECTORS).collect();
        assert_eq!(offsets, [8, 512, 1016, 1520, 2024, 2528, 3032, 3536]);
        const { assert!(3536 + 500 <= PAYLOAD_SECTORS) };
        assert_eq!(PAYLOAD_OFFSET, 2 << 20);
    }

    #[test]
    fn af_split_and_merge_round_trip() {
        let key: Vec<u8> = (0..64).collect();
        let mut m = vec![0u8; 64 * 10];
        af_split(&key, 10, &mut m).expect("split");
        let mut back = [0u8; 64];
        af_merge(&m, 10, &mut back);
        assert_eq!(&back[..], &key[..]);
        // A partial last diffusion block (20-byte keys).
        let key = [9u8; 20];
        let mut m = vec![0u8; 20 * 3];
        af_split(&key, 3, &mut m).expect("split");
        let mut back = [0u8; 20];
        af_merge(&m, 3, &mut back);
        assert_eq!(back, key);
    }

    #[test]
    fn create_then_unlock() {
        let c = create(&enc(b"right")).expect("create");
        let h = Header::parse(Path::new(PATH), &c.area, c.area.len() as u64 + 4096, true).expect("parse");
        assert_eq!(h.payload_sectors, 4096);
        assert_eq!(h.uuid.len(), 36);
        assert!(h.slots[0].active && !h.slots[1].active);
        assert!(h.slots[0].iterations >= MIN_ITERATIONS && h.mk_iterations >= MIN_ITERATIONS);
        let key = h.unlock(Path::new(PATH), Some(&Passphrase::new(b"right")), 0, &mut reader(&c.area)).expect("unlock");
        let mut a = [0x11u8; 1024];
        let mut b = a;
        key.encrypt(&mut a, 77);
        c.key.encrypt(&mut b, 77);
        assert_eq!(a, b, "the unlocked key is the master key");

        let e = h.unlock(Path::new(PATH), Some(&Passphrase::new(b"wrong")), 0, &mut reader(&c.area)).expect_err("bad");
        assert_eq!(e.kind, Kind::BadPassphrase);
        assert_eq!(e.to_string(), "v.luks: no LUKS key slot opened with the given passphrase (1 active slot(s) tried)");
        let e = h.unlock(Path::new(PATH), None, 0, &mut reader(&c.area)).expect_err("none");
        assert_eq!(e.kind, Kind::BadPassphrase);
        assert!(!e.to_string().contains("right"));
        // A truncated key material area.
        let e = h.unlock(Path::new(PATH), Some(&Passphrase::new(b"right")), 0, &mut reader(&c.area[..100_000]));
        assert_eq!(e.expect_err("truncated").kind, Kind::Format);
    }

    #[test]
    fn hostile_headers_are_refused_by_name() {
        let good = create(&enc(b"x")).expect("create").area;
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        assert_eq!(refused(&good[..591]), "too short (591 bytes) to hold a LUKS header");
        assert_eq!(refused(&with(0, b"LUKS\xba\xbf")), "not a LUKS volume (bad magic)");
        assert_eq!(refused(&with(6, &[0, 2])), "LUKS2 headers are not supported (only LUKS1)");
        assert_eq!(refused(&with(6, &[0, 9])), "unsupported LUKS version 9");
        assert_eq!(
            refused(&with(8, b"serpent\0")),
            "unsupported LUKS cipher \"serpent-xts-plain64\" (only aes-xts-plain64 is supported)"
        );
        assert_eq!(
            refused(&with(40, b"cbc-essiv:sha256\0")),
            "unsupported LUKS cipher \"aes-cbc-essiv:sha256\" (only aes-xts-plain64 is supported)"
        );
        assert_eq!(refused(&with(72, b"sha1\0\0")), "unsupported LUKS hash \"sha1\" (only sha256 is supported)");
        assert_eq!(refused(&with(72, &[b'x'; 32])), "LUKS header: the hash field is not NUL-terminated");
        assert_eq!(
            refused(&with(108, &32u32.to_be_bytes())),
            "unsupported LUKS key size of 256 bits (aes-xts-plain64 with a 512-bit key is supported)"
        );
        assert_eq!(
            refused(&with(164, &u32::MAX.to_be_bytes())),
            "LUKS master key digest asks for 4294967295 PBKDF2 iterations (accepted: 1 to 33554432)"
        );
        assert_eq!(
            refused(&with(208 + 4, &u32::MAX.to_be_bytes())),
            "LUKS key slot 0 asks for 4294967295 PBKDF2 iterations (accepted: 1 to 33554432)"
        );
        assert_eq!(
            refused(&with(208 + 44, &4001u32.to_be_bytes())),
            "LUKS key slot 0 has 4001 anti-forensic stripes (only 4000 are supported)"
        );
        assert_eq!(
            refused(&with(208 + 40, &1u32.to_be_bytes())),
            "LUKS key slot 0's key material at sector 1 overlaps the header"
        );
        assert_eq!(
            refused(&with(208 + 40, &8000u32.to_be_bytes())),
            "LUKS key slot 0's key material (bytes 4096000..4352000) lies past the end of the volume (4194304 bytes)"
        );
        assert_eq!(
            refused(&with(208 + 40, &4000u32.to_be_bytes())),
            "LUKS key slot 0's key material (bytes 2048000..2304000) overlaps the payload at 2097152"
        );
        assert_eq!(
            refused(&with(104, &9000u32.to_be_bytes())),
            "LUKS payload offset 4608000 lies past the end of the volume (4194304 bytes)"
        );
        assert_eq!(refused(&with(208 + 48, &[0, 0, 0, 1])), "LUKS key slot 1 has an invalid state 0x00000001");
        assert_eq!(refused(&with(208, &SLOT_DISABLED.to_be_bytes())), "LUKS header has no active key slot");
    }

    #[test]
    fn iteration_benchmark_scales_with_time() {
        assert_eq!(iterations_for(0, 64), MIN_ITERATIONS);
        let slow = iterations_for(200, 64);
        assert!(slow > iterations_for(2, 64), "{slow}");
        assert!(slow <= MAX_ITERATIONS);
    }
}
