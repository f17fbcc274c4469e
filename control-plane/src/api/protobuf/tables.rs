//! The field tables of every stable Kubernetes kind, generated from Kubernetes' own schemas by
//! `scripts/gen-protobuf-tables.py` into `k8s.tables` and read once, at first use.

use std::collections::HashMap;
use std::sync::OnceLock;

/// How one field is encoded and shown in JSON.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Double,
    /// `metav1.Time`: RFC 3339 to the second.
    Time,
    /// `metav1.MicroTime`: RFC 3339 to the microsecond.
    MicroTime,
    /// `metav1.Duration`: Go's duration text (`1h0m0s`).
    Duration,
    Quantity,
    IntOrString,
    /// Raw JSON bytes (`runtime.RawExtension`, `FieldsV1`).
    Raw,
    /// A `[]string` type: a message of one repeated string.
    StrList,
    Msg(String),
    /// The fields of this message are the parent's own (Go embedding).
    Inline(String),
    /// A `map<string, V>`.
    Map(Box<Ty>),
}

/// How a strategic merge patch treats a list field (`patchStrategy`, `patchMergeKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Replaced whole.
    Replace,
    /// Objects merged by this key.
    Key(String),
    /// Primitives merged as a set.
    Set,
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct Field {
    pub num: u64,
    pub name: String,
    pub ty: Ty,
    pub repeated: bool,
    pub merge: Merge,
}

/// The tables: messages by name, and the message of each (apiVersion, kind).
pub(super) struct Tables {
    pub messages: HashMap<String, Vec<Field>>,
    /// apiVersion → kind → message (looked up with borrowed strings, on every write's lists).
    pub kinds: HashMap<String, HashMap<String, String>>,
}

const DATA: &str = include_str!("k8s.tables");

fn ty(text: &str) -> Result<Ty, String> {
    Ok(match text {
        "str" => Ty::Str,
        "bytes" => Ty::Bytes,
        "int" => Ty::Int,
        "bool" => Ty::Bool,
        "double" => Ty::Double,
        "time" => Ty::Time,
        "microtime" => Ty::MicroTime,
        "duration" => Ty::Duration,
        "quantity" => Ty::Quantity,
        "intorstring" => Ty::IntOrString,
        "raw" => Ty::Raw,
        "strlist" => Ty::StrList,
        other => match other.split_once(':') {
            Some(("msg", m)) => Ty::Msg(m.to_string()),
            Some(("inline", m)) => Ty::Inline(m.to_string()),
            Some(("map", v)) => Ty::Map(Box::new(ty(v)?)),
            _ => return Err(format!("unknown field type {other:?}")),
        },
    })
}

fn parse(data: &str) -> Result<Tables, String> {
    let mut t = Tables {
        messages: HashMap::new(),
        kinds: HashMap::new(),
    };
    for (i, line) in data.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let bad = || format!("line {} of k8s.tables: {line:?}", i + 1);
        match cols.as_slice() {
            ["field", message, num, name, ty_text, repeated, merge] => {
                t.messages
                    .entry(message.to_string())
                    .or_default()
                    .push(Field {
                        num: num.parse().map_err(|_| bad())?,
                        name: name.to_string(),
                        ty: ty(ty_text).map_err(|e| format!("{}: {e}", bad()))?,
                        repeated: *repeated == "1",
                        merge: match *merge {
                            "-" => Merge::Replace,
                            "*" => Merge::Set,
                            key => Merge::Key(key.to_string()),
                        },
                    });
            }
            ["message", message] => {
                t.messages.entry(message.to_string()).or_default();
            }
            ["kind", api_version, kind, message] => {
                t.kinds
                    .entry(api_version.to_string())
                    .or_default()
                    .insert(kind.to_string(), message.to_string());
            }
            _ if line.starts_with('#') || line.is_empty() => {}
            _ => return Err(bad()),
        }
    }
    Ok(t)
}

/// The tables (parsed once); an error when the generated data does not parse.
pub(super) fn tables() -> Result<&'static Tables, String> {
    static TABLES: OnceLock<Result<Tables, String>> = OnceLock::new();
    TABLES
        .get_or_init(|| parse(DATA))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message a field names is in the tables, and every kind's message too.
    #[test]
    fn the_generated_tables_parse_and_are_closed() {
        let t = tables().unwrap();
        let known = |m: &String| t.messages.contains_key(m);
        for fields in t.messages.values() {
            for f in fields {
                let mut ty = &f.ty;
                while let Ty::Map(v) = ty {
                    ty = v;
                }
                if let Ty::Msg(m) | Ty::Inline(m) = ty {
                    assert!(known(m), "{m} of {}", f.name);
                }
            }
        }
        for m in t.kinds.values().flat_map(HashMap::values) {
            assert!(known(m), "{m}");
        }
        // CRDs (their schemas are JSON, not tables) come as JSON: kubectl applies them
        // unstructured.
        for served in crate::resources::RESOURCES
            .iter()
            .filter(|r| r.group != "apiextensions.k8s.io")
        {
            let (av, kind) = (served.api_version(), served.kind);
            assert!(
                t.kinds.get(&av).is_some_and(|k| k.contains_key(kind)),
                "{av} {kind} has no protobuf table"
            );
        }
    }
}
