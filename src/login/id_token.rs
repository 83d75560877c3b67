//! Validation of the id_token a sign-in returns (OIDC Core §3.1.3.7): the
//! signature against the IdP's JWKS, `iss`, `aud`, `exp` and the `nonce` we
//! sent. The cryptography and the claim checks are `jsonwebtoken`'s (with the
//! aws-lc-rs backend already in the tree for rustls); this module only picks
//! the key and states the policy.
//!
//! Policy: only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted, so
//! a token "signed" with `HS256` under the public key, or `none`, is refused
//! (algorithm confusion); the key is the JWKS entry with the token's `kid`
//! (or the only key, when the token names none); 60 s of clock leeway.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp`/`nbf`/`iat`.
const LEEWAY_SECS: u64 = 60;

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a valid id_token tells us (no secret in here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The subject.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Cognito's `token_use` (`id` or `access`), when present.
    pub token_use: Option<String>,
    /// Cognito's `cognito:username`, when present.
    pub cognito_username: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    nonce: Option<String>,
    token_use: Option<String>,
    #[serde(rename = "cognito:username")]
    cognito_username: Option<String>,
}

/// Why an id_token was refused (secret-free: never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the id_token from the identity provider is not valid: {0}")]
pub struct Invalid(pub String);

/// Check `token` against `jwks`, the expected issuer and audience (the
/// client id), and `nonce` when the request sent one.
pub fn verify(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
) -> Result<Verified, Invalid> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| Invalid(format!("unreadable header ({})", kind(&e))))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(Invalid(format!(
            "algorithm {:?} is not accepted (only asymmetric signatures are)",
            header.alg
        )));
    }
    let jwk = pick_key(jwks, header.kid.as_deref())?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| Invalid(format!("unusable signing key ({})", kind(&e))))?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
        .map_err(|e| Invalid(kind(&e).to_owned()))?;
    let claims = data.claims;
    if let Some(want) = nonce {
        match claims.nonce.as_deref() {
            Some(got) if constant_eq(got, want) => {}
            Some(_) => return Err(Invalid("nonce does not match the one sent".into())),
            None => return Err(Invalid("nonce missing (one was sent)".into())),
        }
    }
    Ok(Verified {
        sub: claims.sub,
        exp: claims.exp,
        token_use: claims.token_use,
        cognito_username: claims.cognito_username,
    })
}

fn pick_key<'a>(jwks: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, Invalid> {
    match kid {
        Some(kid) => jwks
            .find(kid)
            .ok_or_else(|| Invalid(format!("no key with kid {kid:?} in the provider's JWKS"))),
        None => match jwks.keys.as_slice() {
            [only] => Ok(only),
            _ => Err(Invalid(
                "the token names no kid and the JWKS has more than one key".into(),
            )),
        },
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The error kind as words (jsonwebtoken's `Display` can quote claim values).
fn kind(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "malformed token",
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not valid yet (nbf)",
        K::InvalidIssuer => "wrong issuer (iss)",
        K::InvalidAudience => "wrong audience (aud)",
        K::InvalidAlgorithm => "algorithm does not match the key",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => "invalid key",
        K::MissingAlgorithm => "key has no usable algorithm",
        K::Base64(_) | K::Json(_) | K::Utf8(_) => "malformed token",
        _ => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISS: &str = "http://127.0.0.1:3000";

    struct Key {
        enc: EncodingKey,
        jwks: JwkSet,
    }

    fn key(kid: &str) -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        Key {
            enc,
            jwks: JwkSet { keys: vec![jwk] },
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(k: &Key, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(Into::into);
        jsonwebtoken::encode(&h, &claims, &k.enc).unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"iss": ISS, "aud": "daemon", "sub": "alice", "exp": now() + 300, "iat": now(), "nonce": "n-1"})
    }

    #[test]
    fn accepts_a_valid_token() {
        let k = key("k1");
        let t = token(&k, Some("k1"), good_claims());
        let v = verify(&t, &k.jwks, ISS, "daemon", Some("n-1")).unwrap();
        assert_eq!(v.sub, "alice");
        // No kid in the token and one key in the set: that key.
        let t = token(&k, None, good_claims());
        assert!(verify(&t, &k.jwks, ISS, "daemon", Some("n-1")).is_ok());
    }

    #[test]
    fn refuses_each_broken_claim() {
        let k = key("k1");
        let cases = [
            (
                "nonce",
                json!({"nonce": "forged"}),
                Some("n-1"),
                "nonce does not match",
            ),
            (
                "no nonce",
                json!({"nonce": null}),
                Some("n-1"),
                "nonce missing",
            ),
            (
                "iss",
                json!({"iss": "http://127.0.0.1:9"}),
                None,
                "wrong issuer",
            ),
            ("aud", json!({"aud": "other"}), None, "wrong audience"),
            ("exp", json!({"exp": now() - 3600}), None, "expired"),
        ];
        for (what, patch, nonce, want) in cases {
            let mut c = good_claims();
            for (key, val) in patch.as_object().unwrap() {
                if val.is_null() {
                    c.as_object_mut().unwrap().remove(key);
                } else {
                    c[key] = val.clone();
                }
            }
            let t = token(&k, Some("k1"), c);
            let e = verify(&t, &k.jwks, ISS, "daemon", nonce).unwrap_err();
            assert!(e.0.contains(want), "{what}: {e}");
        }
    }

    #[test]
    fn refuses_other_keys_and_symmetric_algorithms() {
        let k = key("k1");
        let other = key("k1");
        let t = token(&other, Some("k1"), good_claims());
        assert!(
            verify(&t, &k.jwks, ISS, "daemon", None)
                .unwrap_err()
                .0
                .contains("bad signature")
        );
        let t = token(&k, Some("k9"), good_claims());
        assert!(
            verify(&t, &k.jwks, ISS, "daemon", None)
                .unwrap_err()
                .0
                .contains("no key with kid")
        );
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap();
        assert!(
            verify(&hs, &k.jwks, ISS, "daemon", None)
                .unwrap_err()
                .0
                .contains("not accepted")
        );
        assert!(verify("not.a.jwt", &k.jwks, ISS, "daemon", None).is_err());
    }

    #[test]
    fn errors_never_quote_the_token() {
        let k = key("k1");
        let t = token(
            &k,
            Some("k1"),
            json!({"iss": "secret-iss-value", "aud": "daemon", "sub": "s", "exp": now() + 60}),
        );
        let e = verify(&t, &k.jwks, ISS, "daemon", None).unwrap_err();
        assert!(!e.to_string().contains("secret-iss-value"));
        assert!(!e.to_string().contains(&t));
    }
}
