//! The current state of every object in memory, updated by the writer after each commit and
//! before its events go out: gets and consistent lists never touch SQLite, and a list is one
//! snapshot at one revision. Objects are `Bytes`, shared with events and responses.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::{EventKind, ObjectKey, StoredObject};

/// One resource's objects: (namespace, name) → (revision, bytes), in list order.
type Objects = BTreeMap<(String, String), (u64, Bytes)>;

/// Objects by resource, then (namespace, name) in list order.
#[derive(Default)]
pub(crate) struct Cache {
    /// The revision the cache reflects.
    pub revision: u64,
    objects: HashMap<String, Objects>,
}

impl Cache {
    /// Put an object (as loaded at start-up or just committed).
    pub fn put(&mut self, obj: &StoredObject) {
        self.objects
            .entry(obj.key.resource.clone())
            .or_default()
            .insert(
                (obj.key.namespace.clone(), obj.key.name.clone()),
                (obj.revision, obj.data.clone()),
            );
    }

    /// Apply one committed change.
    pub fn apply(&mut self, kind: EventKind, obj: &StoredObject) {
        match kind {
            EventKind::Deleted => {
                if let Some(m) = self.objects.get_mut(&obj.key.resource) {
                    m.remove(&(obj.key.namespace.clone(), obj.key.name.clone()));
                }
            }
            EventKind::Added | EventKind::Modified => self.put(obj),
        }
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<StoredObject> {
        let (revision, data) = self
            .objects
            .get(&key.resource)?
            .get(&(key.namespace.clone(), key.name.clone()))?;
        Some(StoredObject {
            key: key.clone(),
            revision: *revision,
            data: data.clone(),
        })
    }

    /// Every object, ordered by resource, namespace and name.
    pub fn all(&self) -> Vec<StoredObject> {
        let mut resources: Vec<&String> = self.objects.keys().collect();
        resources.sort();
        resources
            .into_iter()
            .flat_map(|r| self.list(r, None))
            .collect()
    }

    /// Forget everything (before a reload).
    pub fn clear(&mut self) {
        self.objects.clear();
    }

    /// The objects of `resource` (in `namespace` when given), ordered by namespace and name.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<StoredObject> {
        let Some(m) = self.objects.get(resource) else {
            return Vec::new();
        };
        let to_obj = |((ns, name), (rev, data)): (&(String, String), &(u64, Bytes))| StoredObject {
            key: ObjectKey {
                resource: resource.to_string(),
                namespace: ns.clone(),
                name: name.clone(),
            },
            revision: *rev,
            data: data.clone(),
        };
        match namespace {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(to_obj)
                .collect(),
            None => m.iter().map(to_obj).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str, rev: u64) -> StoredObject {
        StoredObject {
            key: ObjectKey::new("pods", ns, name),
            revision: rev,
            data: Bytes::from(format!("{rev}")),
        }
    }

    #[test]
    fn lists_in_key_order_by_namespace_and_applies_changes() {
        let mut c = Cache::default();
        for (ns, name, rev) in [("b", "x", 1), ("a", "z", 2), ("a", "y", 3), ("ab", "w", 4)] {
            c.apply(EventKind::Added, &obj(ns, name, rev));
        }
        let names = |v: Vec<StoredObject>| -> Vec<String> {
            v.into_iter()
                .map(|o| format!("{}/{}", o.key.namespace, o.key.name))
                .collect()
        };
        assert_eq!(names(c.list("pods", None)), ["a/y", "a/z", "ab/w", "b/x"]);
        assert_eq!(names(c.list("pods", Some("a"))), ["a/y", "a/z"]);
        assert_eq!(names(c.list("pods", Some("c"))), Vec::<String>::new());
        c.apply(EventKind::Modified, &obj("a", "y", 5));
        assert_eq!(
            c.get(&ObjectKey::new("pods", "a", "y")).map(|o| o.revision),
            Some(5)
        );
        c.apply(EventKind::Deleted, &obj("a", "y", 6));
        assert!(c.get(&ObjectKey::new("pods", "a", "y")).is_none());
        assert!(c.list("nodes", None).is_empty());
    }
}
