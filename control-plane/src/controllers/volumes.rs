//! PersistentVolumes and their claims, as kube-controller-manager's binder and k3s' local-path
//! provisioner keep them. A claim of a class whose provisioner is `skiff.dev/local-path`
//! (binding mode `WaitForFirstConsumer`) gets a PersistentVolume once a pod that uses it is
//! scheduled: the node's claim directory (`<claims dir>/<namespace>/<claim>`, the dir the
//! node publishes in its `skiff.dev/claims-dir` annotation), pinned to that node. Other claims
//! bind to an Available volume of their class whose capacity and access modes suffice. A
//! volume whose claim is gone is deleted (reclaim policy `Delete`) or `Released`. [`decide`]
//! is pure and table-tested.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{json, Value};
use skiff_common::events::{EventType, Recorder};

use super::{ControllerError, PodInformer};

/// The provisioner of node-local claim directories.
pub const LOCAL_PATH: &str = "skiff.dev/local-path";

/// What a pending claim needs.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing to do (bound, or being deleted).
    Nothing,
    /// Wait: why (an event's reason and message).
    Wait(&'static str, String),
    /// Bind to this existing volume.
    Bind(String),
    /// Make this volume (local-path), then bind to it.
    Provision(Value),
}

fn bytes(q: Option<&Value>) -> i64 {
    q.and_then(Value::as_str)
        .and_then(|s| skiff_common::quantity::bytes(s).ok())
        .unwrap_or(0)
}

/// Decide for a claim from its class, the volumes, the pods of its namespace and the nodes.
pub fn decide(
    pvc: &Value,
    class: Option<&Value>,
    pvs: &[Value],
    pods: &[Value],
    nodes: &[Value],
) -> Decision {
    let phase = pvc.pointer("/status/phase").and_then(Value::as_str);
    if phase == Some("Bound") || pvc.pointer("/metadata/deletionTimestamp").is_some() {
        return Decision::Nothing;
    }
    let ns = pvc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = pvc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let class_name = pvc
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = bytes(pvc.pointer("/spec/resources/requests/storage"));
    let modes: Vec<&Value> = pvc
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    // A volume the claim names, or an Available one of its class that suffices.
    let named = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let fits = |pv: &&Value| {
        let pv_name = pv.pointer("/metadata/name").and_then(Value::as_str);
        let available = pv.pointer("/status/phase").and_then(Value::as_str) == Some("Available")
            && pv.pointer("/spec/claimRef").is_none_or(Value::is_null);
        let same_class = pv
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
            .unwrap_or("")
            == class_name;
        let big = bytes(pv.pointer("/spec/capacity/storage")) >= want;
        let pv_modes = pv.pointer("/spec/accessModes").and_then(Value::as_array);
        let has_modes = modes
            .iter()
            .all(|m| pv_modes.is_some_and(|p| p.contains(m)));
        match named {
            Some(n) => pv_name == Some(n) && available,
            None => available && same_class && big && has_modes,
        }
    };
    let mut candidates: Vec<&Value> = pvs.iter().filter(fits).collect();
    candidates.sort_by_key(|pv| bytes(pv.pointer("/spec/capacity/storage")));
    if let Some(pv) = candidates.first() {
        let n = pv
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Decision::Bind(n.to_string());
    }
    let provisioner = class
        .and_then(|c| c.get("provisioner"))
        .and_then(Value::as_str);
    if named.is_some() || provisioner != Some(LOCAL_PATH) {
        return Decision::Wait(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
    }
    // WaitForFirstConsumer: the node of a scheduled pod that uses the claim.
    let node = pods.iter().find_map(|p| {
        let uses = p
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.pointer("/persistentVolumeClaim/claimName")
                        .and_then(Value::as_str)
                        == Some(name)
                })
            });
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        if uses {
            node
        } else {
            None
        }
    });
    let Some(node) = node else {
        return Decision::Wait(
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        );
    };
    let dir = nodes
        .iter()
        .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(node))
        .and_then(|n| {
            n.pointer("/metadata/annotations")
                .and_then(|a| a.get(skiff_common::CLAIMS_DIR_ANNOTATION))
        })
        .and_then(Value::as_str);
    let Some(dir) = dir else {
        return Decision::Wait(
            "ProvisioningFailed",
            format!("node {node:?} does not publish its claims directory"),
        );
    };
    let uid = pvc
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let policy = class
        .and_then(|c| c.get("reclaimPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Delete");
    Decision::Provision(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PATH}},
        "spec": {
            "capacity": {"storage": pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("0"))},
            "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
            "persistentVolumeReclaimPolicy": policy,
            "storageClassName": class_name,
            "volumeMode": pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem")),
            "local": {"path": format!("{}/{ns}/{name}", dir.trim_end_matches('/'))},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }))
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    recorder: Recorder,
}

/// Run the binder (claims) and the volume lifecycle (volumes) until their streams end.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
        recorder: Recorder::new(client.clone(), "persistentvolume-controller", None),
    });
    let claims_controller = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let pending = claims_controller.store();
    // A volume that becomes Available may be what a pending claim waits for.
    let claims = claims_controller
        .watches(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
            move |_: PersistentVolume| {
                pending
                    .state()
                    .iter()
                    .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_shared_stream(pods.subscribe(), |pod: Arc<Pod>| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            pod.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| ObjectRef::<PersistentVolumeClaim>::new(&c.claim_name).within(&ns))
                .collect::<Vec<_>>()
        })
        .run(reconcile_claim, super::retry, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
        |pvc: PersistentVolumeClaim| {
            pvc.spec
                .and_then(|s| s.volume_name)
                .filter(|n| !n.is_empty())
                .map(|n| ObjectRef::<PersistentVolume>::new(&n))
        },
    )
    .run(reconcile_volume, super::retry, ctx)
    .for_each(|_| futures::future::ready(()));
    futures::future::join(claims, volumes).await;
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let value = serde_json::to_value(pvc.as_ref())?;
    let class_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let class = if class_name.is_empty() {
        None
    } else {
        Api::<StorageClass>::all(ctx.client.clone())
            .get_opt(&class_name)
            .await?
            .map(serde_json::to_value)
            .transpose()?
    };
    let pvs: Vec<Value> = Api::<PersistentVolume>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let pods: Vec<Value> = ctx
        .pods
        .in_namespace(&ns)
        .iter()
        .map(|p| serde_json::to_value(p.as_ref()))
        .collect::<Result<_, _>>()?;
    let nodes: Vec<Value> = Api::<Node>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let object = skiff_common::events::object_ref(&pvc.metadata, "PersistentVolumeClaim", "v1");
    let pv_name = match decide(&value, class.as_ref(), &pvs, &pods, &nodes) {
        Decision::Nothing => return Ok(Action::await_change()),
        Decision::Wait(reason, message) => {
            ctx.recorder
                .record(&object, EventType::Normal, reason, &message)
                .await;
            return Ok(Action::await_change());
        }
        Decision::Bind(pv) => pv,
        Decision::Provision(pv) => {
            let pv: PersistentVolume = serde_json::from_value(pv)?;
            let pv_name = pv.metadata.name.clone().unwrap_or_default();
            match Api::<PersistentVolume>::all(ctx.client.clone())
                .create(&PostParams::default(), &pv)
                .await
            {
                Ok(_) => {
                    ctx.recorder
                        .record(
                            &object,
                            EventType::Normal,
                            "ProvisioningSucceeded",
                            &format!("Successfully provisioned volume {pv_name}"),
                        )
                        .await;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            pv_name
        }
    };
    bind(&ctx, &pvc, &pv_name).await?;
    Ok(Action::await_change())
}

/// Bind the claim and the volume to each other.
async fn bind(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv_name: &str,
) -> Result<(), ControllerError> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claim_ref = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": pvc.metadata.uid});
    let pv = pvs
        .patch(
            pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"claimRef": claim_ref}})),
        )
        .await?;
    pvs.patch_status(
        pv_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let annotations = BTreeMap::from([(
        "pv.kubernetes.io/bind-completed".to_string(),
        "yes".to_string(),
    )]);
    claims
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}}),
            ),
        )
        .await?;
    let spec = pv.spec.unwrap_or_default();
    claims
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": spec.capacity, "accessModes": spec.access_modes}})),
        )
        .await?;
    Ok(())
}

async fn reconcile_volume(
    pv: Arc<PersistentVolume>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let set_phase = |p: &'static str| {
        let pvs = pvs.clone();
        let name = name.clone();
        async move {
            pvs.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": p}})),
            )
            .await
            .map(|_| ())
        }
    };
    let Some(claim) = spec.claim_ref.as_ref() else {
        if phase != "Available" {
            set_phase("Available").await?;
        }
        return Ok(Action::await_change());
    };
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), claim.namespace.as_deref().unwrap_or(""));
    let current = claims.get_opt(claim.name.as_deref().unwrap_or("")).await?;
    let same = current
        .as_ref()
        .is_some_and(|c| c.metadata.uid == claim.uid);
    if same {
        return Ok(Action::await_change());
    }
    // The claim is gone: the volume goes (Delete) or waits for an admin (Retain).
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
        super::ignore_missing(pvs.delete(&name, &DeleteParams::default()).await)?;
    } else if phase != "Released" {
        set_phase("Released").await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(class: Option<&str>, volume: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        if let Some(c) = class {
            v["spec"]["storageClassName"] = json!(c);
        }
        if let Some(n) = volume {
            v["spec"]["volumeName"] = json!(n);
        }
        v
    }

    fn pv(name: &str, size: &str, class: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "storageClassName": class}, "status": {"phase": phase}})
    }

    #[test]
    fn decide_table() {
        let local = json!({"provisioner": LOCAL_PATH, "reclaimPolicy": "Delete"});
        let user_pod = json!({"spec": {"nodeName": "n1", "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let unscheduled = json!({"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let node = json!({"metadata": {"name": "n1", "annotations": {skiff_common::CLAIMS_DIR_ANNOTATION: "/var/skiff/claims"}}});
        let pvs = vec![
            pv("small", "500Mi", "", "Available"),
            pv("big", "2Gi", "", "Available"),
            pv("huge", "5Gi", "", "Available"),
            pv("taken", "1Gi", "", "Bound"),
        ];
        // Static: the smallest Available volume of its class that suffices.
        assert_eq!(
            decide(&pvc(None, None), None, &pvs, &[], &[]),
            Decision::Bind("big".into())
        );
        assert_eq!(
            decide(&pvc(None, Some("huge")), None, &pvs, &[], &[]),
            Decision::Bind("huge".into())
        );
        assert!(matches!(
            decide(&pvc(None, Some("taken")), None, &pvs, &[], &[]),
            Decision::Wait("FailedBinding", _)
        ));
        // local-path: wait for a scheduled consumer, then a volume on its node.
        assert!(matches!(
            decide(
                &pvc(Some("local-path"), None),
                Some(&local),
                &[],
                &[unscheduled],
                std::slice::from_ref(&node)
            ),
            Decision::Wait("WaitForFirstConsumer", _)
        ));
        match decide(
            &pvc(Some("local-path"), None),
            Some(&local),
            &[],
            &[user_pod],
            &[node],
        ) {
            Decision::Provision(pv) => {
                assert_eq!(pv["metadata"]["name"], "pvc-u1");
                assert_eq!(pv["spec"]["local"]["path"], "/var/skiff/claims/ns/data");
                assert_eq!(
                    pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
                        ["matchExpressions"][0]["values"][0],
                    "n1"
                );
                assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
            }
            other => panic!("{other:?}"),
        }
        let mut bound = pvc(None, None);
        bound["status"]["phase"] = json!("Bound");
        assert_eq!(decide(&bound, None, &pvs, &[], &[]), Decision::Nothing);
    }
}
