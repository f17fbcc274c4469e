//! ServiceAccount tokens: signed, expiring JWTs in the shape kube-apiserver issues (ES256, the
//! `kubernetes.io` private claim naming the namespace, the ServiceAccount and the pod a token is
//! bound to), and the OpenID discovery documents that let others verify them.
//!
//! Pure apart from the clock: the signer checks signature, issuer, audience and time; whether
//! the ServiceAccount (and pod) a token names still exists with the same uid is the
//! authenticator's question ([`super::authn`]).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The issuer (`iss`) and default audience of skiff's tokens, as k3s names it.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Shortest and longest lifetimes a TokenRequest may ask for (Kubernetes: 10 minutes, 2^32 s).
pub const MIN_EXPIRATION: i64 = 600;
/// See [`MIN_EXPIRATION`].
pub const MAX_EXPIRATION: i64 = 1 << 32;

/// Why a token was not accepted (never shown to the client, which gets a plain 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT of ours: bad signature, algorithm, issuer or audience, or expired.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The signing key could not be used.
    #[error("signing key: {0}")]
    Key(String),
}

/// What a token is bound to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: Ref,
    /// The pod the token is bound to, if any: it stops working when that pod is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
}

/// A token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Unique id of this token.
    pub jti: String,
    /// What the token belongs to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// Signs and verifies tokens with the cluster's service-account key.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
}

impl Signer {
    /// A signer for a P-256 key: `pkcs8` is its private key (DER), `public` the uncompressed
    /// public point (`04 || x || y`).
    pub fn new(pkcs8: &[u8], public: &[u8]) -> Result<Signer, TokenError> {
        if public.len() != 65 || public[0] != 4 {
            return Err(TokenError::Key(
                "the service-account key is not an uncompressed P-256 point".into(),
            ));
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&public[1..33]), b64(&public[33..]));
        let decoding = DecodingKey::from_ec_components(&x, &y)?;
        use sha2::Digest;
        let kid = b64(&sha2::Sha256::digest(public));
        Ok(Signer {
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
            kid,
            x,
            y,
        })
    }

    /// Sign `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// The claims of a token this signer issued, if its signature, issuer and times hold now
    /// and one of its audiences is in `audiences`.
    pub fn verify(&self, token: &str, audiences: &[&str]) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        v.validate_nbf = true;
        // A minute of clock skew, as kube-apiserver allows.
        v.leeway = 60;
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)?.claims)
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256",
            "kid": self.kid, "x": self.x, "y": self.y,
        }]})
    }
}

/// `/.well-known/openid-configuration`, as kube-apiserver serves it.
pub fn openid_configuration(jwks_uri: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// The user name of a ServiceAccount.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups of a ServiceAccount in `namespace`.
pub fn groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate().unwrap();
        Signer::new(&key.serialize_der(), key.public_key_raw()).unwrap()
    }

    fn claims(exp_in: i64, aud: &str) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            iss: ISSUER.into(),
            sub: user_name("team-a", "bot"),
            aud: vec![aud.into()],
            exp: now + exp_in,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "team-a".into(),
                serviceaccount: Ref {
                    name: "bot".into(),
                    uid: "u1".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn tokens_verify_only_when_signed_current_and_for_us() {
        let s = signer();
        let other = signer();
        let good = s.sign(&claims(600, ISSUER)).unwrap();
        struct Case {
            name: &'static str,
            token: String,
            ok: bool,
        }
        let tampered = {
            // Same header and signature, a payload naming someone else.
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            let mut c = claims(600, ISSUER);
            c.sub = user_name("kube-system", "admin");
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&c).unwrap());
            parts.join(".")
        };
        let none_alg = {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"alg":"none","typ":"JWT"}"#);
            let body = good.split('.').nth(1).unwrap().to_string();
            format!("{header}.{body}.")
        };
        let cases = [
            Case {
                name: "good",
                token: good.clone(),
                ok: true,
            },
            Case {
                name: "expired beyond the leeway",
                token: s.sign(&claims(-120, ISSUER)).unwrap(),
                ok: false,
            },
            Case {
                name: "another key",
                token: other.sign(&claims(600, ISSUER)).unwrap(),
                ok: false,
            },
            Case {
                name: "another audience",
                token: s.sign(&claims(600, "vault")).unwrap(),
                ok: false,
            },
            Case {
                name: "tampered payload",
                token: tampered,
                ok: false,
            },
            Case {
                name: "alg none",
                token: none_alg,
                ok: false,
            },
            Case {
                name: "garbage",
                token: "a.b.c".into(),
                ok: false,
            },
        ];
        for c in cases {
            assert_eq!(s.verify(&c.token, &[ISSUER]).is_ok(), c.ok, "{}", c.name);
        }
        let back = s.verify(&good, &[ISSUER]).unwrap();
        assert_eq!(back.kubernetes.serviceaccount.uid, "u1");
        assert_eq!(s.jwks()["keys"][0]["kid"], json!(s.kid));
    }
}
