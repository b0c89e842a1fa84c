//! Public keys and signatures as atproto uses them.
//!
//! Owns the two curves atproto allows (secp256k1 "k256" and NIST P-256), their
//! encodings (Multikey, `did:key`, and the legacy raw multibase form older PLC
//! documents still serve), and signature checks. Invariant: a signature only
//! verifies when it is the 64-byte compact form with a low S value; DER and
//! high-S signatures are refused, as the atproto cryptography spec requires.

use k256::ecdsa::signature::{Signer, Verifier};
use rand::rngs::OsRng;
use sha2::Digest;

/// Multicodec prefix of a compressed secp256k1 public key (`secp256k1-pub`, 0xe7).
const K256_PUB_PREFIX: [u8; 2] = [0xe7, 0x01];
/// Multicodec prefix of a compressed P-256 public key (`p256-pub`, 0x1200).
const P256_PUB_PREFIX: [u8; 2] = [0x80, 0x24];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is not multibase base58btc (it must start with 'z')")]
    NotBase58btc,
    #[error("key is not valid base58: {0}")]
    BadBase58(String),
    #[error(
        "key uses an unsupported multicodec prefix (only secp256k1 and P-256 are used by atproto)"
    )]
    UnsupportedCodec,
    #[error("key bytes are not a valid point on the curve")]
    BadPoint,
    #[error("not a did:key identifier")]
    NotDidKey,
    #[error("unsupported verification method type {0}")]
    UnsupportedType(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature must be 64 bytes (r||s), got {0} bytes")]
    BadLength(usize),
    #[error("signature has a high S value; atproto accepts only low-S signatures")]
    HighS,
    #[error("signature is malformed")]
    Malformed,
    #[error("signature does not match the key")]
    Mismatch,
}

/// A public key able to check atproto signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    K256(K256Key),
    P256(p256::ecdsa::VerifyingKey),
}

/// A secp256k1 key in both libraries' forms: `k256` encodes it, libsecp256k1 checks
/// signatures with it (about 2.5 times faster, which a followed event stream needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K256Key {
    key: k256::ecdsa::VerifyingKey,
    /// The same point for libsecp256k1; `None` only if it refused a point `k256` accepted
    /// (which does not happen), and then `k256` checks.
    checker: Option<secp256k1::PublicKey>,
}

impl K256Key {
    fn new(key: k256::ecdsa::VerifyingKey) -> Self {
        let checker = secp256k1::PublicKey::from_slice(key.to_encoded_point(false).as_bytes()).ok();
        Self { key, checker }
    }

    fn from_sec1(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let key =
            k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| KeyError::BadPoint)?;
        Ok(PublicKey::K256(Self::new(key)))
    }

    /// Checks a parsed, low-S signature over `msg`.
    fn verify(&self, msg: &[u8], sig: &k256::ecdsa::Signature) -> Result<(), SignatureError> {
        let Some(checker) = &self.checker else {
            return self
                .key
                .verify(msg, sig)
                .map_err(|_| SignatureError::Mismatch);
        };
        let sig = secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes())
            .map_err(|_| SignatureError::Malformed)?;
        let digest: [u8; 32] = sha2::Sha256::digest(msg).into();
        secp256k1::ecdsa::verify(&sig, secp256k1::Message::from_digest(digest), checker)
            .map_err(|_| SignatureError::Mismatch)
    }
}

impl PublicKey {
    /// Parses a Multikey `publicKeyMultibase` value (`z` + base58btc(multicodec ‖ key)).
    pub fn from_multikey(multibase: &str) -> Result<Self, KeyError> {
        let bytes = decode_base58btc(multibase)?;
        if let Some(key) = bytes.strip_prefix(&K256_PUB_PREFIX) {
            K256Key::from_sec1(key)
        } else if let Some(key) = bytes.strip_prefix(&P256_PUB_PREFIX) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .map(Self::P256)
                .map_err(|_| KeyError::BadPoint)
        } else {
            Err(KeyError::UnsupportedCodec)
        }
    }

    /// Parses a `did:key:z…` identifier.
    pub fn from_did_key(did: &str) -> Result<Self, KeyError> {
        let rest = did.strip_prefix("did:key:").ok_or(KeyError::NotDidKey)?;
        Self::from_multikey(rest)
    }

    /// Parses a verification method as found in a DID document: `Multikey`, or the
    /// legacy `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
    /// types whose multibase value carries the raw compressed key with no prefix.
    pub fn from_verification_method(kind: &str, multibase: &str) -> Result<Self, KeyError> {
        match kind {
            "Multikey" => Self::from_multikey(multibase),
            "EcdsaSecp256k1VerificationKey2019" => {
                K256Key::from_sec1(&decode_base58btc(multibase)?)
            }
            "EcdsaSecp256r1VerificationKey2019" => {
                let raw = decode_base58btc(multibase)?;
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw)
                    .map(Self::P256)
                    .map_err(|_| KeyError::BadPoint)
            }
            other => Err(KeyError::UnsupportedType(other.to_string())),
        }
    }

    /// The Multikey encoding (`z…`) of this key.
    pub fn to_multikey(&self) -> String {
        let mut bytes = Vec::with_capacity(35);
        match self {
            Self::K256(k) => {
                bytes.extend_from_slice(&K256_PUB_PREFIX);
                bytes.extend_from_slice(k.key.to_encoded_point(true).as_bytes());
            }
            Self::P256(k) => {
                bytes.extend_from_slice(&P256_PUB_PREFIX);
                bytes.extend_from_slice(k.to_encoded_point(true).as_bytes());
            }
        }
        format!("z{}", bs58::encode(bytes).into_string())
    }

    /// The `did:key` form of this key.
    pub fn to_did_key(&self) -> String {
        format!("did:key:{}", self.to_multikey())
    }

    /// Checks `sig` over `msg` (the message is hashed with SHA-256 by the curve's ECDSA).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        if sig.len() != 64 {
            return Err(SignatureError::BadLength(sig.len()));
        }
        match self {
            Self::K256(key) => {
                // Parsed by `k256` so both curves refuse the same malformed and high-S
                // signatures in the same words.
                let sig = k256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| SignatureError::Malformed)?;
                if sig.normalize_s().is_some() {
                    return Err(SignatureError::HighS);
                }
                key.verify(msg, &sig)
            }
            Self::P256(key) => {
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| SignatureError::Malformed)?;
                if sig.normalize_s().is_some() {
                    return Err(SignatureError::HighS);
                }
                key.verify(msg, &sig).map_err(|_| SignatureError::Mismatch)
            }
        }
    }
}

fn decode_base58btc(multibase: &str) -> Result<Vec<u8>, KeyError> {
    let body = multibase.strip_prefix('z').ok_or(KeyError::NotBase58btc)?;
    bs58::decode(body)
        .into_vec()
        .map_err(|e| KeyError::BadBase58(e.to_string()))
}

/// A private key that signs commits: used to build repositories offline (tests,
/// benchmarks) and, later, for keys the user owns.
#[derive(Clone)]
pub enum SigningKey {
    K256(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().to_did_key())
    }
}

impl SigningKey {
    pub fn generate_k256() -> Self {
        Self::K256(k256::ecdsa::SigningKey::random(&mut OsRng))
    }

    pub fn generate_p256() -> Self {
        Self::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    /// A k256 key from 32 secret bytes (e.g. hex from a fixture).
    pub fn k256_from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        k256::ecdsa::SigningKey::from_slice(bytes)
            .map(Self::K256)
            .map_err(|_| KeyError::BadPoint)
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::K256(k) => PublicKey::K256(K256Key::new(*k.verifying_key())),
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    /// Signs `msg` (SHA-256 inside ECDSA) and returns the 64-byte low-S signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let bytes = match self {
            Self::K256(k) => {
                let sig: k256::ecdsa::Signature = k.sign(msg);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_bytes()
            }
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                let sig = sig.normalize_s().unwrap_or(sig);
                sig.to_bytes()
            }
        };
        let mut out = [0u8; 64];
        out.copy_from_slice(&bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_both_curves() {
        for key in [SigningKey::generate_k256(), SigningKey::generate_p256()] {
            let sig = key.sign(b"hello");
            let public = key.public_key();
            assert_eq!(public.verify(b"hello", &sig), Ok(()));
            assert_eq!(public.verify(b"hellp", &sig), Err(SignatureError::Mismatch));
            let round = PublicKey::from_did_key(&public.to_did_key()).unwrap();
            assert_eq!(round, public);
        }
    }

    #[test]
    fn high_s_is_refused() {
        let key = SigningKey::generate_k256();
        let sig = key.sign(b"msg");
        let parsed = k256::ecdsa::Signature::from_slice(&sig).unwrap();
        // Negate s: the same signature mathematically, but in high-S form.
        let (r, s) = parsed.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        assert_eq!(
            key.public_key().verify(b"msg", &high.to_bytes()),
            Err(SignatureError::HighS)
        );
    }

    #[test]
    fn signature_interop_fixtures() {
        use base64::Engine;
        let Some(dir) = crate::testdata::interop_dir() else {
            return;
        };
        let text = std::fs::read_to_string(dir.join("crypto/signature-fixtures.json")).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 6);
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(v.as_str().unwrap().trim_end_matches('='))
                .unwrap()
        };
        for c in cases {
            let from_did = PublicKey::from_did_key(c["publicKeyDid"].as_str().unwrap()).unwrap();
            let from_doc = PublicKey::from_verification_method(
                c["didDocSuite"].as_str().unwrap(),
                c["publicKeyMultibase"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(from_did, from_doc, "{}", c["comment"]);
            let ok = from_did
                .verify(&b64(&c["messageBase64"]), &b64(&c["signatureBase64"]))
                .is_ok();
            assert_eq!(
                ok,
                c["validSignature"].as_bool().unwrap(),
                "{}",
                c["comment"]
            );
        }
    }

    #[test]
    fn did_key_interop_fixtures() {
        let Some(dir) = crate::testdata::interop_dir() else {
            return;
        };
        for (file, p256) in [
            ("crypto/w3c_didkey_K256.json", false),
            ("crypto/w3c_didkey_P256.json", true),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert!(!cases.is_empty());
            for c in cases {
                let did = c["publicDidKey"].as_str().unwrap();
                let key = PublicKey::from_did_key(did).unwrap();
                assert_eq!(key.to_did_key(), did);
                assert_eq!(matches!(key, PublicKey::P256(_)), p256);
                if let Some(hex) = c["privateKeyBytesHex"].as_str() {
                    if !p256 {
                        let bytes: Vec<u8> = (0..hex.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                            .collect();
                        let signing = SigningKey::k256_from_bytes(&bytes).unwrap();
                        assert_eq!(signing.public_key().to_did_key(), did);
                    }
                }
            }
        }
    }

    #[test]
    fn der_and_short_signatures_are_refused() {
        let key = SigningKey::generate_p256();
        assert_eq!(
            key.public_key().verify(b"m", &[0u8; 70]),
            Err(SignatureError::BadLength(70))
        );
    }
}
