//! The owner of a withdrawn account: service auth signed with the account's own key.
//!
//! A mirror does not show the public an account its own server has deactivated, taken down,
//! suspended or deleted, but its owner may still take their copy back. The owner proves who
//! they are as anywhere in the protocol: a service-auth token (a JWT, as
//! `com.atproto.server.getServiceAuth` issues) whose issuer is the account, whose audience is
//! this node (the DID of the account signed in here), whose method (`lxm`) is the one asked,
//! unexpired, and signed by the signing key this node last verified the account's commits with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::crypto::PublicKey;

/// The longest a token may live (as the reference PDS, which issues them for at most an hour).
const MAX_LIFETIME_SECONDS: i64 = 60 * 60;

/// A token longer than this is refused unread.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    lxm: Option<String>,
}

/// What must hold for a token to be the owner's.
pub(super) struct Expect<'a> {
    /// The account.
    pub did: &'a str,
    /// The account's signing key (`did:key`), as last verified.
    pub key: &'a str,
    /// This node's DID.
    pub audience: &'a str,
    /// The method asked for.
    pub lxm: &'a str,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// The bearer token of an `Authorization` header value.
pub(super) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks `token` against `want`; the reason in words when it is not the owner's.
pub(super) fn check(token: &str, want: &Expect<'_>) -> Result<(), String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("the token is too long".into());
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts)".into());
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("the token's {what} is not base64url"))
    };
    let header: Header = serde_json::from_slice(&decode(head, "header")?)
        .map_err(|_| "the token's header is not the expected JSON".to_string())?;
    let claims: Claims = serde_json::from_slice(&decode(body, "claims")?)
        .map_err(|_| "the token's claims are not the expected JSON".to_string())?;
    let signature = decode(sig, "signature")?;

    // `iss` may name a service of the account (`did#service`): the account is what counts.
    let issuer = claims.iss.split('#').next().unwrap_or_default();
    if issuer != want.did {
        return Err(format!(
            "the token was issued by {issuer}, not {}",
            want.did
        ));
    }
    if claims.aud != want.audience {
        return Err(format!(
            "the token is for {}, not for this node ({})",
            claims.aud, want.audience
        ));
    }
    if claims.lxm.as_deref() != Some(want.lxm) {
        return Err(format!("the token is not for {}", want.lxm));
    }
    if claims.exp <= want.now {
        return Err("the token has expired".into());
    }
    let issued = claims.iat.unwrap_or(want.now);
    if claims.exp - issued.min(want.now) > MAX_LIFETIME_SECONDS {
        return Err("the token lives longer than an hour".into());
    }
    let key = PublicKey::from_did_key(want.key)
        .map_err(|e| format!("the account's key cannot be read: {e}"))?;
    let alg_fits = matches!(
        (header.alg.as_str(), &key),
        ("ES256K", PublicKey::K256(_)) | ("ES256", PublicKey::P256(_))
    );
    if !alg_fits {
        return Err(format!(
            "the token is signed with {}, which is not the account's kind of key",
            header.alg
        ));
    }
    let signed = &token.as_bytes()[..head.len() + 1 + body.len()];
    key.verify(signed, &signature)
        .map_err(|_| "the token is not signed by the account's key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use serde_json::json;

    fn token(key: &SigningKey, alg: &str, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": alg}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn only_the_accounts_own_fresh_token_for_this_node_and_method_passes() {
        let key = SigningKey::generate_k256();
        let did_key = key.public_key().to_did_key();
        let want = Expect {
            did: "did:plc:owner",
            key: &did_key,
            audience: "did:plc:node",
            lxm: "com.atproto.sync.getRepo",
            now: 1_000_000,
        };
        let claims = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = json!({"iss": "did:plc:owner", "aud": "did:plc:node",
                "lxm": "com.atproto.sync.getRepo", "iat": 999_990, "exp": 1_000_050});
            f(&mut c);
            c
        };
        assert_eq!(
            check(&token(&key, "ES256K", claims(&|_| {})), &want),
            Ok(())
        );
        let refused = [
            token(
                &key,
                "ES256K",
                claims(&|c| c["iss"] = json!("did:plc:other")),
            ),
            token(
                &key,
                "ES256K",
                claims(&|c| c["aud"] = json!("did:plc:elsewhere")),
            ),
            token(
                &key,
                "ES256K",
                claims(&|c| c["lxm"] = json!("com.atproto.sync.getBlob")),
            ),
            token(&key, "ES256K", claims(&|c| c["exp"] = json!(999_999))),
            token(
                &key,
                "ES256K",
                claims(&|c| c["exp"] = json!(1_000_000 + 7200)),
            ),
            token(&key, "ES256", claims(&|_| {})),
            token(&SigningKey::generate_k256(), "ES256K", claims(&|_| {})),
            "a.b".to_string(),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ];
        for t in refused {
            assert!(check(&t, &want).is_err(), "{t}");
        }
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
