//! The ServiceAccount admission plugin, as kube-apiserver's: a new pod runs as
//! `spec.serviceAccountName` (`default` when unset), which must exist (403 otherwise; only the
//! `default` account may be missing for a moment after its namespace was created, until the
//! namespaces controller makes it), and gets the `kube-api-access-*` projected volume, mounted
//! read-only at `/var/run/secrets/kubernetes.io/serviceaccount` in every container: a bound
//! token (`token`), the cluster CA (`ca.crt`) and the namespace (`namespace`). A pod that names
//! no `imagePullSecrets` gets its ServiceAccount's, as in Kubernetes.
//!
//! One difference from Kubernetes, on purpose: the volume is added only when
//! `automountServiceAccountToken` is `true` on the pod, or unset on the pod and `true` on its
//! ServiceAccount. A wasm guest rarely needs a credential, so it gets none unless asked for.
//! [`project`] and [`pull_secrets`] are pure and table-tested.

use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::AppState;
use crate::resources::ResourceType;

/// Where the token, CA and namespace are mounted, as in Kubernetes.
pub(crate) const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token's lifetime the plugin asks for (kube-apiserver's value).
pub(crate) const EXPIRATION_SECONDS: i64 = 3607;
const VOLUME_PREFIX: &str = "kube-api-access-";

/// Default the pod's ServiceAccount, check it exists, and mount its token if asked for.
pub(super) async fn admit(state: &AppState, rt: &ResourceType, pod: &mut Value) -> ApiResult<()> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = ["/spec/serviceAccountName", "/spec/serviceAccount"]
        .iter()
        .find_map(|p| pod.pointer(p).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(name));
    }
    let sa_rt = crate::resources::find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::Internal("serviceaccounts are not registered".into()))?;
    let account = match super::get_object(state, sa_rt, &ns, &name).await {
        Ok(sa) => Some(sa),
        Err(ApiError::NotFound { .. }) if name == "default" => None,
        Err(ApiError::NotFound { .. }) => {
            return Err(ApiError::Denied {
                group: rt.group.into(),
                resource: rt.plural.into(),
                name: pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                message: format!(
                "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
            ),
            })
        }
        Err(e) => return Err(e),
    };
    pull_secrets(pod, account.as_ref());
    let suffix = super::rules::random_suffix();
    project(pod, account.as_ref(), &suffix);
    Ok(())
}

/// Give `pod` its ServiceAccount's `imagePullSecrets` when it names none itself. Pure.
pub(crate) fn pull_secrets(pod: &mut Value, account: Option<&Value>) {
    let own = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let theirs = account
        .and_then(|a| a.get("imagePullSecrets"))
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    let (false, Some(theirs)) = (own, theirs) else {
        return;
    };
    let refs: Vec<Value> = theirs
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(|n| json!({"name": n}))
        .collect();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("imagePullSecrets".into(), Value::Array(refs));
    }
}

/// Add the token volume and its mounts to `pod` when it asks for a token (its own
/// `automountServiceAccountToken`, else its ServiceAccount's). Pure.
pub(crate) fn project(pod: &mut Value, account: Option<&Value>, suffix: &str) {
    let wanted = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .and_then(|a| a.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(false);
    if !wanted {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A pod that already has the volume (an update path, or a client that added it) keeps it.
    let has_volume = spec
        .get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| {
            v.iter().any(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(VOLUME_PREFIX))
            })
        });
    if has_volume {
        return;
    }
    let volume = format!("{VOLUME_PREFIX}{suffix}");
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c
                .entry("volumeMounts")
                .or_insert_with(|| json!([]))
                .as_array_mut();
            let Some(mounts) = mounts else { continue };
            // A container that mounts something there itself keeps its own.
            if mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
            {
                continue;
            }
            mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            mounted = true;
        }
    }
    if !mounted {
        return;
    }
    let v = json!({
        "name": volume,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": crate::controllers::namespaces::ROOT_CA,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(vs) => vs.push(v),
        None => {
            spec.insert("volumes".into(), json!([v]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(automount: Option<bool>, mounts_there: bool) -> Value {
        let mut p = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        if let Some(a) = automount {
            p["spec"]["automountServiceAccountToken"] = json!(a);
        }
        if mounts_there {
            p["spec"]["containers"][1]["volumeMounts"] =
                json!([{"name": "mine", "mountPath": MOUNT_PATH}]);
        }
        p
    }

    #[test]
    fn pull_secrets_table() {
        let refs =
            |names: &[&str]| json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
        // (the pod's, the account's (None: no account), what the pod ends with)
        type Case<'a> = (
            Option<&'a [&'a str]>,
            Option<Option<&'a [&'a str]>>,
            Option<&'a [&'a str]>,
        );
        let cases: &[Case] = &[
            (None, Some(Some(&["reg"])), Some(&["reg"])),
            (Some(&[]), Some(Some(&["a", "b"])), Some(&["a", "b"])),
            (Some(&["mine"]), Some(Some(&["reg"])), Some(&["mine"])),
            (None, Some(None), None),
            (None, None, None),
            (None, Some(Some(&[])), None),
        ];
        for (own, account, want) in cases {
            let mut p = json!({"spec": {"containers": [{"name": "a"}]}});
            if let Some(own) = own {
                p["spec"]["imagePullSecrets"] = refs(own);
            }
            let account = account.map(|a| match a {
                Some(names) => json!({"imagePullSecrets": refs(names)}),
                None => json!({}),
            });
            pull_secrets(&mut p, account.as_ref());
            let got = p.pointer("/spec/imagePullSecrets").cloned();
            let want = match (want, own) {
                (Some(w), _) => Some(refs(w)),
                (None, Some(o)) => Some(refs(o)),
                (None, None) => None,
            };
            assert_eq!(got, want, "pod {own:?}, account {account:?}");
        }
    }

    #[test]
    fn token_volume_table() {
        let sa = |a: Option<bool>| match a {
            Some(a) => json!({"automountServiceAccountToken": a}),
            None => json!({}),
        };
        // (pod's setting, account's setting, a container mounts the path itself, mounted in)
        type Case = (
            Option<bool>,
            Option<Option<bool>>,
            bool,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (None, None, false, &[]),
            (None, Some(None), false, &[]),
            (None, Some(Some(true)), false, &["i", "a", "b"]),
            (Some(true), Some(Some(false)), false, &["i", "a", "b"]),
            (Some(false), Some(Some(true)), false, &[]),
            (Some(true), None, false, &["i", "a", "b"]),
            (Some(true), None, true, &["i", "a"]),
        ];
        for (own, account, there, want) in cases {
            let mut p = pod(*own, *there);
            let account = account.map(sa);
            project(&mut p, account.as_ref(), "x2b4c");
            let got: Vec<&str> = ["initContainers", "containers"]
                .iter()
                .flat_map(|l| p["spec"][l].as_array().cloned().unwrap_or_default())
                .filter(|c| {
                    c["volumeMounts"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["name"] == "kube-api-access-x2b4c"))
                })
                .map(|c| {
                    let n = c["name"].as_str().unwrap_or("");
                    ["i", "a", "b"].into_iter().find(|x| *x == n).unwrap_or("")
                })
                .collect();
            assert_eq!(
                got, *want,
                "pod {own:?}, account {account:?}, there {there}"
            );
            let volumes = p["spec"]["volumes"].as_array().map_or(0, Vec::len);
            assert_eq!(volumes, usize::from(!want.is_empty()));
        }
        // Admitting twice adds nothing.
        let mut p = pod(Some(true), false);
        project(&mut p, None, "aaaaa");
        project(&mut p, None, "bbbbb");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            p.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
            Some(&json!(EXPIRATION_SECONDS))
        );
    }
}
