//! The typed form (a k8s-openapi type) behind a served kind, as data the resource table holds:
//! decoding through it finds the fields the type does not know, and its JSON schema feeds the
//! OpenAPI documents. Pure code.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The typed form of a kind.
pub trait Schema: Send + Sync {
    /// Decode `v` through the type: the paths of the fields it does not know, or the decoding
    /// error (a field of the wrong type).
    fn ignored(&self, v: &Value) -> Result<Vec<FieldPath>, String>;
    /// Register the type's JSON schema with `generator`; returns its definition name.
    fn register(&self, generator: &mut SchemaGenerator) -> String;
    /// A schema that is data (a custom resource's): its definition name and JSON schema,
    /// which the OpenAPI documents take as they are.
    fn raw(&self) -> Option<(String, Value)> {
        None
    }
}

/// The [`Schema`] of the k8s-openapi type `T`.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    /// The schema of `T` (a constant, so the resource table can hold `&Typed::<T>::NEW`).
    pub const NEW: Self = Typed(PhantomData);
}

impl<T: DeserializeOwned + JsonSchema> Schema for Typed<T> {
    fn ignored(&self, v: &Value) -> Result<Vec<FieldPath>, String> {
        Ok(ignored::<T>(v)?.into_iter().map(FieldPath).collect())
    }

    fn register(&self, generator: &mut SchemaGenerator) -> String {
        generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

/// Decode `v` as `T`, collecting the paths of the fields `T` does not know.
fn ignored<T: DeserializeOwned>(v: &Value) -> Result<Vec<Vec<Seg<'static>>>, String> {
    let mut out = Vec::new();
    let _: T = serde_ignored::deserialize(v, |path| out.push(segments(&path)))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// One step of a field's path: a key of an object or an index of an array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg<'a> {
    /// A key of an object.
    Key(Cow<'a, str>),
    /// An index of an array.
    Index(usize),
}

fn segments(path: &serde_ignored::Path) -> Vec<Seg<'static>> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut s = segments(parent);
            s.push(Seg::Index(*index));
            s
        }
        Path::Map { parent, key } => {
            let mut s = segments(parent);
            s.push(Seg::Key(Cow::Owned(key.clone())));
            s
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

fn lookup<'a>(v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    segs.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.get(k.as_ref()),
        Seg::Index(i) => v.get(*i),
    })
}

/// A field of an object, as [`crate::api::typed::unknown_fields`] finds it; shown as `spec.containers[0].colour`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath(Vec<Seg<'static>>);

impl FieldPath {
    /// Remove this field from `obj` (nothing happens when it is not there).
    pub fn remove_from(&self, obj: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let parent = parents.iter().try_fold(obj, |v, s| match s {
            Seg::Key(k) => v.get_mut(k.as_ref()),
            Seg::Index(i) => v.get_mut(*i),
        });
        if let (Some(Value::Object(m)), Seg::Key(k)) = (parent, last) {
            m.remove(k.as_ref());
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&spell(&self.0))
    }
}

impl FieldPath {
    /// A path from its steps.
    pub(crate) fn new(segs: Vec<Seg<'static>>) -> Self {
        FieldPath(segs)
    }

    /// The value at this path in `obj`, if any.
    pub fn value_in<'a>(&self, obj: &'a Value) -> Option<&'a Value> {
        lookup(obj, &self.0)
    }
}

/// `spec.containers[0].colour`.
pub(crate) fn spell(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}
