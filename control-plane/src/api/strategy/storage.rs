//! Storage: PersistentVolumes, PersistentVolumeClaims and StorageClasses. Defaults (reclaim
//! policy, volume mode, binding mode), validation (capacity and requests as quantities, access
//! modes, one volume source, what a claim may change once made), a new volume or claim starts
//! `Pending`, and the `kubectl get pv|pvc|storageclass` columns (`(default)` after the default
//! class's name).

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{ensure_object, entry, immutable, not_supported, str_at, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::validation::{elements, quantities, quantity_field};

/// The annotation that makes a StorageClass the default.
pub(crate) const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

fn access_modes(spec: &Value, causes: &mut Vec<FieldCause>) {
    let modes: Vec<(usize, &Value)> = elements(spec.get("accessModes")).collect();
    if modes.is_empty() {
        causes.push(FieldCause::required("spec.accessModes"));
    }
    for (i, m) in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            causes.push(not_supported(
                format!("spec.accessModes[{i}]"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    if let Some(m) = spec.get("volumeMode").and_then(Value::as_str) {
        if !VOLUME_MODES.contains(&m) {
            causes.push(not_supported("spec.volumeMode".into(), m, VOLUME_MODES));
        }
    }
}

/// `ACCESS MODES` as kubectl abbreviates them.
fn access_text(obj: &Value) -> String {
    elements(obj.pointer("/spec/accessModes"))
        .filter_map(|(_, m)| m.as_str())
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The volume sources a PersistentVolume may name.
const SOURCES: &[&str] = &[
    "hostPath",
    "local",
    "nfs",
    "csi",
    "iscsi",
    "fc",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "flexVolume",
    "flocker",
    "glusterfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// The PersistentVolume strategy.
pub(crate) struct PersistentVolume;

impl Strategy for PersistentVolume {
    fn default(&self, obj: &mut Value) {
        let spec = ensure_object(obj, "spec");
        entry(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        entry(spec, "volumeMode", json!("Filesystem"));
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match spec.pointer("/capacity/storage") {
            None => causes.push(FieldCause::required("spec.capacity")),
            Some(q) => {
                quantity_field("spec.capacity[storage]".into(), q, causes);
            }
        }
        access_modes(spec, causes);
        let sources = SOURCES.iter().filter(|s| spec.get(**s).is_some()).count();
        if sources == 0 {
            causes.push(FieldCause::required_because(
                "spec",
                "must specify a volume type",
            ));
        } else if sources > 1 {
            causes.push(FieldCause::forbidden(
                "spec",
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(p) = spec.pointer("/hostPath/path").and_then(Value::as_str) {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
                causes.push(FieldCause::invalid(
                    "spec.hostPath.path",
                    p,
                    "must be an absolute path without '..'",
                ));
            }
        }
        const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
        if let Some(p) = spec
            .get("persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
        {
            if !POLICIES.contains(&p) {
                causes.push(not_supported(
                    "spec.persistentVolumeReclaimPolicy".into(),
                    p,
                    POLICIES,
                ));
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable(old, new, "/spec/volumeMode", "spec.volumeMode", causes);
        for s in SOURCES {
            if old.pointer(&format!("/spec/{s}")).is_some() {
                immutable(
                    old,
                    new,
                    &format!("/spec/{s}"),
                    "spec.persistentvolumesource",
                    causes,
                );
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Capacity", "string", 0, "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", 0, "accessModes contains all ways the volume can be mounted."),
            col("Reclaim Policy", "string", 0, "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            col("Status", "string", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            col("Claim", "string", 0, "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            col("StorageClass", "string", 0, "storageClassName is the name of StorageClass to which this persistent volume belongs."),
            col("VolumeAttributesClass", "string", 0, "Name of VolumeAttributesClass to which this persistent volume belongs."),
            col("Reason", "string", 0, "reason is a brief CamelCase string that describes any failure."),
            age_col(),
            col("VolumeMode", "string", 1, "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let claim = match (
            str_at(obj, "/spec/claimRef/namespace"),
            str_at(obj, "/spec/claimRef/name"),
        ) {
            (_, "") => String::new(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let or_unset = |s: &str| {
            if s.is_empty() {
                "<unset>".to_string()
            } else {
                s.to_string()
            }
        };
        vec![
            json!(row.name),
            json!(quantity_text(obj.pointer("/spec/capacity/storage"))),
            json!(access_text(obj)),
            json!(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
            json!(str_at(obj, "/status/phase")),
            json!(claim),
            json!(str_at(obj, "/spec/storageClassName")),
            json!(or_unset(str_at(obj, "/spec/volumeAttributesClassName"))),
            json!(str_at(obj, "/status/reason")),
            json!(row.age),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}

fn quantity_text(q: Option<&Value>) -> String {
    match q {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The PersistentVolumeClaim strategy.
pub(crate) struct PersistentVolumeClaim;

impl Strategy for PersistentVolumeClaim {
    fn default(&self, obj: &mut Value) {
        let spec = ensure_object(obj, "spec");
        entry(spec, "volumeMode", json!("Filesystem"));
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        access_modes(spec, causes);
        match spec.pointer("/resources/requests/storage") {
            None => causes.push(FieldCause::required("spec.resources[storage]")),
            Some(_) => quantities(
                spec.pointer("/resources/requests"),
                "spec.resources.requests",
                causes,
            ),
        }
    }

    /// A claim's spec is fixed once made, except its requests (expansion), and its volume,
    /// which is set once, when it binds.
    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let binding = str_at(old, "/spec/volumeName").is_empty();
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = s.as_object_mut() {
                m.remove("resources");
                m.remove("volumeAttributesClassName");
                if binding {
                    m.remove("volumeName");
                }
            }
            s
        };
        if strip(old) != strip(new) {
            causes.push(FieldCause::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Status", "string", 0, "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", 0, "capacity represents the actual resources of the underlying volume."),
            col("Access Modes", "string", 0, "accessModes contains the desired access modes the volume should have."),
            col("StorageClass", "string", 0, "storageClassName is the name of the StorageClass required by the claim."),
            col("VolumeAttributesClass", "string", 0, "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim."),
            age_col(),
            col("VolumeMode", "string", 1, "volumeMode defines what type of volume is required by the claim."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let bound = str_at(obj, "/status/phase") == "Bound";
        let vac = str_at(obj, "/spec/volumeAttributesClassName");
        vec![
            json!(row.name),
            json!(str_at(obj, "/status/phase")),
            json!(str_at(obj, "/spec/volumeName")),
            json!(if bound {
                quantity_text(obj.pointer("/status/capacity/storage"))
            } else {
                String::new()
            }),
            json!(if bound {
                access_text(&json!({"spec": {"accessModes": obj.pointer("/status/accessModes")}}))
            } else {
                String::new()
            }),
            json!(str_at(obj, "/spec/storageClassName")),
            json!(if vac.is_empty() { "<unset>" } else { vac }),
            json!(row.age),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}

/// The StorageClass strategy.
pub(crate) struct StorageClass;

impl Strategy for StorageClass {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            entry(m, "reclaimPolicy", json!("Delete"));
            entry(m, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        if str_at(obj, "/provisioner").is_empty() {
            causes.push(FieldCause::required("provisioner"));
        }
        const POLICIES: &[&str] = &["Delete", "Retain"];
        let p = str_at(obj, "/reclaimPolicy");
        if !p.is_empty() && !POLICIES.contains(&p) {
            causes.push(not_supported("reclaimPolicy".into(), p, POLICIES));
        }
        const MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
        let m = str_at(obj, "/volumeBindingMode");
        if !m.is_empty() && !MODES.contains(&m) {
            causes.push(not_supported("volumeBindingMode".into(), m, MODES));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        for (f, what) in [
            ("provisioner", "updates to provisioner are forbidden."),
            ("parameters", "updates to parameters are forbidden."),
            ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
            ("volumeBindingMode", "field is immutable"),
        ] {
            if old.get(f) != new.get(f) {
                causes.push(FieldCause::forbidden(f, what));
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Provisioner", "string", 0, "provisioner indicates the type of the provisioner."),
            col("ReclaimPolicy", "string", 0, "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
            col("VolumeBindingMode", "string", 0, "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
            col("AllowVolumeExpansion", "string", 0, "allowVolumeExpansion shows whether the storage class allow volume expand."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let default = is_default(obj);
        vec![
            json!(if default {
                format!("{} (default)", row.name)
            } else {
                row.name.clone()
            }),
            json!(str_at(obj, "/provisioner")),
            json!(str_at(obj, "/reclaimPolicy")),
            json!(str_at(obj, "/volumeBindingMode")),
            json!(obj
                .get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(row.age),
        ]
    }
}

/// Is this StorageClass (or IngressClass, with its own annotation) marked the default?
pub(crate) fn is_default(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| {
            [
                DEFAULT_CLASS_ANNOTATION,
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| a.get(*k).and_then(Value::as_str) == Some("true"))
        })
}
