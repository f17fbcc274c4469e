//! What a pod refers to by name (ConfigMaps and Secrets in its namespace), read by the node
//! before it starts the pod and by the API server's node authorizer, which lets a node read only
//! what its pods refer to. One function, so the two never disagree.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;

/// Names of the ConfigMaps and Secrets the pod refers to (env, envFrom, volumes, projections,
/// image pull secrets).
pub fn referenced(pod: &Pod) -> (HashSet<String>, HashSet<String>) {
    let (mut cms, mut secrets) = (HashSet::new(), HashSet::new());
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(src) = &e.value_from {
                if let Some(r) = &src.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &src.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &p.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    secrets.extend(image_pull_secrets(pod));
    (cms, secrets)
}

/// The Secrets the pod names in `spec.imagePullSecrets`, in order, without repeats.
pub fn image_pull_secrets(pod: &Pod) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty());
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}
