//! Secrets kept at rest (callers' saved S3 credentials) sealed with the server's key:
//! ChaCha20-Poly1305 from `ring` (already in the tree through rustls), a random nonce per
//! seal, stored as hex of nonce ‖ ciphertext ‖ tag. The key comes from `KILN_SECRETS_KEY`, or
//! a random one the database keeps (every replica then shares it).

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealing key must be 32 bytes (64 hex digits)")]
    BadKey,
    #[error("a sealed value is damaged or was sealed with another key")]
    Damaged,
}

/// What a secret of record kind `kind` (`account`, `endpoint`, `setting`, `destination`) with
/// id `id` is sealed to: the one spelling every sealer and opener of that kind uses.
pub fn context(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// A sealer for a 32-byte key given as 64 hex digits.
    pub fn new(hex_key: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_key() -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        hex::encode(k)
    }

    /// `plain` sealed; `context` (e.g. the record's id) is bound in, so a sealed value moved
    /// to another record does not open.
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        hex::encode(out)
    }

    /// The plain value of `sealed`, bound to `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let raw = hex::decode(sealed).map_err(|_| SealError::Damaged)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Damaged);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Damaged)?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let s = Sealer::new(&Sealer::generate_key()).unwrap();
        let sealed = s.seal("wJalrXUtnFEMI/K7MDENG", "cred-1");
        assert!(!sealed.contains("wJalr"), "not stored in the clear");
        assert_ne!(
            sealed,
            s.seal("wJalrXUtnFEMI/K7MDENG", "cred-1"),
            "fresh nonce"
        );
        assert_eq!(s.open(&sealed, "cred-1").unwrap(), "wJalrXUtnFEMI/K7MDENG");
        assert!(s.open(&sealed, "cred-2").is_err(), "bound to its record");
        let other = Sealer::new(&Sealer::generate_key()).unwrap();
        assert!(other.open(&sealed, "cred-1").is_err());
        let mut tampered = sealed.clone();
        tampered.replace_range(30..32, if &sealed[30..32] == "00" { "11" } else { "00" });
        assert!(s.open(&tampered, "cred-1").is_err());
        assert!(Sealer::new("abcd").is_err());
    }
}
