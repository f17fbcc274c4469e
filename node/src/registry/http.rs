//! The pull side of the OCI distribution API, with every answer read with a bound: a pod author
//! names the registry, so its answers are hostile input. (`oci-client`, which the node uses for
//! references, manifest types and `skiff push`, reads manifests, token answers and error bodies
//! whole, so pulls do not go through its client.)
//!
//! Auth as Docker's: a request goes with the header that last worked for the repository (or
//! the identity's Basic credentials, or none); a 401 is answered once from its
//! `WWW-Authenticate` challenge: `Basic` with the credentials, `Bearer` with a token from the
//! challenge's realm (asked with the credentials, its answer at most `MAX_TOKEN` bytes). A
//! realm over plain HTTP is taken only for a registry the node speaks plain HTTP to. reqwest
//! drops the `Authorization` header on a redirect to another host.
//!
//! [`parse_challenge`] is pure and table-tested.

use std::collections::HashMap;
use std::sync::Mutex;

/// The largest token answer read.
const MAX_TOKEN: u64 = 64 << 10;
/// The most remembered headers per identity; past it they are all dropped.
const MAX_HEADERS: usize = 1024;

/// One identity's user and password (none: anonymous).
pub(super) type Basic = Option<(String, String)>;

/// The HTTP client of one identity, and the headers that worked, by `host/repository`.
pub(super) struct Clients {
    http: reqwest_oci::Client,
    headers: Mutex<HashMap<String, String>>,
}

impl Clients {
    /// A client that trusts the system roots and `roots` (PEM bundles).
    pub(super) fn new(roots: &[Vec<u8>]) -> Clients {
        let mut http = reqwest_oci::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(std::time::Duration::from_secs(60));
        for pem in roots {
            for cert in reqwest_oci::Certificate::from_pem_bundle(pem)
                .into_iter()
                .flatten()
            {
                http = http.add_root_certificate(cert);
            }
        }
        Clients {
            http: http.build().unwrap_or_default(),
            headers: Mutex::default(),
        }
    }
}

/// Where a pull goes and as whom.
pub(super) struct Repo<'a> {
    pub clients: &'a Clients,
    /// `http` only for `--insecure-registry` hosts.
    pub scheme: &'a str,
    pub host: &'a str,
    pub repository: &'a str,
    pub basic: &'a Basic,
}

impl Repo<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    fn basic_header(&self) -> Option<String> {
        use base64::Engine;
        self.basic.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// GET `/v2/<repository>/<path>` (`manifests/...`, `blobs/...`), answering one challenge.
    pub(super) async fn get(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<reqwest_oci::Response, String> {
        let url = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme, self.host, self.repository
        );
        let remembered = self
            .clients
            .headers
            .lock()
            .ok()
            .and_then(|h| h.get(&self.key()).cloned());
        let mut header = remembered.or_else(|| self.basic_header());
        for attempt in 0..2 {
            let mut req = self.clients.http.get(&url).header("Accept", accept);
            if let Some(h) = &header {
                req = req.header("Authorization", h);
            }
            let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
            if resp.status() != reqwest_oci::StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .ok_or_else(|| {
                    format!("{url}: HTTP 401 without a challenge the node understands")
                })?;
            header = Some(self.answer(&challenge).await?);
            if let (Ok(mut h), Some(v)) = (self.clients.headers.lock(), &header) {
                if h.len() >= MAX_HEADERS {
                    h.clear();
                }
                h.insert(self.key(), v.clone());
            }
        }
        Err(format!("{url}: unauthorized"))
    }

    /// The `Authorization` a challenge asks for.
    async fn answer(&self, c: &Challenge) -> Result<String, String> {
        if c.scheme.eq_ignore_ascii_case("basic") {
            return self
                .basic_header()
                .ok_or_else(|| "the registry wants a user and password (imagePullSecrets)".into());
        }
        let realm = c
            .params
            .get("realm")
            .ok_or("the registry's Bearer challenge names no realm")?;
        let plain_ok = self.scheme == "http";
        if !(realm.starts_with("https://") || (plain_ok && realm.starts_with("http://"))) {
            return Err(format!(
                "the registry's token service {realm:?} is not HTTPS"
            ));
        }
        let scope = c
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut query = vec![("scope", scope)];
        if let Some(s) = c.params.get("service") {
            query.push(("service", s.clone()));
        }
        let mut req = self.clients.http.get(realm).query(&query);
        if let Some((u, p)) = self.basic {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("the token service: {}", e.without_url()))?;
        let status = resp.status();
        let body = read_bounded(resp, MAX_TOKEN)
            .await
            .map_err(|e| format!("the token service's answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("the token service refused: HTTP {status}"));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|_| "the token service answered something that is not a token".to_string())?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| "the token service answered no token".into())
    }
}

/// A response's body, read no further than `max` bytes.
pub(super) async fn read_bounded(resp: reqwest_oci::Response, max: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(format!("larger than {max} bytes"));
    }
    let mut out = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(format!("larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, PartialEq)]
pub(super) struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parse `Scheme k="v", k2=v2` (quoted values may hold commas and `\"`). Pure.
pub(super) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        chars.next_if_eq(&'=')?;
        let value = if chars.next_if_eq(&'"').is_some() {
            let mut v = String::new();
            loop {
                match chars.next()? {
                    '\\' => v.push(chars.next()?),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>()
        };
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_string(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        // (header, scheme, params) — None: refused.
        type Case<'a> = (&'a str, Option<(&'a str, &'a [(&'a str, &'a str)])>);
        let cases: &[Case] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                Some((
                    "Bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/nginx:pull"),
                    ],
                )),
            ),
            (
                r#"Basic realm="skiff-test""#,
                Some(("Basic", &[("realm", "skiff-test")])),
            ),
            (
                r#"Bearer realm="https://r.example/t", scope="repository:a:pull,push""#,
                Some((
                    "Bearer",
                    &[
                        ("realm", "https://r.example/t"),
                        ("scope", "repository:a:pull,push"),
                    ],
                )),
            ),
            (
                r#"Bearer realm="a\"b""#,
                Some(("Bearer", &[("realm", "a\"b")])),
            ),
            (
                r#"Bearer realm=plain,service=s"#,
                Some(("Bearer", &[("realm", "plain"), ("service", "s")])),
            ),
            ("Basic", Some(("Basic", &[]))),
            (r#"Bearer realm="unterminated"#, None),
            (r#"Bearer realm"#, None),
            ("", None),
            ("B@d realm=x", None),
        ];
        for (header, want) in cases {
            let got = parse_challenge(header);
            let want = want.map(|(scheme, params)| Challenge {
                scheme: scheme.to_string(),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
            assert_eq!(got, want, "{header}");
        }
    }
}
