//! Kubernetes' protobuf request encoding, decoded to JSON for the kinds stock kubectl sends
//! that way (`kubectl create namespace|configmap|secret|serviceaccount|service|deployment|job|
//! cronjob` and `kubectl drain`'s evictions use typed clients, which post `application/vnd.kubernetes.protobuf` from 1.32 on).
//!
//! The body is the `k8s\0` magic and a `runtime.Unknown` envelope around the object. Each
//! message is decoded by a table of its fields (numbers from k8s.io/api's generated.proto); a
//! field the table does not know is an error naming it, never silently dropped (unless it holds
//! the zero value, which Go's encoder writes for every non-pointer field). Like JSON's
//! `omitempty`, empty strings and empty messages are left out. Pure code.

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// How one field is encoded.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    IntOrString,
    Quantity,
    Msg(&'static Schema),
    /// A `map<string, V>`: repeated entries `{1: key, 2: value}` described by the schema.
    Map(&'static Schema),
}

struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

/// A message: its name (for errors) and fields.
pub struct Schema {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

static TIME: Schema = Schema {
    name: "Time",
    fields: &[f(1, "seconds", Ty::Int), f(2, "nanos", Ty::Int)],
};
static INT_OR_STRING: Schema = Schema {
    name: "IntOrString",
    fields: &[
        f(1, "type", Ty::Int),
        f(2, "intVal", Ty::Int),
        f(3, "strVal", Ty::Str),
    ],
};
static QUANTITY: Schema = Schema {
    name: "Quantity",
    fields: &[f(1, "string", Ty::Str)],
};
static MAP_STR: Schema = Schema {
    name: "map entry",
    fields: &[f(1, "key", Ty::Str), f(2, "value", Ty::Str)],
};
static MAP_BYTES: Schema = Schema {
    name: "map entry",
    fields: &[f(1, "key", Ty::Str), f(2, "value", Ty::Bytes)],
};
static MAP_QUANTITY: Schema = Schema {
    name: "map entry",
    fields: &[f(1, "key", Ty::Str), f(2, "value", Ty::Quantity)],
};
static OWNER_REF: Schema = Schema {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Ty::Str),
        f(3, "name", Ty::Str),
        f(4, "uid", Ty::Str),
        f(5, "apiVersion", Ty::Str),
        f(6, "controller", Ty::Bool),
        f(7, "blockOwnerDeletion", Ty::Bool),
    ],
};
static OBJECT_META: Schema = Schema {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "generateName", Ty::Str),
        f(3, "namespace", Ty::Str),
        f(4, "selfLink", Ty::Str),
        f(5, "uid", Ty::Str),
        f(6, "resourceVersion", Ty::Str),
        f(7, "generation", Ty::Int),
        f(8, "creationTimestamp", Ty::Time),
        f(9, "deletionTimestamp", Ty::Time),
        f(10, "deletionGracePeriodSeconds", Ty::Int),
        f(11, "labels", Ty::Map(&MAP_STR)),
        f(12, "annotations", Ty::Map(&MAP_STR)),
        r(13, "ownerReferences", Ty::Msg(&OWNER_REF)),
        r(14, "finalizers", Ty::Str),
    ],
};
static PRECONDITIONS: Schema = Schema {
    name: "Preconditions",
    fields: &[f(1, "uid", Ty::Str), f(2, "resourceVersion", Ty::Str)],
};
static DELETE_OPTIONS: Schema = Schema {
    name: "DeleteOptions",
    fields: &[
        f(1, "gracePeriodSeconds", Ty::Int),
        f(2, "preconditions", Ty::Msg(&PRECONDITIONS)),
        f(3, "orphanDependents", Ty::Bool),
        f(4, "propagationPolicy", Ty::Str),
        r(5, "dryRun", Ty::Str),
        f(
            6,
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            Ty::Bool,
        ),
    ],
};
/// policy/v1 Eviction (`kubectl drain` posts it as protobuf).
static EVICTION: Schema = Schema {
    name: "Eviction",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "deleteOptions", Ty::Msg(&DELETE_OPTIONS)),
    ],
};
static EMPTY: Schema = Schema {
    name: "status",
    fields: &[],
};
static NAMESPACE_SPEC: Schema = Schema {
    name: "NamespaceSpec",
    fields: &[r(1, "finalizers", Ty::Str)],
};
static NAMESPACE: Schema = Schema {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&NAMESPACE_SPEC)),
        f(3, "status", Ty::Msg(&EMPTY)),
    ],
};
static CONFIG_MAP: Schema = Schema {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::Map(&MAP_STR)),
        f(3, "binaryData", Ty::Map(&MAP_BYTES)),
        f(4, "immutable", Ty::Bool),
    ],
};
static SECRET: Schema = Schema {
    name: "Secret",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::Map(&MAP_BYTES)),
        f(3, "type", Ty::Str),
        f(4, "stringData", Ty::Map(&MAP_STR)),
        f(5, "immutable", Ty::Bool),
    ],
};
static LOCAL_REF: Schema = Schema {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Ty::Str)],
};
static OBJECT_REF: Schema = Schema {
    name: "ObjectReference",
    fields: &[
        f(1, "kind", Ty::Str),
        f(2, "namespace", Ty::Str),
        f(3, "name", Ty::Str),
        f(4, "uid", Ty::Str),
        f(5, "apiVersion", Ty::Str),
        f(6, "resourceVersion", Ty::Str),
        f(7, "fieldPath", Ty::Str),
    ],
};
static SERVICE_ACCOUNT: Schema = Schema {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        r(2, "secrets", Ty::Msg(&OBJECT_REF)),
        r(3, "imagePullSecrets", Ty::Msg(&LOCAL_REF)),
        f(4, "automountServiceAccountToken", Ty::Bool),
    ],
};
static SERVICE_PORT: Schema = Schema {
    name: "ServicePort",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "protocol", Ty::Str),
        f(3, "port", Ty::Int),
        f(4, "targetPort", Ty::IntOrString),
        f(5, "nodePort", Ty::Int),
        f(6, "appProtocol", Ty::Str),
    ],
};
static SERVICE_SPEC: Schema = Schema {
    name: "ServiceSpec",
    fields: &[
        r(1, "ports", Ty::Msg(&SERVICE_PORT)),
        f(2, "selector", Ty::Map(&MAP_STR)),
        f(3, "clusterIP", Ty::Str),
        f(4, "type", Ty::Str),
        r(5, "externalIPs", Ty::Str),
        f(7, "sessionAffinity", Ty::Str),
        f(8, "loadBalancerIP", Ty::Str),
        f(10, "externalName", Ty::Str),
        f(11, "externalTrafficPolicy", Ty::Str),
        f(13, "publishNotReadyAddresses", Ty::Bool),
    ],
};
static LOAD_BALANCER: Schema = Schema {
    name: "ServiceStatus",
    fields: &[f(1, "loadBalancer", Ty::Msg(&EMPTY))],
};
static SERVICE: Schema = Schema {
    name: "Service",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&SERVICE_SPEC)),
        f(3, "status", Ty::Msg(&LOAD_BALANCER)),
    ],
};
static SELECTOR_REQ: Schema = Schema {
    name: "LabelSelectorRequirement",
    fields: &[
        f(1, "key", Ty::Str),
        f(2, "operator", Ty::Str),
        r(3, "values", Ty::Str),
    ],
};
static LABEL_SELECTOR: Schema = Schema {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", Ty::Map(&MAP_STR)),
        r(2, "matchExpressions", Ty::Msg(&SELECTOR_REQ)),
    ],
};
static CONTAINER_PORT: Schema = Schema {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "hostPort", Ty::Int),
        f(3, "containerPort", Ty::Int),
        f(4, "protocol", Ty::Str),
        f(5, "hostIP", Ty::Str),
    ],
};
static ENV_VAR: Schema = Schema {
    name: "EnvVar",
    fields: &[f(1, "name", Ty::Str), f(2, "value", Ty::Str)],
};
static RESOURCES: Schema = Schema {
    name: "ResourceRequirements",
    fields: &[
        f(1, "limits", Ty::Map(&MAP_QUANTITY)),
        f(2, "requests", Ty::Map(&MAP_QUANTITY)),
    ],
};
static CONTAINER: Schema = Schema {
    name: "Container",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "image", Ty::Str),
        r(3, "command", Ty::Str),
        r(4, "args", Ty::Str),
        f(5, "workingDir", Ty::Str),
        r(6, "ports", Ty::Msg(&CONTAINER_PORT)),
        r(7, "env", Ty::Msg(&ENV_VAR)),
        f(8, "resources", Ty::Msg(&RESOURCES)),
        f(13, "terminationMessagePath", Ty::Str),
        f(14, "imagePullPolicy", Ty::Str),
        f(20, "terminationMessagePolicy", Ty::Str),
    ],
};
static POD_SPEC: Schema = Schema {
    name: "PodSpec",
    fields: &[
        r(2, "containers", Ty::Msg(&CONTAINER)),
        f(3, "restartPolicy", Ty::Str),
        f(4, "terminationGracePeriodSeconds", Ty::Int),
        f(5, "activeDeadlineSeconds", Ty::Int),
        f(6, "dnsPolicy", Ty::Str),
        f(7, "nodeSelector", Ty::Map(&MAP_STR)),
        f(8, "serviceAccountName", Ty::Str),
        f(10, "nodeName", Ty::Str),
        r(20, "initContainers", Ty::Msg(&CONTAINER)),
    ],
};
static POD_TEMPLATE: Schema = Schema {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&POD_SPEC)),
    ],
};
static ROLLING_UPDATE: Schema = Schema {
    name: "RollingUpdateDeployment",
    fields: &[
        f(1, "maxUnavailable", Ty::IntOrString),
        f(2, "maxSurge", Ty::IntOrString),
    ],
};
static STRATEGY: Schema = Schema {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Ty::Str),
        f(2, "rollingUpdate", Ty::Msg(&ROLLING_UPDATE)),
    ],
};
static DEPLOYMENT_SPEC: Schema = Schema {
    name: "DeploymentSpec",
    fields: &[
        f(1, "replicas", Ty::Int),
        f(2, "selector", Ty::Msg(&LABEL_SELECTOR)),
        f(3, "template", Ty::Msg(&POD_TEMPLATE)),
        f(4, "strategy", Ty::Msg(&STRATEGY)),
        f(5, "minReadySeconds", Ty::Int),
        f(6, "revisionHistoryLimit", Ty::Int),
        f(7, "paused", Ty::Bool),
        f(9, "progressDeadlineSeconds", Ty::Int),
    ],
};
static DEPLOYMENT: Schema = Schema {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Ty::Msg(&EMPTY)),
    ],
};
static JOB_SPEC: Schema = Schema {
    name: "JobSpec",
    fields: &[
        f(1, "parallelism", Ty::Int),
        f(2, "completions", Ty::Int),
        f(3, "activeDeadlineSeconds", Ty::Int),
        f(4, "selector", Ty::Msg(&LABEL_SELECTOR)),
        f(5, "manualSelector", Ty::Bool),
        f(6, "template", Ty::Msg(&POD_TEMPLATE)),
        f(7, "backoffLimit", Ty::Int),
        f(8, "ttlSecondsAfterFinished", Ty::Int),
        f(9, "completionMode", Ty::Str),
        f(10, "suspend", Ty::Bool),
    ],
};
static JOB: Schema = Schema {
    name: "Job",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&JOB_SPEC)),
        f(3, "status", Ty::Msg(&EMPTY)),
    ],
};
static JOB_TEMPLATE: Schema = Schema {
    name: "JobTemplateSpec",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&JOB_SPEC)),
    ],
};
static CRONJOB_SPEC: Schema = Schema {
    name: "CronJobSpec",
    fields: &[
        f(1, "schedule", Ty::Str),
        f(2, "startingDeadlineSeconds", Ty::Int),
        f(3, "concurrencyPolicy", Ty::Str),
        f(4, "suspend", Ty::Bool),
        f(5, "jobTemplate", Ty::Msg(&JOB_TEMPLATE)),
        f(6, "successfulJobsHistoryLimit", Ty::Int),
        f(7, "failedJobsHistoryLimit", Ty::Int),
        f(8, "timeZone", Ty::Str),
    ],
};
static CRONJOB: Schema = Schema {
    name: "CronJob",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&CRONJOB_SPEC)),
        f(3, "status", Ty::Msg(&EMPTY)),
    ],
};

/// Non-pointer fields whose JSON form is `omitempty`: their zero value means "unset". (Pointer
/// fields such as `replicas` are only encoded when set, so their zero is kept.)
const OMIT_ZERO: &[&str] = &[
    "generation",
    "hostPort",
    "nodePort",
    "minReadySeconds",
    "paused",
    "publishNotReadyAddresses",
];

/// Is this Content-Type Kubernetes protobuf?
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.starts_with("application/vnd.kubernetes.protobuf")
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        if len > self.buf.len() {
            return Err("truncated field".into());
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    /// The next (field number, wire value).
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => Wire::Bytes(self.bytes()?),
            1 => Wire::Fixed(self.take(8)?),
            5 => Wire::Fixed(self.take(4)?),
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, wire)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(&'a [u8]),
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in a string field".into())
}

fn message(buf: &[u8], schema: &'static Schema) -> Result<Value, String> {
    let mut out = Map::new();
    let mut rd = Reader { buf };
    while let Some((num, wire)) = rd.next()? {
        let Some(field) = schema.fields.iter().find(|fl| fl.num == num) else {
            // Non-pointer Go fields are always encoded; a zero value carries nothing.
            let zero = match wire {
                Wire::Varint(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed(b) => b.iter().all(|x| *x == 0),
            };
            if zero {
                continue;
            }
            return Err(format!("field {num} of {} is not understood", schema.name));
        };
        let v = value(field, wire)?;
        if field.repeated {
            if let Value::Array(a) = out.entry(field.name).or_insert(json!([])) {
                a.push(v);
            }
        } else {
            match (out.get_mut(field.name), v) {
                (Some(Value::Object(m)), Value::Object(more)) => m.extend(more),
                (_, v) => {
                    out.insert(field.name.into(), v);
                }
            }
        }
    }
    out.retain(|k, v| match v {
        Value::String(s) => !s.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Number(n) => n.as_i64() != Some(0) || !OMIT_ZERO.contains(&k.as_str()),
        Value::Bool(b) => *b || !OMIT_ZERO.contains(&k.as_str()),
        _ => true,
    });
    Ok(Value::Object(out))
}

fn value(field: &Field, wire: Wire<'_>) -> Result<Value, String> {
    let bad = || format!("field {} has the wrong wire type", field.name);
    match (field.ty, wire) {
        (Ty::Str, Wire::Bytes(b)) => Ok(json!(text(b)?)),
        (Ty::Bytes, Wire::Bytes(b)) => {
            Ok(json!(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        (Ty::Int, Wire::Varint(v)) => Ok(json!(v as i64)),
        (Ty::Bool, Wire::Varint(v)) => Ok(json!(v != 0)),
        (Ty::Msg(s), Wire::Bytes(b)) => message(b, s),
        (Ty::Time, Wire::Bytes(b)) => {
            let secs = message(b, &TIME)?
                .get("seconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if secs == 0 {
                return Ok(Value::Null);
            }
            let t = jiff::Timestamp::from_second(secs).map_err(|e| e.to_string())?;
            Ok(json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            let v = message(b, &INT_OR_STRING)?;
            Ok(if v.get("type").and_then(Value::as_i64) == Some(1) {
                v.get("strVal").cloned().unwrap_or(json!(""))
            } else {
                v.get("intVal").cloned().unwrap_or(json!(0))
            })
        }
        (Ty::Quantity, Wire::Bytes(b)) => Ok(message(b, &QUANTITY)?
            .get("string")
            .cloned()
            .unwrap_or(json!(""))),
        (Ty::Map(entry), Wire::Bytes(b)) => {
            // Empty values are dropped like any empty string; a map keeps them.
            let e = message(b, entry)?;
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut m = Map::new();
            m.insert(key, e.get("value").cloned().unwrap_or(json!("")));
            Ok(Value::Object(m))
        }
        (Ty::Int, Wire::Fixed(_)) | (_, _) => Err(bad()),
    }
}

/// Decode a protobuf request body into the JSON object it carries.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("the body does not start with the Kubernetes protobuf magic")?;
    let mut rd = Reader { buf: rest };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    while let Some((num, w)) = rd.next()? {
        match (num, w) {
            (1, Wire::Bytes(b)) => {
                let mut tm = Reader { buf: b };
                while let Some((n, w)) = tm.next()? {
                    match (n, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            (3 | 4, _) => {}
            (n, _) => {
                return Err(format!(
                    "field {n} of the protobuf envelope is not understood"
                ))
            }
        }
    }
    let schema: &'static Schema = match kind.as_str() {
        "Namespace" => &NAMESPACE,
        "ConfigMap" => &CONFIG_MAP,
        "Secret" => &SECRET,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "Service" => &SERVICE,
        "Deployment" => &DEPLOYMENT,
        "Job" => &JOB,
        "CronJob" => &CRONJOB,
        "Eviction" => &EVICTION,
        "DeleteOptions" => &DELETE_OPTIONS,
        other => {
            return Err(format!(
                "protobuf bodies of kind {other:?} are not supported; send application/json"
            ))
        }
    };
    let mut obj = message(raw.unwrap_or_default(), schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | wire) as u8];
        if wire == 2 {
            out.push(payload.len() as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [
            field(1, 2, api_version.as_bytes()),
            field(2, 2, kind.as_bytes()),
        ]
        .concat();
        let mut body = b"k8s\0".to_vec();
        body.extend(field(1, 2, &tm));
        body.extend(field(2, 2, raw));
        body.extend(field(3, 2, b""));
        body.extend(field(4, 2, b""));
        body
    }

    #[test]
    fn decodes_a_configmap() {
        let entry = [field(1, 2, b"k"), field(2, 2, b"v")].concat();
        let meta = [field(1, 2, b"cfg"), field(8, 2, b"")].concat();
        let raw = [field(1, 2, &meta), field(2, 2, &entry)].concat();
        let got = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            got,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "creationTimestamp": null}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn decodes_nested_scalars_maps_and_times() {
        let port = [
            field(3, 0, &[80]),
            field(4, 2, &[field(1, 0, &[1]), field(3, 2, b"http")].concat()),
        ]
        .concat();
        let spec = field(1, 2, &port);
        let created = field(8, 2, &field(1, 0, &[0x80, 0xad, 0xe2, 0x04]));
        let label = [field(1, 2, b"empty"), field(2, 2, b"")].concat();
        let meta = [field(1, 2, b"svc"), created, field(11, 2, &label)].concat();
        let raw = [field(1, 2, &meta), field(2, 2, &spec)].concat();
        let got = decode(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            got["spec"]["ports"][0],
            json!({"port": 80, "targetPort": "http"})
        );
        assert_eq!(got["metadata"]["labels"], json!({"empty": ""}));
        assert_eq!(got["metadata"]["creationTimestamp"], "1970-04-26T17:46:40Z");
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        let zero = [field(9, 2, b""), field(10, 0, &[0])].concat();
        assert!(decode(&envelope("v1", "ConfigMap", &zero)).is_ok());
        let raw = field(9, 2, b"x");
        assert!(decode(&envelope("v1", "ConfigMap", &raw))
            .unwrap_err()
            .contains("field 9 of ConfigMap"));
        assert!(decode(&envelope("v1", "Pod", b"")).is_err());
        assert!(decode(b"{\"kind\": \"Pod\"}").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
