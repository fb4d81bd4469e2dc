//! The key format: `vml_` + 32 base62 random characters + a 6-character base62 CRC32 checksum.
//!
//! The checksum (the same idea as GitHub's token format) lets a leak scanner or our own edge
//! reject a mistyped or invented key without touching the database. Keys are stored only as
//! their SHA-256.

use std::fmt;

use rand::{distributions::Alphanumeric, CryptoRng, Rng, RngCore};
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "vml_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// How much of a key may be shown to identify it: the prefix and four random characters.
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A well-formed API key. It is a secret: `Debug` hides it and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the key is not a well-formed credential key")]
pub struct InvalidKey;

impl ApiKey {
    /// A new key drawn from `rng`, which must be a CSPRNG: the service passes `ThreadRng` (seeded
    /// from the operating system, without a system call per character), provisioning `OsRng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let random: String = rng.sample_iter(&Alphanumeric).take(RANDOM_LEN).map(char::from).collect();
        let checksum = checksum(&random);
        ApiKey(format!("{KEY_PREFIX}{random}{checksum}"))
    }

    pub fn parse(candidate: &str) -> Result<Self, InvalidKey> {
        let body = candidate.strip_prefix(KEY_PREFIX).ok_or(InvalidKey)?;
        if candidate.len() != KEY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(InvalidKey);
        }
        let (random, given_checksum) = body.split_at(RANDOM_LEN);
        if checksum(random) != given_checksum {
            return Err(InvalidKey);
        }
        Ok(ApiKey(candidate.to_owned()))
    }

    /// Whether `text` holds a real key anywhere in it (one whose checksum is right), so that
    /// one pasted into the wrong field can be refused before it is stored for ever.
    pub fn occurs_in(text: &str) -> bool {
        text.match_indices(KEY_PREFIX).any(|(start, _)| {
            text.get(start..start + KEY_LEN).is_some_and(|candidate| ApiKey::parse(candidate).is_ok())
        })
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    pub fn display_prefix(&self) -> &str {
        &self.0[..DISPLAY_PREFIX_LEN]
    }

    /// The key itself, for the one response that hands it out.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

fn checksum(random: &str) -> String {
    let mut value = u64::from(crc32fast::hash(random.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// SHA-256 of a key: what the ledger stores and looks keys up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(KeyHash(bytes))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(KeyHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

impl serde::Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        KeyHash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("key_hash must be 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn key() -> ApiKey {
        ApiKey::generate(&mut StdRng::seed_from_u64(7))
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse_back() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let key = ApiKey::generate(&mut rng);
            let text = key.expose_secret();
            assert!(text.starts_with("vml_"));
            assert_eq!(text.len(), 42);
            assert!(text[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(ApiKey::parse(text), Ok(key.clone()));
        }
    }

    #[test]
    fn every_one_character_change_is_rejected_by_the_checksum() {
        let original = key().expose_secret().to_owned();
        for position in 4..original.len() {
            for replacement in BASE62.iter().map(|&b| char::from(b)) {
                let mut changed: Vec<char> = original.chars().collect();
                if changed[position] == replacement {
                    continue;
                }
                changed[position] = replacement;
                let changed: String = changed.into_iter().collect();
                assert_eq!(ApiKey::parse(&changed), Err(InvalidKey), "{position}:{replacement}");
            }
        }
    }

    #[test]
    fn malformed_candidates_are_rejected() {
        let good = key().expose_secret().to_owned();
        for bad in [
            "",
            "vml_",
            &good[..41],
            &format!("{good}0"),
            &good.replacen("vml_", "vmk_", 1),
            &good.replacen("vml_", "VML_", 1),
            &format!("vml_{}", "é".repeat(19)),
            "vml_abc123def456ghi789jkl",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(InvalidKey), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret_part() {
        let key = key();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose_secret()[8..]));
    }

    #[test]
    fn hash_is_sha256_of_the_whole_key() {
        let key = key();
        let expected: [u8; 32] = Sha256::digest(key.expose_secret().as_bytes()).into();
        assert_eq!(key.hash().0, expected);
        assert_eq!(KeyHash::from_hex(&key.hash().to_hex()), Some(key.hash()));
    }
}
