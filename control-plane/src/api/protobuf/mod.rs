//! Kubernetes' protobuf request encoding (`application/vnd.kubernetes.protobuf`, which kubectl's
//! typed commands and client-go send), decoded to JSON for every stable Kubernetes kind.
//!
//! The body is the `k8s\0` magic and a `runtime.Unknown` envelope around the object. Each
//! message is decoded by its field table (`tables`, generated from Kubernetes' own schemas):
//! a field the table does not know is an error naming it, never silently dropped (unless it
//! holds the zero value, which Go's encoder writes for every non-pointer field). Like JSON's
//! `omitempty`, empty strings and empty messages are left out. Pure code.

mod tables;

use base64::Engine as _;
use serde_json::{json, Map, Value};

pub use tables::Merge;
use tables::{tables, Field, Tables, Ty};

/// The field `name` of `message`, looking into embedded (inline) messages too.
fn find_field<'t>(t: &'t Tables, message: &str, name: &str, depth: usize) -> Option<&'t Field> {
    let fields = t.messages.get(message)?;
    fields.iter().find(|f| f.name == name).or_else(|| {
        if depth >= 8 {
            return None;
        }
        fields.iter().find_map(|f| match &f.ty {
            Ty::Inline(inner) => find_field(t, inner, name, depth + 1),
            _ => None,
        })
    })
}

/// Is this a kind the tables describe (a built-in kind)?
pub fn is_table_kind(api_version: &str, kind: &str) -> bool {
    tables().is_ok_and(|t| {
        t.kinds
            .get(api_version)
            .is_some_and(|k| k.contains_key(kind))
    })
}

/// How a strategic merge patch treats the list `field` at `path` (field names from the root)
/// of an object of `api_version`/`kind`, from Kubernetes' own schema (`patchStrategy`,
/// `patchMergeKey`); None when the kind or the path is not in the tables.
pub fn merge_rule(api_version: &str, kind: &str, path: &[String], field: &str) -> Option<Merge> {
    let t = tables().ok()?;
    let mut message: &str = t.kinds.get(api_version)?.get(kind)?;
    for step in path {
        let f = find_field(t, message, step, 0)?;
        message = match &f.ty {
            Ty::Msg(m) => m,
            _ => return None,
        };
    }
    Some(find_field(t, message, field, 0)?.merge.clone())
}

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

/// Nesting deeper than this is refused (a hostile body cannot recurse without bound).
const MAX_DEPTH: usize = 64;

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

/// The short name of a message (`api.core.v1.ConfigMap` → `ConfigMap`), for errors.
fn short(message: &str) -> &str {
    message.rsplit('.').next().unwrap_or(message)
}

fn fields<'t>(t: &'t Tables, message: &str) -> Result<&'t [Field], String> {
    t.messages
        .get(message)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("no table for {message}"))
}

fn message(t: &Tables, buf: &[u8], name: &str, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the object is nested too deeply".into());
    }
    let table = fields(t, name)?;
    let mut out = Map::new();
    let mut rd = Reader { buf };
    while let Some((num, wire)) = rd.next()? {
        let Some(field) = table.iter().find(|fl| fl.num == num) else {
            // Non-pointer Go fields are always encoded; a zero value carries nothing.
            let zero = match wire {
                Wire::Varint(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed(b) => b.iter().all(|x| *x == 0),
            };
            if zero {
                continue;
            }
            return Err(format!("field {num} of {} is not understood", short(name)));
        };
        if let Ty::Inline(inner) = &field.ty {
            let Wire::Bytes(b) = wire else {
                return Err(format!(
                    "field {num} of {} has the wrong wire type",
                    short(name)
                ));
            };
            if let Value::Object(m) = message(t, b, inner, depth + 1)? {
                out.extend(m);
            }
            continue;
        }
        let values = match (&field.ty, wire, field.repeated) {
            // Packed repeated scalars.
            (Ty::Int | Ty::Bool, Wire::Bytes(b), true) => {
                let mut packed = Reader { buf: b };
                let mut vs = Vec::new();
                while !packed.buf.is_empty() {
                    vs.push(value(t, field, Wire::Varint(packed.varint()?), depth)?);
                }
                vs
            }
            (_, wire, _) => vec![value(t, field, wire, depth)?],
        };
        for v in values {
            if field.repeated {
                if let Value::Array(a) = out.entry(field.name.as_str()).or_insert(json!([])) {
                    a.push(v);
                }
            } else {
                match (out.get_mut(field.name.as_str()), v) {
                    (Some(Value::Object(m)), Value::Object(more)) => m.extend(more),
                    (_, v) => {
                        out.insert(field.name.clone(), v);
                    }
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

/// `seconds` and `nanos` of a Time, MicroTime or Duration message.
fn seconds_nanos(b: &[u8]) -> Result<(i64, i64), String> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    let mut rd = Reader { buf: b };
    while let Some((n, w)) = rd.next()? {
        match (n, w) {
            (1, Wire::Varint(v)) => secs = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i64,
            _ => return Err("a time has fields it should not".into()),
        }
    }
    Ok((secs, nanos))
}

/// A duration as Go prints it (`time.Duration.String`): `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// `n / div` with its fraction, trailing zeros dropped (`1.5`, `2`).
fn fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn value(t: &Tables, field: &Field, wire: Wire<'_>, depth: usize) -> Result<Value, String> {
    let bad = || format!("field {} has the wrong wire type", field.name);
    scalar(t, &field.ty, wire, depth).map_err(|e| if e.is_empty() { bad() } else { e })
}

/// The JSON of one value of type `ty`; an empty error means the wire type is wrong.
fn scalar(t: &Tables, ty: &Ty, wire: Wire<'_>, depth: usize) -> Result<Value, String> {
    match (ty, wire) {
        (Ty::Str, Wire::Bytes(b)) => Ok(json!(text(b)?)),
        (Ty::Bytes, Wire::Bytes(b)) => {
            Ok(json!(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        (Ty::Int, Wire::Varint(v)) => Ok(json!(v as i64)),
        (Ty::Bool, Wire::Varint(v)) => Ok(json!(v != 0)),
        (Ty::Double, Wire::Fixed(b)) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(json!(f64::from_le_bytes(a)))
        }
        (Ty::Msg(m), Wire::Bytes(b)) => message(t, b, m, depth + 1),
        (Ty::Time, Wire::Bytes(b)) => {
            let (secs, _) = seconds_nanos(b)?;
            if secs == 0 {
                return Ok(Value::Null);
            }
            let at = jiff::Timestamp::from_second(secs).map_err(|e| e.to_string())?;
            Ok(json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
        }
        (Ty::MicroTime, Wire::Bytes(b)) => {
            let (secs, nanos) = seconds_nanos(b)?;
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let at = jiff::Timestamp::new(secs, (nanos / 1000 * 1000) as i32)
                .map_err(|e| e.to_string())?;
            Ok(json!(at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
        }
        (Ty::Duration, Wire::Bytes(b)) => {
            let (nanos, _) = seconds_nanos(b)?;
            Ok(json!(go_duration(nanos)))
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            let (mut kind, mut int, mut string) = (0, 0i64, String::new());
            let mut rd = Reader { buf: b };
            while let Some((n, w)) = rd.next()? {
                match (n, w) {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = v as i64,
                    (3, Wire::Bytes(s)) => string = text(s)?,
                    _ => return Err("an IntOrString has fields it should not".into()),
                }
            }
            Ok(if kind == 1 { json!(string) } else { json!(int) })
        }
        (Ty::Quantity, Wire::Bytes(b)) => {
            let mut rd = Reader { buf: b };
            let mut q = String::new();
            while let Some((n, w)) = rd.next()? {
                match (n, w) {
                    (1, Wire::Bytes(s)) => q = text(s)?,
                    _ => return Err("a Quantity has fields it should not".into()),
                }
            }
            Ok(json!(q))
        }
        (Ty::Raw, Wire::Bytes(b)) => {
            let mut rd = Reader { buf: b };
            let mut raw: &[u8] = &[];
            while let Some((n, w)) = rd.next()? {
                match (n, w) {
                    (1, Wire::Bytes(r)) => raw = r,
                    _ => return Err("raw JSON has fields it should not".into()),
                }
            }
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(raw).map_err(|e| format!("raw JSON that does not parse: {e}"))
        }
        (Ty::StrList, Wire::Bytes(b)) => {
            let mut rd = Reader { buf: b };
            let mut items = Vec::new();
            while let Some((n, w)) = rd.next()? {
                match (n, w) {
                    (1, Wire::Bytes(s)) => items.push(json!(text(s)?)),
                    _ => return Err("a string list has fields it should not".into()),
                }
            }
            Ok(Value::Array(items))
        }
        (Ty::Map(v), Wire::Bytes(b)) => {
            // Empty values are dropped like any empty string; a map keeps them.
            let mut rd = Reader { buf: b };
            let (mut key, mut val) = (String::new(), None);
            while let Some((n, w)) = rd.next()? {
                match (n, w) {
                    (1, Wire::Bytes(k)) => key = text(k)?,
                    (2, w) => val = Some(scalar(t, v, w, depth + 1)?),
                    _ => return Err("a map entry has fields it should not".into()),
                }
            }
            let empty = match **v {
                Ty::Str | Ty::Bytes | Ty::Quantity => json!(""),
                _ => Value::Null,
            };
            let mut m = Map::new();
            m.insert(key, val.unwrap_or(empty));
            Ok(Value::Object(m))
        }
        _ => Err(String::new()),
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
    let t = tables()?;
    let Some(name) = t.kinds.get(&api_version).and_then(|k| k.get(&kind)) else {
        return Err(format!(
            "protobuf bodies of {api_version} {kind:?} are not supported; send application/json"
        ));
    };
    let mut obj = message(t, raw.unwrap_or_default(), name, 0)?;
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
    fn decodes_kinds_beyond_the_first_tables() {
        // A CertificateSigningRequest's approval (kubectl certificate approve): spec.request is
        // bytes, status.conditions a list with a time.
        let cond = [
            field(1, 2, b"Approved"),
            field(2, 2, b"KubectlApprove"),
            field(6, 2, b"True"),
        ]
        .concat();
        let status = field(1, 2, &cond);
        let spec = [
            field(1, 2, b"PEM"),
            field(7, 2, b"kubernetes.io/kube-apiserver-client"),
        ]
        .concat();
        let raw = [
            field(1, 2, &field(1, 2, b"alice")),
            field(2, 2, &spec),
            field(3, 2, &status),
        ]
        .concat();
        let got = decode(&envelope(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            &raw,
        ))
        .unwrap();
        assert_eq!(got["spec"]["request"], "UEVN");
        assert_eq!(
            got["spec"]["signerName"],
            "kubernetes.io/kube-apiserver-client"
        );
        assert_eq!(got["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(got["status"]["conditions"][0]["status"], "True");
    }

    #[test]
    fn merge_rules_come_from_the_schema() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let key = |k: &str| Some(Merge::Key(k.into()));
        let cases = [
            ("v1", "Pod", path(&["spec"]), "containers", key("name")),
            (
                "v1",
                "Pod",
                path(&["spec", "containers"]),
                "volumeMounts",
                key("mountPath"),
            ),
            (
                "apps/v1",
                "Deployment",
                path(&["spec", "template", "spec", "containers"]),
                "ports",
                key("containerPort"),
            ),
            ("v1", "Service", path(&["spec"]), "ports", key("port")),
            (
                "v1",
                "Node",
                path(&["spec"]),
                "taints",
                Some(Merge::Replace),
            ),
            (
                "v1",
                "Pod",
                path(&["metadata"]),
                "finalizers",
                Some(Merge::Set),
            ),
            (
                "v1",
                "Pod",
                path(&["spec"]),
                "tolerations",
                Some(Merge::Replace),
            ),
            // Through an embedded message: a Volume's configMap items.
            (
                "v1",
                "Pod",
                path(&["spec", "volumes", "configMap"]),
                "items",
                Some(Merge::Replace),
            ),
            ("example.com/v1", "Widget", path(&[]), "items", None),
        ];
        for (av, kind, p, field, want) in cases {
            assert_eq!(
                merge_rule(av, kind, &p, field),
                want,
                "{kind} {p:?} {field}"
            );
        }
    }

    #[test]
    fn go_durations_table() {
        for (nanos, want) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (150_000_000, "150ms"),
            (3_600_000_000_000, "1h0m0s"),
            (90_000_000_000, "1m30s"),
            (-2_000, "-2µs"),
        ] {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        let zero = [field(9, 2, b""), field(10, 0, &[0])].concat();
        assert!(decode(&envelope("v1", "ConfigMap", &zero)).is_ok());
        let raw = field(9, 2, b"x");
        assert!(decode(&envelope("v1", "ConfigMap", &raw))
            .unwrap_err()
            .contains("field 9 of ConfigMap"));
        assert!(decode(&envelope("example.com/v1", "Widget", b"")).is_err());
        assert!(decode(b"{\"kind\": \"Pod\"}").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
