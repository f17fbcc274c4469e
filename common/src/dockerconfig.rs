//! Registry credentials in Docker's formats: a `kubernetes.io/dockerconfigjson` Secret's
//! `.dockerconfigjson` (`{"auths": {KEY: {...}}}`), a `kubernetes.io/dockercfg` Secret's
//! `.dockercfg` (the map alone), and Docker's own `config.json` (which `skiff push` reads).
//!
//! Which entry serves an image follows the kubelet's keyring: a key is a registry host with an
//! optional port and path (a scheme is ignored), host labels may be globs (`*.example.com`),
//! the ports must be equal, and the key's path must be a prefix of the image's repository;
//! the most specific key is tried first. `index.docker.io`, `registry-1.docker.io` and the
//! legacy `https://index.docker.io/v1/` all name `docker.io`.
//!
//! A [`Credential`] never prints its password (`Debug` shows the user only).

use std::collections::BTreeMap;

use base64::Engine;

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// The JSON does not parse as a Docker config.
    #[error("not a Docker config: {0}")]
    Json(String),
    /// An `auth` field is not base64 of `user:password`.
    #[error("the auth of {0:?} is not base64 of user:password")]
    Auth(String),
}

/// One user and password for one registry key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key it was given under, normalised (`host[:port][/path]`).
    pub key: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(serde::Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The credentials of a `.dockerconfigjson` or `config.json` (`{"auths": ...}`).
pub fn parse_config_json(bytes: &[u8]) -> Result<Vec<Credential>, DockerConfigError> {
    let c: ConfigJson = serde_json::from_slice(bytes).map_err(json_error)?;
    entries(c.auths)
}

/// The credentials of a legacy `.dockercfg` (the map of keys alone).
pub fn parse_dockercfg(bytes: &[u8]) -> Result<Vec<Credential>, DockerConfigError> {
    let m: BTreeMap<String, Entry> = serde_json::from_slice(bytes).map_err(json_error)?;
    entries(m)
}

/// Where the JSON went wrong, without serde's words, which may quote a value (a password).
fn json_error(e: serde_json::Error) -> DockerConfigError {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "bad JSON",
        _ => "an unexpected value",
    };
    DockerConfigError::Json(format!("{what} at line {} column {}", e.line(), e.column()))
}

fn entries(m: BTreeMap<String, Entry>) -> Result<Vec<Credential>, DockerConfigError> {
    let mut out = Vec::new();
    for (key, e) in m {
        let (username, password) = match (&e.auth, e.username, e.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| DockerConfigError::Auth(key.clone()))?;
                let s = String::from_utf8(raw).map_err(|_| DockerConfigError::Auth(key.clone()))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| DockerConfigError::Auth(key.clone()))?;
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u, p),
            // An entry without a password (a credential helper's) serves nothing here.
            _ => continue,
        };
        out.push(Credential {
            key: normalise_key(&key),
            username,
            password,
        });
    }
    Ok(out)
}

/// `host[:port][/path]` of a key: no scheme, no trailing `/`, Docker Hub's names as `docker.io`.
pub fn normalise_key(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (k, ""),
    };
    let host = host.to_ascii_lowercase();
    let (host, path) = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            // The legacy key `https://index.docker.io/v1/` names the whole hub.
            let path = if path == "v1" || path == "v2" {
                ""
            } else {
                path
            };
            ("docker.io".to_string(), path)
        }
        _ => (host, path),
    };
    if path.is_empty() {
        host
    } else {
        format!("{host}/{path}")
    }
}

/// Whether the key's host (labels may be `*`-globs) and port match `host`. Pure.
fn host_matches(key_host: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (n.into(), p.into()),
            _ => (h.into(), String::new()),
        }
    };
    let (kn, kp) = split(key_host);
    let (hn, hp) = split(&host.to_ascii_lowercase());
    if kp != hp {
        return false;
    }
    let (kl, hl): (Vec<&str>, Vec<&str>) = (kn.split('.').collect(), hn.split('.').collect());
    kl.len() == hl.len() && kl.iter().zip(&hl).all(|(k, h)| glob(k, h))
}

/// `*` matches any run of characters within one label.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, rest)) => {
            let Some(s) = s.strip_prefix(pre) else {
                return false;
            };
            (0..=s.len()).any(|i| s.is_char_boundary(i) && glob(rest, &s[i..]))
        }
    }
}

/// The credentials that serve `repository` on `host`, most specific key first. Pure.
pub fn lookup<'a>(creds: &'a [Credential], host: &str, repository: &str) -> Vec<&'a Credential> {
    let host = normalise_key(host);
    let mut found: Vec<&Credential> = creds
        .iter()
        .filter(|c| {
            let (kh, kp) = c.key.split_once('/').unwrap_or((&c.key, ""));
            host_matches(kh, &host)
                && (kp.is_empty()
                    || repository == kp
                    || repository
                        .strip_prefix(kp)
                        .is_some_and(|r| r.starts_with('/')))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.key.len()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(key: &str, user: &str) -> Credential {
        Credential {
            key: normalise_key(key),
            username: user.into(),
            password: "p".into(),
        }
    }

    #[test]
    fn keys_normalise() {
        for (key, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io/team", "docker.io/team"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("Registry.Example/team/", "registry.example/team"),
        ] {
            assert_eq!(normalise_key(key), want, "{key}");
        }
    }

    #[test]
    fn lookup_table() {
        let creds = [
            cred("registry.example", "host"),
            cred("registry.example/team", "team"),
            cred("*.corp.example", "glob"),
            cred("127.0.0.1:5000", "port"),
            cred("https://index.docker.io/v1/", "hub"),
        ];
        // (host, repository, users in the order they are tried)
        let cases: &[(&str, &str, &[&str])] = &[
            ("registry.example", "team/app", &["team", "host"]),
            ("registry.example", "teamx/app", &["host"]),
            ("registry.example", "team", &["team", "host"]),
            ("registry.example:443", "team/app", &[]),
            ("a.corp.example", "x", &["glob"]),
            ("a.b.corp.example", "x", &[]),
            ("corp.example", "x", &[]),
            ("127.0.0.1:5000", "x", &["port"]),
            ("127.0.0.1", "x", &[]),
            ("127.0.0.1:5001", "x", &[]),
            ("docker.io", "library/nginx", &["hub"]),
            ("other.example", "team/app", &[]),
        ];
        for (host, repo, want) in cases {
            let got: Vec<&str> = lookup(&creds, host, repo)
                .iter()
                .map(|c| c.username.as_str())
                .collect();
            assert_eq!(got, *want, "{host}/{repo}");
        }
    }

    #[test]
    fn formats_parse_and_hide_the_password() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let json = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{auth}"}},
                "s.example": {{"username": "bob", "password": "pw"}},
                "helper.example": {{}}}}}}"#
        );
        let got = parse_config_json(json.as_bytes()).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].username.as_str(), got[0].password.as_str()),
            ("alice", "s3cret:x")
        );
        assert_eq!(got[1].username, "bob");
        assert!(!format!("{got:?}").contains("s3cret"));
        let cfg = parse_dockercfg(br#"{"r.example": {"username": "u", "password": "p"}}"#);
        assert_eq!(cfg.expect("parses")[0].key, "r.example");
        for bad in [
            &br#"{"auths": {"r": {"auth": "!!"}}}"#[..],
            br#"{"auths": {"r": {"auth": "bm9jb2xvbg=="}}}"#,
            b"[1]",
            br#"{"auths": {"r": {"username": "u", "password": ["hunter2"]}}}"#,
            br#"{"auths": "hunter2"}"#,
        ] {
            let e = parse_config_json(bad).expect_err("refused").to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
