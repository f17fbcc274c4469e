//! The node join token, in the k3s format `K10<sha256 of the CA PEM>::node:<secret>`.
//! The CA hash lets a joining node fetch the CA over an unverified connection and then check it.

use sha2::{Digest, Sha256};

/// Errors of parsing a join token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not of the `K10<hash>::node:<secret>` form.
    #[error("malformed join token: expected K10<ca-hash>::node:<secret>")]
    Malformed,
}

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex sha256 of the cluster CA certificate in PEM form.
    pub ca_hash: String,
    /// The secret part.
    pub secret: String,
}

/// The header one node's gateway sends another's to prove it is a node of the cluster (only
/// nodes may route to a pod by its `<pod>.<ns>.pod` name).
pub const GATEWAY_PEER_HEADER: &str = "skiff-gateway-peer";

/// The value of [`GATEWAY_PEER_HEADER`]: derived from the join token every node holds, so the
/// token itself never travels in a gateway request.
pub fn gateway_peer_secret(join_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"skiff gateway peers v1\0");
    h.update(join_token.trim().as_bytes());
    hex::encode(h.finalize())
}

impl JoinToken {
    /// Build a token for the given CA PEM and secret.
    pub fn new(ca_pem: &[u8], secret: &str) -> Self {
        JoinToken {
            ca_hash: ca_hash(ca_pem),
            secret: secret.to_string(),
        }
    }

    /// Parse the textual form.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let rest = s.strip_prefix("K10").ok_or(TokenError::Malformed)?;
        let (hash, cred) = rest.split_once("::").ok_or(TokenError::Malformed)?;
        let secret = cred.strip_prefix("node:").ok_or(TokenError::Malformed)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// Does this PEM match the CA hash in the token?
    pub fn matches_ca(&self, ca_pem: &[u8]) -> bool {
        ca_hash(ca_pem) == self.ca_hash
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "K10{}::node:{}", self.ca_hash, self.secret)
    }
}

/// Hex sha256 of a CA PEM.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good = JoinToken::new(b"pem", "s3cret");
        let text = good.to_string();
        let cases: &[(&str, bool)] = &[
            (&text, true),
            ("", false),
            ("K10abc::node:x", false),
            ("K10::node:x", false),
            (&text.replace("::node:", "::server:"), false),
            (&text.replace("s3cret", ""), false),
        ];
        for (input, ok) in cases {
            assert_eq!(JoinToken::parse(input).is_ok(), *ok, "{input}");
        }
        assert_eq!(JoinToken::parse(&text).unwrap(), good);
        assert!(good.matches_ca(b"pem"));
        assert!(!good.matches_ca(b"other"));
    }
}
