//! Revision history of DaemonSets and StatefulSets, as kube-controller-manager keeps it: one
//! ControllerRevision per template the set has had (named `<set>-<hash>`, labelled with the
//! template's labels and the hash, owned by the set), its `data` the strategic merge patch that
//! puts the template back (`kubectl rollout undo` applies it), its `revision` number the
//! highest when the template is (again) the current one; the oldest beyond
//! `revisionHistoryLimit` are deleted. [`revision_data`] and [`to_prune`] are pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::ControllerError;

/// The set a history belongs to.
pub struct Owner<'a> {
    /// `apps/v1` kind: DaemonSet or StatefulSet.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// uid.
    pub uid: &'a str,
    /// `spec.template`.
    pub template: Value,
    /// `spec.revisionHistoryLimit` (old revisions kept).
    pub history_limit: usize,
}

/// The patch that puts `template` back.
pub fn revision_data(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// Of the revisions (name, number) besides the current one, those beyond `limit`, oldest
/// first.
pub fn to_prune(mut old: Vec<(String, i64)>, limit: usize) -> Vec<String> {
    old.sort_by_key(|(_, n)| *n);
    let excess = old.len().saturating_sub(limit);
    old.into_iter().take(excess).map(|(n, _)| n).collect()
}

/// Make the revision of the owner's current template (hash `hash`) the newest; returns its
/// name and number.
pub async fn record(
    client: &kube::Client,
    owner: &Owner<'_>,
    hash: &str,
) -> Result<(String, i64), ControllerError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), owner.namespace);
    let name = format!("{}-{hash}", owner.name);
    let mine: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == owner.uid)
        })
        .collect();
    let newest = mine.iter().map(|r| r.revision).max().unwrap_or(0);
    let current = mine
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name.as_str()));
    let number = match current {
        Some(r) if r.revision == newest => r.revision,
        Some(_) => {
            // Back to an older template (a rollback): it becomes the newest revision.
            let patch = json!({"revision": newest + 1});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            newest + 1
        }
        None => {
            let mut labels: BTreeMap<String, String> = owner
                .template
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            labels.insert("controller-revision-hash".into(), hash.to_string());
            let revision: ControllerRevision = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": owner.namespace, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.kind, "name": owner.name,
                        "uid": owner.uid, "controller": true, "blockOwnerDeletion": true}]},
                "data": revision_data(&owner.template),
                "revision": newest + 1,
            }))?;
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => {}
                // Made by a reconcile this cache has not seen yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            newest + 1
        }
    };
    let old: Vec<(String, i64)> = mine
        .iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, r.revision)))
        .filter(|(n, _)| *n != name)
        .collect();
    for stale in to_prune(old, owner.history_limit) {
        super::ignore_missing(api.delete(&stale, &DeleteParams::default()).await)?;
    }
    Ok((name, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_puts_the_template_back_and_pruning_keeps_the_newest() {
        let t = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}});
        assert_eq!(
            revision_data(&t),
            json!({"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}}}})
        );
        let old = vec![
            ("c".to_string(), 3),
            ("a".to_string(), 1),
            ("b".to_string(), 2),
        ];
        assert_eq!(to_prune(old.clone(), 1), vec!["a", "b"]);
        assert_eq!(to_prune(old, 10), Vec::<String>::new());
    }
}
