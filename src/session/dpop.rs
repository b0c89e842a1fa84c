//! DPoP (RFC 9449): the proof-of-possession key an OAuth session's tokens are bound to, and the
//! proofs sent with every request that uses them. The key is P-256 (ES256, what every atproto
//! authorization server accepts); it is made at sign-in and kept with the tokens, never sent.
//! A proof is a JWT signed by the key naming the request (method and URL without query),
//! a fresh `jti`, the time, the server's latest nonce and, toward the resource server, the hash
//! of the access token (`ath`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A DPoP key.
#[derive(Clone)]
pub struct DpopKey(SigningKey);

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DpopKey(…)")
    }
}

/// base64url without padding, as JOSE writes bytes.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` random bytes from the OS, as base64url.
pub fn random_text(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    b64(&bytes)
}

/// The hash of an access token a proof toward the resource server names.
pub fn ath(access_token: &str) -> String {
    b64(&Sha256::digest(access_token.as_bytes()))
}

/// The URL a proof names: scheme, host, port and path; no query, no fragment.
pub fn htu(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].to_string()
}

impl DpopKey {
    pub fn generate() -> DpopKey {
        DpopKey(SigningKey::random(&mut OsRng))
    }

    /// The key as kept with the tokens (the scalar, base64url).
    pub fn to_text(&self) -> String {
        b64(&self.0.to_bytes())
    }

    pub fn from_text(text: &str) -> Option<DpopKey> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        SigningKey::from_slice(&bytes).ok().map(DpopKey)
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let point = self.0.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().map(|x| b64(x)), point.y().map(|y| b64(y)));
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
    }

    /// A proof for `method url`, with the server's `nonce` and the access token's hash when
    /// given.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()});
        let mut claims = json!({
            "jti": random_text(16),
            "htm": method,
            "htu": htu(url),
            "iat": chrono::Utc::now().timestamp(),
        });
        if let Some(n) = nonce {
            claims["nonce"] = Value::String(n.to_string());
        }
        if let Some(t) = access_token {
            claims["ath"] = Value::String(ath(t));
        }
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig: Signature = self.0.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&sig.to_bytes()))
    }
}

/// PKCE (RFC 7636, S256): a secret verifier and the challenge sent ahead of it.
pub fn pkce() -> (String, String) {
    let verifier = random_text(32);
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;

    fn part(jwt: &str, i: usize) -> Value {
        let text = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_names_the_request_and_verifies_with_its_embedded_key() {
        let key = DpopKey::generate();
        let jwt = key.proof(
            "POST",
            "http://localhost:2583/xrpc/com.atproto.repo.createRecord?x=1#y",
            Some("n-1"),
            Some("token"),
        );
        let (header, claims) = (part(&jwt, 0), part(&jwt, 1));
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(
            claims["htu"],
            "http://localhost:2583/xrpc/com.atproto.repo.createRecord"
        );
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["ath"], ath("token"));
        assert!(claims["jti"].as_str().unwrap().len() >= 16);
        // The signature verifies with the key the header carries.
        let jwk = &header["jwk"];
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap());
        }
        let vk = VerifyingKey::from_sec1_bytes(&point).unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        vk.verify(input.as_bytes(), &sig).unwrap();
        // Each proof is new.
        let again = key.proof("POST", "http://localhost:2583/a", None, None);
        assert_ne!(part(&again, 1)["jti"], claims["jti"]);
        assert!(part(&again, 1).get("nonce").is_none());
        assert!(part(&again, 1).get("ath").is_none());
    }

    #[test]
    fn the_key_round_trips_through_its_kept_form() {
        let key = DpopKey::generate();
        let back = DpopKey::from_text(&key.to_text()).unwrap();
        assert_eq!(key.jwk(), back.jwk());
        assert!(DpopKey::from_text("not a key").is_none());
        assert!(!format!("{key:?}").contains(&key.to_text()));
    }

    #[test]
    fn the_pkce_challenge_is_the_verifiers_hash() {
        let (verifier, challenge) = pkce();
        assert!(verifier.len() >= 43);
        assert_eq!(challenge, b64(&Sha256::digest(verifier.as_bytes())));
    }
}
