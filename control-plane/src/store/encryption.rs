//! Encryption at rest, in Kubernetes' model (`--encryption-provider-config`, an
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration`): per resource, a list of providers
//! (`aescbc`, `aesgcm`, `secretbox`, `identity`), the first of which encrypts every write and
//! all of which may decrypt what is stored. Stored values carry Kubernetes' prefix
//! `k8s:enc:<provider>:v1:<key name>:`, so a key is found by name and rotation is "put the new
//! key first, then re-write the objects" (`kubectl get secrets -A -o json | kubectl replace -f -`).
//!
//! [`Encrypted`] wraps any [`Storage`]: it encrypts the bytes of writes and decrypts the bytes
//! of reads, lists and watch events, so nothing above the storage boundary changes and nothing
//! below it sees plaintext of an encrypted resource. Values written before encryption was
//! turned on are plaintext and are read only while `identity` is among the resource's
//! providers, as in Kubernetes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::backend::{EventStream, Storage};
use super::{Event, Listing, ObjectKey, StoreError, StoredObject, Write};

/// Why an encryption configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The file could not be read.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// The file is not an EncryptionConfiguration.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: String,
    kind: String,
    resources: Vec<FileResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    resources: Vec<String>,
    providers: Vec<FileProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    aescbc: Option<FileKeys>,
    aesgcm: Option<FileKeys>,
    secretbox: Option<FileKeys>,
    identity: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    secret: String,
}

/// One key of a provider.
#[derive(Clone)]
enum Cipher {
    AesCbc(Vec<u8>),
    AesGcm(Vec<u8>),
    SecretBox([u8; 32]),
}

impl Cipher {
    fn provider(&self) -> &'static str {
        match self {
            Cipher::AesCbc(_) => "aescbc",
            Cipher::AesGcm(_) => "aesgcm",
            Cipher::SecretBox(_) => "secretbox",
        }
    }
}

/// A provider as configured: a cipher with its named keys (the first encrypts), or identity.
#[derive(Clone)]
enum Provider {
    Keys(Vec<(String, Cipher)>),
    Identity,
}

/// What one resource is stored with.
#[derive(Clone)]
struct Rule {
    providers: Vec<Provider>,
}

/// A parsed `EncryptionConfiguration`.
#[derive(Clone)]
pub struct EncryptionConfig {
    /// By storage resource key (`secrets`, `apps/deployments`).
    rules: BTreeMap<String, Rule>,
}

impl std::fmt::Debug for EncryptionConfig {
    /// The resources only: keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("resources", &self.rules.keys().collect::<Vec<_>>())
            .finish()
    }
}

const PREFIX: &str = "k8s:enc:";

fn b64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not base64: {e}"))
}

/// `secrets` → `secrets`; `deployments.apps` → `apps/deployments` (the store's keys).
fn storage_key(resource: &str) -> String {
    match resource.split_once('.') {
        Some((plural, group)) if !group.is_empty() => format!("{group}/{plural}"),
        _ => resource.trim_end_matches('.').to_string(),
    }
}

impl EncryptionConfig {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<EncryptionConfig, EncryptionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EncryptionError::Read(path.display().to_string(), e))?;
        Self::parse(&text)
    }

    /// Parse and check a configuration (YAML or JSON).
    pub fn parse(text: &str) -> Result<EncryptionConfig, EncryptionError> {
        let invalid =
            |m: String| EncryptionError::Invalid(format!("encryption configuration: {m}"));
        let file: FileConfig = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.kind != "EncryptionConfiguration"
            || !matches!(
                file.api_version.as_str(),
                "apiserver.config.k8s.io/v1" | "apiserver.config.k8s.io/v1beta1"
            )
        {
            return Err(invalid(format!(
                "expected apiserver.config.k8s.io/v1 EncryptionConfiguration, got {} {}",
                file.api_version, file.kind
            )));
        }
        let mut rules = BTreeMap::new();
        for (i, r) in file.resources.iter().enumerate() {
            if r.providers.is_empty() {
                return Err(invalid(format!(
                    "resources[{i}]: providers must not be empty"
                )));
            }
            let mut providers = Vec::new();
            for (j, p) in r.providers.iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                let set = [
                    p.aescbc.is_some(),
                    p.aesgcm.is_some(),
                    p.secretbox.is_some(),
                    p.identity.is_some(),
                ];
                if set.iter().filter(|s| **s).count() != 1 {
                    return Err(invalid(format!(
                        "{at}: exactly one of aescbc, aesgcm, secretbox or identity"
                    )));
                }
                let provider = if p.identity.is_some() {
                    Provider::Identity
                } else {
                    let (name, keys) = match (&p.aescbc, &p.aesgcm, &p.secretbox) {
                        (Some(k), _, _) => ("aescbc", k),
                        (_, Some(k), _) => ("aesgcm", k),
                        (_, _, Some(k)) => ("secretbox", k),
                        _ => return Err(invalid(format!("{at}: no provider"))),
                    };
                    if keys.keys.is_empty() {
                        return Err(invalid(format!("{at}.{name}.keys: must not be empty")));
                    }
                    let mut out = Vec::new();
                    for (k, key) in keys.keys.iter().enumerate() {
                        let kat = format!("{at}.{name}.keys[{k}]");
                        if key.name.is_empty() || key.name.contains(':') {
                            return Err(invalid(format!(
                                "{kat}.name: must be non-empty and contain no ':'"
                            )));
                        }
                        let bytes =
                            b64(&key.secret).map_err(|e| invalid(format!("{kat}.secret: {e}")))?;
                        let cipher = match name {
                            "aescbc" | "aesgcm" if ![16, 24, 32].contains(&bytes.len()) => {
                                return Err(invalid(format!(
                                    "{kat}.secret: an AES key is 16, 24 or 32 bytes, not {}",
                                    bytes.len()
                                )))
                            }
                            "aescbc" => Cipher::AesCbc(bytes),
                            "aesgcm" => Cipher::AesGcm(bytes),
                            _ => Cipher::SecretBox(bytes.try_into().map_err(|b: Vec<u8>| {
                                invalid(format!(
                                    "{kat}.secret: a secretbox key is 32 bytes, not {}",
                                    b.len()
                                ))
                            })?),
                        };
                        out.push((key.name.clone(), cipher));
                    }
                    Provider::Keys(out)
                };
                providers.push(provider);
            }
            for res in &r.resources {
                if res.contains('*') {
                    return Err(invalid(format!(
                        "resources[{i}]: wildcards ({res:?}) are not supported; name each resource"
                    )));
                }
                rules.insert(
                    storage_key(res),
                    Rule {
                        providers: providers.clone(),
                    },
                );
            }
        }
        Ok(EncryptionConfig { rules })
    }

    /// The storage resources this configuration names.
    pub fn resources(&self) -> Vec<String> {
        self.rules.keys().cloned().collect()
    }

    /// Is this storage resource encrypted (its first provider is not identity)?
    pub fn encrypts(&self, resource: &str) -> bool {
        self.rules
            .get(resource)
            .is_some_and(|r| matches!(r.providers.first(), Some(Provider::Keys(_))))
    }

    /// The stored form of `plain` for `key`.
    fn encrypt(&self, key: &ObjectKey, plain: &[u8]) -> Result<Bytes, StoreError> {
        let Some(Provider::Keys(keys)) = self
            .rules
            .get(&key.resource)
            .and_then(|r| r.providers.first())
        else {
            return Ok(Bytes::copy_from_slice(plain));
        };
        let Some((name, cipher)) = keys.first() else {
            return Err(StoreError::Transform("a provider without keys".into()));
        };
        let mut out = format!("{PREFIX}{}:v1:{name}:", cipher.provider()).into_bytes();
        seal(cipher, &aad(key), plain, &mut out)?;
        Ok(Bytes::from(out))
    }

    /// The plaintext of `stored` for `key`.
    fn decrypt(&self, key: &ObjectKey, stored: &Bytes) -> Result<Bytes, StoreError> {
        let Some(rule) = self.rules.get(&key.resource) else {
            return Ok(stored.clone());
        };
        let fail = |m: &str| {
            StoreError::Transform(format!(
                "{}/{}/{}: {m}",
                key.resource, key.namespace, key.name
            ))
        };
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            return if rule
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity))
            {
                Ok(stored.clone())
            } else {
                Err(fail(
                    "stored unencrypted, and identity is not among the resource's providers",
                ))
            };
        };
        // <provider>:v1:<key name>:<data>
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(provider), Some(b"v1"), Some(name), Some(data)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("malformed encrypted value"));
        };
        for p in &rule.providers {
            let Provider::Keys(keys) = p else { continue };
            for (n, cipher) in keys {
                if n.as_bytes() == name && cipher.provider().as_bytes() == provider {
                    return open(cipher, &aad(key), data)
                        .map(Bytes::from)
                        .ok_or_else(|| fail("the value does not decrypt with its key"));
                }
            }
        }
        Err(fail(&format!(
            "no configured key {:?} of provider {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(provider)
        )))
    }
}

/// Authenticated data of an AEAD value: the object's key, so a value cannot be moved to
/// another object.
fn aad(key: &ObjectKey) -> Vec<u8> {
    format!("{}/{}/{}", key.resource, key.namespace, key.name).into_bytes()
}

/// AES-GCM with a 12-byte nonce over AES-128/192/256 (by key length).
fn gcm<C>(key: &[u8]) -> Option<aes_gcm::AesGcm<C, aes_gcm::aead::consts::U12>>
where
    aes_gcm::AesGcm<C, aes_gcm::aead::consts::U12>: KeyInit,
{
    aes_gcm::AesGcm::new_from_slice(key).ok()
}

fn gcm_seal(key: &[u8], nonce: &[u8; 12], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
    let n = nonce.into();
    match key.len() {
        16 => gcm::<aes::Aes128>(key)?.encrypt(n, payload).ok(),
        24 => gcm::<aes::Aes192>(key)?.encrypt(n, payload).ok(),
        _ => gcm::<aes::Aes256>(key)?.encrypt(n, payload).ok(),
    }
}

fn gcm_open(key: &[u8], nonce: &[u8], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
    let n = nonce.into();
    match key.len() {
        16 => gcm::<aes::Aes128>(key)?.decrypt(n, payload).ok(),
        24 => gcm::<aes::Aes192>(key)?.decrypt(n, payload).ok(),
        _ => gcm::<aes::Aes256>(key)?.decrypt(n, payload).ok(),
    }
}

type Pkcs7 = cbc::cipher::block_padding::Pkcs7;

fn cbc_seal(key: &[u8], iv: &[u8; 16], plain: &[u8]) -> Option<Vec<u8>> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit};
    Some(match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .ok()?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .ok()?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .ok()?
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
    })
}

fn cbc_open(key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .ok(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .ok(),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .ok(),
    }
}

/// Append `nonce || ciphertext` of `plain` under `cipher` to `out`.
fn seal(cipher: &Cipher, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    use rand::RngCore;
    let sealed = match cipher {
        Cipher::AesGcm(k) => {
            let mut nonce = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            gcm_seal(k, &nonce, Payload { msg: plain, aad }).map(|ct| (nonce.to_vec(), ct))
        }
        Cipher::AesCbc(k) => {
            let mut iv = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut iv);
            cbc_seal(k, &iv, plain).map(|ct| (iv.to_vec(), ct))
        }
        Cipher::SecretBox(k) => {
            let mut nonce = [0u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            crypto_secretbox::XSalsa20Poly1305::new(k.into())
                .encrypt((&nonce).into(), plain)
                .ok()
                .map(|ct| (nonce.to_vec(), ct))
        }
    };
    let (nonce, ct) = sealed
        .ok_or_else(|| StoreError::Transform(format!("encrypting with {}", cipher.provider())))?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(())
}

/// The plaintext of `nonce || ciphertext`; `None` when it does not decrypt.
fn open(cipher: &Cipher, aad: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    match cipher {
        Cipher::AesGcm(k) => {
            let (nonce, ct) = data.split_at_checked(12)?;
            gcm_open(k, nonce, Payload { msg: ct, aad })
        }
        Cipher::AesCbc(k) => {
            let (iv, ct) = data.split_at_checked(16)?;
            cbc_open(k, iv, ct)
        }
        Cipher::SecretBox(k) => {
            let (nonce, ct) = data.split_at_checked(24)?;
            crypto_secretbox::XSalsa20Poly1305::new(k.into())
                .decrypt(nonce.into(), ct)
                .ok()
        }
    }
}

/// A [`Storage`] that encrypts what it stores of the configured resources.
pub struct Encrypted {
    inner: Arc<dyn Storage>,
    config: Arc<EncryptionConfig>,
}

impl Encrypted {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Storage>, config: EncryptionConfig) -> Encrypted {
        Encrypted {
            inner,
            config: Arc::new(config),
        }
    }
}

fn decrypt_object(config: &EncryptionConfig, o: StoredObject) -> Result<StoredObject, StoreError> {
    let data = config.decrypt(&o.key, &o.data)?;
    Ok(StoredObject { data, ..o })
}

fn decrypt_event(config: &EncryptionConfig, ev: Arc<Event>) -> Result<Arc<Event>, StoreError> {
    if !config.rules.contains_key(&ev.object.key.resource) {
        return Ok(ev);
    }
    let object = StoredObject {
        key: ev.object.key.clone(),
        revision: ev.object.revision,
        data: config.decrypt(&ev.object.key, &ev.object.data)?,
    };
    let previous = match &ev.previous {
        Some(p) => Some(config.decrypt(&ev.object.key, p)?),
        None => None,
    };
    Ok(Arc::new(Event {
        kind: ev.kind,
        object,
        previous,
        memo: Default::default(),
    }))
}

struct DecryptingStream {
    inner: Box<dyn EventStream>,
    config: Arc<EncryptionConfig>,
}

impl EventStream for DecryptingStream {
    fn next(&mut self) -> BoxFuture<'_, Result<Arc<Event>, StoreError>> {
        Box::pin(async move {
            let ev = self.inner.next().await?;
            decrypt_event(&self.config, ev)
        })
    }
    fn last_revision(&self) -> u64 {
        self.inner.last_revision()
    }
}

impl Encrypted {
    /// `write` with the data of encrypted resources sealed, and the plain data of a single
    /// create or update (what the write answers with).
    fn seal(&self, write: Write) -> Result<(Write, Option<Bytes>), StoreError> {
        Ok(match write {
            Write::Create { key, data } if self.config.encrypts(&key.resource) => {
                let stored = self.config.encrypt(&key, &data)?;
                (Write::Create { key, data: stored }, Some(data))
            }
            Write::Update {
                key,
                data,
                precondition,
            } if self.config.encrypts(&key.resource) => {
                let stored = self.config.encrypt(&key, &data)?;
                (
                    Write::Update {
                        key,
                        data: stored,
                        precondition,
                    },
                    Some(data),
                )
            }
            Write::Txn(writes) => {
                let sealed = writes
                    .into_iter()
                    .map(|w| self.seal(w).map(|(w, _)| w))
                    .collect::<Result<_, _>>()?;
                (Write::Txn(sealed), None)
            }
            other => (other, None),
        })
    }
}

impl Storage for Encrypted {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<StoredObject, StoreError>> {
        Box::pin(async move { decrypt_object(&self.config, self.inner.get(key).await?) })
    }
    fn list<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            let listing = self.inner.list(resource, namespace).await?;
            if !self.config.rules.contains_key(resource) {
                return Ok(listing);
            }
            let objects = listing
                .objects
                .into_iter()
                .map(|o| decrypt_object(&self.config, o))
                .collect::<Result<_, _>>()?;
            Ok(Listing {
                objects,
                revision: listing.revision,
            })
        })
    }
    fn list_all(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(async move {
            let listing = self.inner.list_all().await?;
            let objects = listing
                .objects
                .into_iter()
                .map(|o| match self.config.rules.contains_key(&o.key.resource) {
                    true => decrypt_object(&self.config, o),
                    false => Ok(o),
                })
                .collect::<Result<_, _>>()?;
            Ok(Listing {
                objects,
                revision: listing.revision,
            })
        })
    }
    fn write(&self, write: Write) -> BoxFuture<'_, Result<StoredObject, StoreError>> {
        Box::pin(async move {
            let (write, plain) = self.seal(write)?;
            let out = self.inner.write(write).await?;
            match plain {
                Some(data) => Ok(StoredObject { data, ..out }),
                None => decrypt_object(&self.config, out),
            }
        })
    }
    fn watch<'a>(
        &'a self,
        resource: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<Box<dyn EventStream>, StoreError>> {
        Box::pin(async move {
            let inner = self.inner.watch(resource, from).await?;
            Ok(Box::new(DecryptingStream {
                inner,
                config: self.config.clone(),
            }) as Box<dyn EventStream>)
        })
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
    fn compacted(&self) -> u64 {
        self.inner.compacted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> EncryptionConfig {
        EncryptionConfig::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    const K32: &str = "c2VjcmV0IGlzIHNlY3VyZSwgcGFzc3dvcmQgaXMgZmU="; // 32 bytes
    const K16: &str = "MTIzNDU2Nzg5MDEyMzQ1Ng=="; // 16 bytes

    #[test]
    fn every_provider_round_trips_and_binds_the_key() {
        let key = ObjectKey::new("secrets", "ns", "pw");
        let other = ObjectKey::new("secrets", "ns", "other");
        for p in ["aescbc", "aesgcm", "secretbox"] {
            for k in [K32, K16] {
                if p == "secretbox" && k == K16 {
                    continue;
                }
                let c = config(&format!(
                    "  - {p}: {{keys: [{{name: k1, secret: \"{k}\"}}]}}\n"
                ));
                let plain = br#"{"data":{"password":"czNjcmV0"}}"#;
                let stored = c.encrypt(&key, plain).unwrap();
                assert!(stored.starts_with(format!("k8s:enc:{p}:v1:k1:").as_bytes()));
                assert!(
                    !stored.windows(8).any(|w| w == b"czNjcmV0"),
                    "{p}: plaintext stored"
                );
                assert_eq!(&c.decrypt(&key, &stored).unwrap()[..], plain, "{p}");
                // AEAD values are bound to their object.
                if p == "aesgcm" {
                    assert!(c.decrypt(&other, &stored).is_err());
                }
                // Tampering is detected (except by CBC, which has no tag; it then rarely pads).
                if p != "aescbc" {
                    let mut bad = stored.to_vec();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    assert!(c.decrypt(&key, &Bytes::from(bad)).is_err(), "{p}");
                }
            }
        }
    }

    #[test]
    fn rotation_and_identity() {
        let key = ObjectKey::new("secrets", "ns", "pw");
        let old = config(&format!(
            "  - aescbc: {{keys: [{{name: old, secret: \"{K32}\"}}]}}\n  - identity: {{}}\n"
        ));
        let stored_old = old.encrypt(&key, b"v").unwrap();
        // Plaintext from before encryption is read while identity is listed, and refused after.
        assert_eq!(
            &old.decrypt(&key, &Bytes::from_static(b"plain")).unwrap()[..],
            b"plain"
        );
        let strict = config(&format!(
            "  - aescbc: {{keys: [{{name: old, secret: \"{K32}\"}}]}}\n"
        ));
        assert!(strict.decrypt(&key, &Bytes::from_static(b"plain")).is_err());
        // A new key first: new writes use it, old values still read.
        let rotated = config(&format!(
            "  - secretbox: {{keys: [{{name: new, secret: \"{K32}\"}}]}}\n  - aescbc: {{keys: [{{name: old, secret: \"{K32}\"}}]}}\n"
        ));
        assert_eq!(&rotated.decrypt(&key, &stored_old).unwrap()[..], b"v");
        assert!(rotated
            .encrypt(&key, b"v")
            .unwrap()
            .starts_with(b"k8s:enc:secretbox:v1:new:"));
        // identity first: stored as is.
        let off = config(&format!(
            "  - identity: {{}}\n  - aescbc: {{keys: [{{name: old, secret: \"{K32}\"}}]}}\n"
        ));
        assert!(!off.encrypts("secrets"));
        assert_eq!(&off.decrypt(&key, &stored_old).unwrap()[..], b"v");
        // Other resources are untouched.
        let cm = ObjectKey::new("configmaps", "ns", "c");
        assert_eq!(
            &old.decrypt(&cm, &Bytes::from_static(b"x")).unwrap()[..],
            b"x"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let cases = [
            "kind: Nope\napiVersion: v1\nresources: []",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: []",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {keys: [{name: k, secret: \"c2hvcnQ=\"}]}",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {name: x}",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: ['*.*']\n  providers:\n  - identity: {}",
        ];
        for c in cases {
            assert!(EncryptionConfig::parse(c).is_err(), "{c}");
        }
        let ok = EncryptionConfig::parse("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, deployments.apps]\n  providers:\n  - aesgcm: {keys: [{name: k, secret: \"MTIzNDU2Nzg5MDEyMzQ1Ng==\"}]}").unwrap();
        assert!(
            ok.encrypts("secrets") && ok.encrypts("apps/deployments") && !ok.encrypts("configmaps")
        );
    }
}
