//! Digests of the virtual disk contents, fed in order by the pipeline's digest stage, and of
//! downloaded files (the algorithms CloudStack checks templates with).

use sha2::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha256,
    Blake3,
    Md5,
    Sha1,
    Sha512,
}

impl DigestKind {
    /// A digest of the virtual disk (`convert`, `info`).
    pub fn parse(name: &str) -> Option<DigestKind> {
        match name {
            "sha256" => Some(DigestKind::Sha256),
            "blake3" => Some(DigestKind::Blake3),
            _ => None,
        }
    }

    /// A checksum of a downloaded file, as CloudStack records them.
    pub fn parse_file(name: &str) -> Option<DigestKind> {
        match name {
            "md5" => Some(DigestKind::Md5),
            "sha1" => Some(DigestKind::Sha1),
            "sha256" => Some(DigestKind::Sha256),
            "sha512" => Some(DigestKind::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "sha256",
            DigestKind::Blake3 => "blake3",
            DigestKind::Md5 => "md5",
            DigestKind::Sha1 => "sha1",
            DigestKind::Sha512 => "sha512",
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            DigestKind::Md5 => 32,
            DigestKind::Sha1 => 40,
            DigestKind::Sha256 | DigestKind::Blake3 => 64,
            DigestKind::Sha512 => 128,
        }
    }
}

pub enum Hasher {
    Sha256(Box<sha2::Sha256>),
    Blake3(Box<blake3::Hasher>),
    Md5(Box<md5::Md5>),
    Sha1(Box<sha1::Sha1>),
    Sha512(Box<sha2::Sha512>),
}

impl Hasher {
    pub fn new(kind: DigestKind) -> Hasher {
        match kind {
            DigestKind::Sha256 => Hasher::Sha256(Box::default()),
            DigestKind::Blake3 => Hasher::Blake3(Box::default()),
            DigestKind::Md5 => Hasher::Md5(Box::default()),
            DigestKind::Sha1 => Hasher::Sha1(Box::default()),
            DigestKind::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = Hasher::new(DigestKind::Sha256);
        h.update(b"abc");
        assert_eq!(h.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Hasher::new(DigestKind::Blake3);
        h.update(b"");
        assert_eq!(h.hex(), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        for (kind, want) in [
            (DigestKind::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (DigestKind::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                DigestKind::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ] {
            let mut h = Hasher::new(kind);
            h.update(b"abc");
            assert_eq!(h.hex(), want);
            assert_eq!(want.len(), kind.hex_len());
            assert_eq!(DigestKind::parse_file(kind.name()), Some(kind));
        }
    }
}
