//! Admission: the built-in mutating and validating plugins that need to read other objects,
//! run on create after the kind's defaults and before validation, as kube-apiserver's
//! `Priority`, `DefaultIngressClass` and `DefaultStorageClass` plugins:
//! - a Pod runs as a ServiceAccount that exists, with its token mounted when it asks for one
//!   (`serviceaccount`);
//! - a Pod's `priorityClassName` becomes its `priority` and `preemptionPolicy` (a class that
//!   does not exist is refused with 403); a pod naming none gets the global default class's;
//! - an Ingress without a class gets the default IngressClass;
//! - a PersistentVolumeClaim without `storageClassName` gets the default StorageClass;
//! - a Pod gets its namespace's LimitRange defaults and must be within their bounds
//!   (`limits`);
//! - a CertificateSigningRequest records who asked (`spec.username`, `uid`, `groups`, `extra`:
//!   the request's user, whatever the body says), as its Kubernetes strategy does.

use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::strategy::str_at;
use crate::api::AppState;
use crate::resources::{self, ResourceType};

/// Run the plugins that apply to a new `obj` of `rt`.
pub(super) async fn admit(state: &AppState, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    match (rt.group, rt.plural) {
        ("", "pods") => {
            super::serviceaccount::admit(state, rt, obj).await?;
            priority(state, obj).await?;
            limit_ranges(state, rt, obj).await
        }
        ("networking.k8s.io", "ingresses") => {
            if obj
                .pointer("/spec/ingressClassName")
                .is_none_or(Value::is_null)
            {
                if let Some(class) = default_class(
                    state,
                    "networking.k8s.io",
                    "ingressclasses",
                    "ingressclass.kubernetes.io/is-default-class",
                )
                .await?
                {
                    obj["spec"]["ingressClassName"] = json!(class);
                }
            }
            Ok(())
        }
        ("", "persistentvolumeclaims") => {
            // Unset, not "": an empty class asks for no class.
            if obj
                .pointer("/spec/storageClassName")
                .is_none_or(Value::is_null)
            {
                if let Some(class) = default_class(
                    state,
                    "storage.k8s.io",
                    "storageclasses",
                    crate::api::strategy::storage::DEFAULT_CLASS_ANNOTATION,
                )
                .await?
                {
                    obj["spec"]["storageClassName"] = json!(class);
                }
            }
            Ok(())
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            if let Ok(user) = crate::api::REQUEST_USER.try_with(Clone::clone) {
                let spec = &mut obj["spec"];
                spec["username"] = json!(user.name);
                spec["groups"] = json!(user.groups);
                for (field, value) in [("uid", json!(user.uid)), ("extra", json!(user.extra))] {
                    let empty = value.as_str() == Some("")
                        || value.as_object().is_some_and(|m| m.is_empty());
                    if empty {
                        if let Some(m) = spec.as_object_mut() {
                            m.remove(field);
                        }
                    } else {
                        spec[field] = value;
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Defaults and bounds of the namespace's LimitRanges (LimitRanger).
async fn limit_ranges(state: &AppState, rt: &ResourceType, pod: &mut Value) -> ApiResult<()> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(ranges_rt) = resources::find("", "v1", "limitranges") else {
        return Ok(());
    };
    let listing = state
        .store
        .list(&ranges_rt.storage_key(), Some(&ns))
        .await
        .map_err(|e| ApiError::from_store(e, &ranges_rt.qualified(), ""))?;
    if listing.objects.is_empty() {
        return Ok(());
    }
    let ranges: Vec<Value> = listing
        .objects
        .iter()
        .map(|o| super::materialize(ranges_rt, o))
        .collect::<ApiResult<_>>()?;
    super::limits::apply(pod, &ranges).map_err(|errors| ApiError::Denied {
        group: rt.group.into(),
        resource: rt.plural.into(),
        name: pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        message: super::limits::message(&errors),
    })
}

/// The objects of a cluster-scoped resource.
async fn all(state: &AppState, group: &str, plural: &str) -> ApiResult<Vec<Value>> {
    let Some(rt) = resources::all()
        .into_iter()
        .find(|r| r.group == group && r.plural == plural && r.storage.is_none())
    else {
        return Ok(Vec::new());
    };
    let filter = super::Filter::from_query(rt, &Default::default())?;
    Ok(super::list_matching(state, rt, None, &filter).await?.0)
}

/// The newest class marked default with `annotation` (as Kubernetes picks among several).
async fn default_class(
    state: &AppState,
    group: &str,
    plural: &str,
    annotation: &str,
) -> ApiResult<Option<String>> {
    let mut defaults: Vec<Value> = all(state, group, plural)
        .await?
        .into_iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(annotation))
                .and_then(Value::as_str)
                == Some("true")
        })
        .collect();
    defaults.sort_by(|a, b| {
        (
            str_at(b, "/metadata/creationTimestamp"),
            str_at(a, "/metadata/name"),
        )
            .cmp(&(
                str_at(a, "/metadata/creationTimestamp"),
                str_at(b, "/metadata/name"),
            ))
    });
    Ok(defaults
        .first()
        .map(|c| str_at(c, "/metadata/name").to_string()))
}

/// The Priority plugin.
async fn priority(state: &AppState, pod: &mut Value) -> ApiResult<()> {
    let name = str_at(pod, "/spec/priorityClassName").to_string();
    let classes = all(state, "scheduling.k8s.io", "priorityclasses").await?;
    let class = if name.is_empty() {
        classes
            .into_iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
    } else {
        match classes
            .into_iter()
            .find(|c| str_at(c, "/metadata/name") == name)
        {
            Some(c) => Some(c),
            None => {
                return Err(ApiError::Forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                    str_at(pod, "/metadata/name")
                )))
            }
        }
    };
    let (value, policy) = match &class {
        Some(c) => (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    // The pod spec defaults gave `priority: 0`; a client that set another value is refused,
    // as Kubernetes does.
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if given != value && given != 0 {
            return Err(ApiError::Forbidden(format!(
                "pods \"{}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
                str_at(pod, "/metadata/name")
            )));
        }
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("priority".into(), json!(value));
        spec.insert("preemptionPolicy".into(), json!(policy));
        if let Some(c) = &class {
            spec.insert(
                "priorityClassName".into(),
                json!(str_at(c, "/metadata/name")),
            );
        }
    }
    Ok(())
}
