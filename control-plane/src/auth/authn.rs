//! Authentication: who a bearer token or client certificate names. Static tokens (the admin's,
//! the node join token, and the per-start tokens of the in-process components), ServiceAccount
//! JWTs (valid only while the ServiceAccount, and the pod a token is bound to, exist with the
//! uids the token names), and x509 client certificates signed by the cluster CA (CN = user,
//! O = groups). Every authenticated user is in `system:authenticated`.
//!
//! Invariants: a failure says nothing about why (the caller answers a plain 401); token
//! comparison is constant-time; a token is never logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::rbac::UserInfo;
use super::satoken::{self, Signer};
use crate::store::{ObjectKey, Storage};

/// Every authenticated user's group.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Extra keys kube-apiserver sets on ServiceAccount users.
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// How long a verified ServiceAccount token's signature stays trusted without checking it again
/// (kube-apiserver caches token authentication for 10 s too). Expiry, and the ServiceAccount's
/// and pod's existence, are checked on every request regardless.
const VERIFIED_TTL: Duration = Duration::from_secs(10);
/// Most tokens remembered as verified (the memory is cleared when full).
const VERIFIED_MAX: usize = 4096;

/// A token's claims and when its signature was checked.
type Verified = (Arc<satoken::Claims>, Instant);

/// Maps credentials to users.
pub struct Authenticator {
    /// Token → user (a handful: admin, join token, components).
    tokens: Vec<(String, UserInfo)>,
    /// Signs and verifies ServiceAccount tokens.
    pub signer: Signer,
    /// SHA-256 of a token for the API's audience → its claims and when they were verified.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl Authenticator {
    /// An authenticator for `tokens` and ServiceAccount tokens of `signer`.
    pub fn new(tokens: Vec<(String, UserInfo)>, signer: Signer) -> Authenticator {
        Authenticator {
            tokens,
            signer,
            verified: Mutex::default(),
        }
    }

    /// The user a bearer token names, if any.
    pub async fn bearer(&self, token: &str, store: &dyn Storage) -> Option<UserInfo> {
        let mut found = None;
        // Every static token is compared, so timing tells nothing about which one is close.
        for (t, user) in &self.tokens {
            if constant_time_eq(token.as_bytes(), t.as_bytes()) {
                found = Some(user);
            }
        }
        if let Some(user) = found {
            return Some(user.clone());
        }
        self.service_account(token, &[satoken::ISSUER], store).await
    }

    /// The ServiceAccount a token for one of `audiences` names, if it is valid now.
    pub async fn service_account(
        &self,
        token: &str,
        audiences: &[&str],
        store: &dyn Storage,
    ) -> Option<UserInfo> {
        if token.split('.').count() != 3 {
            return None;
        }
        let claims = if audiences == [satoken::ISSUER] {
            self.verified_for_api(token)?
        } else {
            Arc::new(self.verify(token, audiences)?)
        };
        service_account_user(&claims, store).await
    }

    fn verify(&self, token: &str, audiences: &[&str]) -> Option<satoken::Claims> {
        match self.signer.verify(token, audiences) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "service account token refused");
                None
            }
        }
    }

    /// The claims of a token for the API's own audience, verified at most [`VERIFIED_TTL`] ago
    /// and not expired now.
    fn verified_for_api(&self, token: &str) -> Option<Arc<satoken::Claims>> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            .filter(|(_, at)| now.duration_since(*at) < VERIFIED_TTL);
        if let Some((claims, _)) = remembered {
            return (claims.exp > jiff::Timestamp::now().as_second()).then_some(claims);
        }
        let claims = Arc::new(self.verify(token, &[satoken::ISSUER])?);
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_MAX {
                m.clear();
            }
            m.insert(key, (claims.clone(), now));
        }
        Some(claims)
    }
}

/// A ServiceAccount token's user, if what it is bound to still exists with the uids it names.
async fn service_account_user(claims: &satoken::Claims, store: &dyn Storage) -> Option<UserInfo> {
    let k = &claims.kubernetes;
    let sa = &k.serviceaccount;
    if claims.sub != satoken::user_name(&k.namespace, &sa.name) {
        return None;
    }
    if !current(store, "serviceaccounts", &k.namespace, &sa.name, &sa.uid).await {
        return None;
    }
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        if !current(store, "pods", &k.namespace, &pod.name, &pod.uid).await {
            return None;
        }
        extra.insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
        extra.insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
    }
    extra.insert(
        EXTRA_CREDENTIAL_ID.to_string(),
        vec![format!("JTI={}", claims.jti)],
    );
    let mut groups = satoken::groups(&k.namespace);
    groups.push(AUTHENTICATED.into());
    Some(UserInfo {
        name: claims.sub.clone(),
        uid: sa.uid.clone(),
        groups,
        extra,
    })
}

/// Does the object exist, with `uid`, and not being deleted?
async fn current(store: &dyn Storage, resource: &str, ns: &str, name: &str, uid: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        #[serde(default)]
        uid: String,
        #[serde(default)]
        deletion_timestamp: Option<String>,
    }
    let Ok(obj) = store.get(&ObjectKey::new(resource, ns, name)).await else {
        return false;
    };
    // Only the metadata is decoded: this runs on every request a ServiceAccount makes.
    serde_json::from_slice::<Object>(&obj.data)
        .is_ok_and(|o| o.metadata.uid == uid && o.metadata.deletion_timestamp.is_none())
}

/// The user of a client certificate's subject: CN is the name, each O a group.
pub fn certificate_user(cn: &str, orgs: &[String]) -> Option<UserInfo> {
    if cn.is_empty() {
        return None;
    }
    let mut groups = orgs.to_vec();
    groups.push(AUTHENTICATED.into());
    Some(UserInfo {
        name: cn.to_string(),
        groups,
        ..Default::default()
    })
}

/// The user of node `name`: `system:node:NAME` in `system:nodes`.
pub fn node_user(name: &str) -> UserInfo {
    user(&format!("system:node:{name}"), &["system:nodes"])
}

/// A user with `name` in `groups` (and `system:authenticated`).
pub fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups
            .iter()
            .copied()
            .chain([AUTHENTICATED])
            .map(str::to_string)
            .collect(),
        ..Default::default()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
