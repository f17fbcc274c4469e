//! A pod's registry credentials: the Secrets its `spec.imagePullSecrets` names (the API
//! server's ServiceAccount admission copies its account's there, as Kubernetes does), of type
//! `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) or `kubernetes.io/dockercfg`
//! (`.dockercfg`). Read at each pull, so a Secret fixed after a failed pull serves the retry.
//!
//! A Secret that is missing, of another type or unreadable is named in a problem (the kubelet's
//! `FailedToRetrieveImagePullSecret` event) and the pull goes on with the others, as the
//! kubelet's does. At most `MAX_SECRETS` are read per pull (the rest are named as not read):
//! a pod must not turn each pull into thousands of API requests. Credentials never go into an event or a log line: only Secret names do.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use skiff_common::dockerconfig::{self, Credential};

/// The most pull Secrets read for one pull: a pod may name thousands, and each is a request to
/// the API server at every attempt.
const MAX_SECRETS: usize = 32;

/// The names to read (at most `MAX_SECRETS`), and a problem naming how many were left. Pure.
fn bounded(mut names: Vec<String>) -> (Vec<String>, Option<String>) {
    if names.len() <= MAX_SECRETS {
        return (names, None);
    }
    let left = names.len() - MAX_SECRETS;
    names.truncate(MAX_SECRETS);
    (
        names,
        Some(format!("{left} more not read (at most {MAX_SECRETS} are)")),
    )
}

/// What the pod's pull Secrets gave.
#[derive(Debug, Default)]
pub struct PullCredentials {
    /// The credentials, in the order of the Secrets.
    pub creds: Vec<Credential>,
    /// The Secrets that gave none, each with why (no secret material).
    pub problems: Vec<String>,
}

impl PullCredentials {
    /// The kubelet's words for the problems, if any.
    pub fn warning(&self) -> Option<String> {
        (!self.problems.is_empty()).then(|| {
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                self.problems.join(", ")
            )
        })
    }
}

/// Read the credentials of `pod`'s pull Secrets.
pub async fn read(client: &kube::Client, pod: &Pod) -> PullCredentials {
    let (names, left) = bounded(skiff_common::podrefs::image_pull_secrets(pod));
    let mut out = PullCredentials::default();
    if names.is_empty() {
        return out;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in names {
        match api.get_opt(&name).await {
            Ok(Some(secret)) => match credentials(&secret) {
                Ok(c) => out.creds.extend(c),
                Err(why) => out.problems.push(format!("{name}: {why}")),
            },
            Ok(None) => out.problems.push(format!("{name}: not found")),
            Err(e) => out.problems.push(format!("{name}: {}", api_reason(&e))),
        }
    }
    out.problems.extend(left);
    out
}

/// Why the API refused, without anything the error might carry of the object.
fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        _ => "the API server could not be reached".into(),
    }
}

/// The credentials a Secret holds. Pure.
fn credentials(secret: &Secret) -> Result<Vec<Credential>, String> {
    let data = secret.data.clone().unwrap_or_default();
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    let (key, parse): (&str, fn(&[u8]) -> _) = match ty {
        "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", dockerconfig::parse_config_json),
        "kubernetes.io/dockercfg" => (".dockercfg", dockerconfig::parse_dockercfg),
        other => {
            return Err(format!(
                "of type {other}, not kubernetes.io/dockerconfigjson"
            ))
        }
    };
    let bytes = data.get(key).ok_or_else(|| format!("no {key} key"))?;
    parse(&bytes.0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_pod_naming_many_secrets_gets_a_bounded_number_read() {
        let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        assert_eq!(bounded(names(3)), (names(3), None));
        assert_eq!(bounded(names(MAX_SECRETS)).1, None);
        let (read, left) = bounded(names(10_000));
        assert_eq!(read, names(MAX_SECRETS));
        assert_eq!(left.as_deref(), Some("9968 more not read (at most 32 are)"));
    }

    #[test]
    fn secrets_give_credentials_or_say_why_not() {
        let secret = |ty: Option<&str>, key: &str, body: &str| Secret {
            type_: ty.map(String::from),
            data: Some([(key.to_string(), ByteString(body.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let json = r#"{"auths": {"r.example": {"username": "u", "password": "hunter2"}}}"#;
        let cases: &[(Secret, Result<usize, &str>)] = &[
            (
                secret(
                    Some("kubernetes.io/dockerconfigjson"),
                    ".dockerconfigjson",
                    json,
                ),
                Ok(1),
            ),
            (
                secret(
                    Some("kubernetes.io/dockercfg"),
                    ".dockercfg",
                    r#"{"r.example": {"username": "u", "password": "p"}}"#,
                ),
                Ok(1),
            ),
            (
                secret(None, ".dockerconfigjson", json),
                Err("of type Opaque"),
            ),
            (
                secret(Some("kubernetes.io/dockerconfigjson"), "other", json),
                Err("no .dockerconfigjson key"),
            ),
            (
                secret(
                    Some("kubernetes.io/dockerconfigjson"),
                    ".dockerconfigjson",
                    "{",
                ),
                Err("not a Docker config"),
            ),
        ];
        for (s, want) in cases {
            match (credentials(s), want) {
                (Ok(c), Ok(n)) => assert_eq!(c.len(), *n),
                (Err(e), Err(part)) => {
                    assert!(e.contains(part), "{e} lacks {part}");
                    assert!(!e.contains("hunter2"), "{e}");
                }
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        }
    }
}
