//! Encryption shared by the formats that carry it: AES-256-XTS with plain64 sector tweaks
//! (`xts`), the LUKS1 header with its PBKDF2 key slots and anti-forensic splitter (`luks1`),
//! and the secrets they work with. Raw LUKS volumes (`crate::luks`) and LUKS-encrypted qcow2
//! images (`crate::qcow2`) both use it; it depends on nothing but `error`.
//!
//! Secrets never reach a message, a log or a `Debug` output: `Passphrase` and `Key` print as
//! redacted, and every copy of a passphrase, master key or derived key is zeroized on drop.

pub mod luks1;
pub mod xts;

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use xts::Xts;

/// A passphrase as the caller gave it (bytes, as LUKS hashes them); zeroized on drop.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    pub fn new(bytes: &[u8]) -> Passphrase {
        Passphrase(Zeroizing::new(bytes.to_vec()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// How a new encrypted image is keyed: its passphrase and the PBKDF2 time per key slot.
#[derive(Clone, Debug)]
pub struct Encrypt {
    pub passphrase: Arc<Passphrase>,
    /// Time the key slot's PBKDF2 should take on this host (cryptsetup and qemu: 2000 ms).
    pub iter_time_ms: u32,
}

/// The unlocked data cipher of an image, shared by the workers. Compares by identity (two
/// pieces with the same key come from the same image) and never prints its key.
#[derive(Clone)]
pub struct Key(Arc<Xts>);

impl Key {
    pub fn new(xts: Xts) -> Key {
        Key(Arc::new(xts))
    }

    /// Decrypts whole 512-byte sectors in place; the first is sector `sector` of the tweak.
    pub fn decrypt(&self, buf: &mut [u8], sector: u64) {
        self.0.decrypt(buf, sector)
    }

    /// Encrypts `src` into `dst` (same length, whole sectors) from tweak sector `sector`.
    pub fn encrypt_to(&self, src: &[u8], dst: &mut [u8], sector: u64) {
        dst.copy_from_slice(src);
        self.0.encrypt(dst, sector)
    }

    pub fn encrypt(&self, buf: &mut [u8], sector: u64) {
        self.0.encrypt(buf, sector)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The encryption an image uses, as `info` reports it (no secret needed to know it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// Always "luks" (LUKS1) for now.
    pub format: &'static str,
    pub cipher: String,
    pub key_bits: u32,
    /// Where the encrypted payload starts in a raw LUKS volume (bytes); None inside qcow2.
    pub payload_offset: Option<u64>,
    pub uuid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let p = Passphrase::new(b"hunter2");
        assert_eq!(format!("{p:?}"), "Passphrase(<redacted>)");
        let k = Key::new(Xts::new(&[7u8; 64]));
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        assert_eq!(k, k.clone());
        assert_ne!(k, Key::new(Xts::new(&[7u8; 64])));
    }
}
