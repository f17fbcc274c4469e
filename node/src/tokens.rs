//! Projected ServiceAccount tokens, as the kubelet's token manager keeps them: each
//! `serviceAccountToken` projection of a pod's volumes is a TokenRequest for the pod's
//! ServiceAccount, bound to the pod (name and uid, so the token dies with the pod), with the
//! projection's audience and lifetime; the file is rewritten in place (a new file renamed over
//! the old one, in the open volume directory the guest has) once 80 % of the lifetime has
//! passed, and at once on a failure's retry.
//!
//! Invariant: a token is never logged, and is written only into the pod's own projected volume.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::volumes::{token_want, IssuedToken as Issued, Laid, TokenWant as Want};

/// The shortest lifetime the API grants.
pub const MIN_SECONDS: i64 = 600;

/// One token file of a pod: its volume, its path in the volume, what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFile {
    /// Volume name.
    pub volume: String,
    /// Path inside the volume.
    pub path: String,
    /// The token it holds.
    pub want: Want,
}

/// The token files of `pod`'s projected volumes. Pure.
pub fn files(pod: &Pod) -> Vec<TokenFile> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(|v| {
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|src| src.service_account_token.as_ref())
                .map(|t| TokenFile {
                    volume: v.name.clone(),
                    path: t.path.clone(),
                    want: token_want(t),
                })
        })
        .collect()
}

/// Ask the API for each distinct token `pod` wants.
pub async fn request_all(
    client: &kube::Client,
    pod: &Pod,
) -> Result<HashMap<Want, Issued>, String> {
    let mut out = HashMap::new();
    for f in files(pod) {
        if out.contains_key(&f.want) {
            continue;
        }
        let issued = request(client, pod, &f.want).await?;
        out.insert(f.want, issued);
    }
    Ok(out)
}

/// Ask the API for one token of `pod`'s ServiceAccount, bound to the pod.
async fn request(client: &kube::Client, pod: &Pod, want: &Want) -> Result<Issued, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let (audience, seconds) = want;
    let body = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() {
                Vec::new()
            } else {
                vec![audience.clone()]
            },
            expiration_seconds: Some((*seconds).max(MIN_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let got: TokenRequest = api
        .create_subresource("token", account, &PostParams::default(), &body)
        .await
        .map_err(|e| format!("requesting a token of serviceaccount {ns}/{account}: {e}"))?;
    let status = got
        .status
        .ok_or_else(|| format!("the token of serviceaccount {ns}/{account} came without status"))?;
    let left = status.expiration_timestamp.0.as_second() - jiff::Timestamp::now().as_second();
    Ok(Issued {
        token: status.token,
        lifetime: Duration::from_secs(left.max(0) as u64),
    })
}

/// When a token living `lifetime` must be replaced: at 80 % of it, as the kubelet does.
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// Keep the token files of `pod` fresh in its laid-out volumes until `stop`. `first` is the
/// lifetime of the tokens written at start.
pub async fn keep_fresh(
    client: kube::Client,
    pod: Pod,
    laid: std::sync::Arc<Vec<Laid>>,
    first: Duration,
    stop: CancellationToken,
) {
    let wanted = files(&pod);
    if wanted.is_empty() {
        return;
    }
    let mut wait = refresh_after(first);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match rewrite(&client, &pod, &laid, &wanted).await {
            Ok(lifetime) => wait = refresh_after(lifetime),
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, error = %e, "refreshing a projected token");
                wait = Duration::from_secs(10);
            }
        }
    }
}

/// Request the tokens again and replace their files; returns the shortest new lifetime.
async fn rewrite(
    client: &kube::Client,
    pod: &Pod,
    laid: &[Laid],
    wanted: &[TokenFile],
) -> Result<Duration, String> {
    let issued = request_all(client, pod).await?;
    let mut shortest = Duration::MAX;
    for f in wanted {
        let Some(tok) = issued.get(&f.want) else {
            continue;
        };
        shortest = shortest.min(tok.lifetime);
        let Some(volume) = laid.iter().find(|l| l.name == f.volume) else {
            continue;
        };
        volume
            .dir
            .replace_file(Path::new(&f.path), tok.token.as_bytes())
            .map_err(|e| format!("volume {:?}: {e}", f.volume))?;
    }
    Ok(shortest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_files_of_a_pod() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "volumes": [
            {"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt"}}]}},
            {"name": "vault", "projected": {"sources": [
                {"serviceAccountToken": {"path": "jwt", "audience": "vault"}}]}},
            {"name": "plain", "emptyDir": {}},
        ]}}))
        .unwrap();
        assert_eq!(
            files(&pod),
            vec![
                TokenFile {
                    volume: "kube-api-access-x".into(),
                    path: "token".into(),
                    want: (String::new(), 3607)
                },
                TokenFile {
                    volume: "vault".into(),
                    path: "jwt".into(),
                    want: ("vault".into(), crate::volumes::DEFAULT_TOKEN_SECONDS)
                },
            ]
        );
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
    }
}
