//! Field selectors, and the label selectors of `skiff_common::labels`: parsing and matching, as
//! Kubernetes defines them. Pure code.

use serde_json::Value;

pub use skiff_common::labels::{LabelSelector, Requirement};

/// A parsed field selector: terms `field=value`, `field==value`, `field!=value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse, accepting only `metadata.name`, `metadata.namespace` and the `allowed` labels.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !allowed.contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Does the object match?
    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, eq, want)| (field_value(obj, field) == *want) == *eq)
    }

    /// Does every term name `metadata.name` or `metadata.namespace` (so an object's key is
    /// enough to evaluate it)?
    pub fn key_only(&self) -> bool {
        self.0
            .iter()
            .all(|(f, _, _)| f == "metadata.name" || f == "metadata.namespace")
    }

    /// Does an object under this key match? Exact when [`FieldSelector::key_only`] holds.
    pub fn matches_key(&self, namespace: &str, name: &str) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let have = if field == "metadata.namespace" {
                namespace
            } else {
                name
            };
            (have == want) == *eq
        })
    }

    /// The value this selector pins `field` to with `=`, if any.
    pub fn pinned(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == field && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

/// The string value of a dotted field path (missing → empty; `source` of events is its component).
pub fn field_value(obj: &Value, field: &str) -> String {
    let path: Vec<&str> = if field == "source" {
        vec!["source", "component"]
    } else {
        field.split('.').collect()
    };
    let mut cur = obj;
    for seg in path {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_table() {
        let labels = json!({"app": "web", "tier": "front", "env": "prod"});
        let cases: &[(&str, Option<bool>)] = &[
            ("", Some(true)),
            ("app=web", Some(true)),
            ("app==web", Some(true)),
            ("app=db", Some(false)),
            ("app!=db", Some(true)),
            ("missing!=x", Some(true)),
            ("app in (web,db)", Some(true)),
            ("app in (db)", Some(false)),
            ("app notin (db)", Some(true)),
            ("missing notin (db)", Some(true)),
            ("tier", Some(true)),
            ("!tier", Some(false)),
            ("!missing", Some(true)),
            ("app=web,tier in (front, back),!canary", Some(true)),
            ("app=web,env=dev", Some(false)),
            ("app=we b", None),
            ("app in web", None),
            ("=x", None),
        ];
        for (sel, want) in cases {
            let got = LabelSelector::parse(sel).ok().map(|s| s.matches(&labels));
            assert_eq!(got, *want, "selector {sel:?}");
        }
    }

    #[test]
    fn selector_objects_table() {
        let labels = json!({"app": "web", "tier": "front"});
        let cases: &[(Value, Option<(bool, &str)>)] = &[
            (json!({}), Some((true, ""))),
            (
                json!({"matchLabels": {"app": "web"}}),
                Some((true, "app=web")),
            ),
            (
                json!({"matchLabels": {"app": "db"}}),
                Some((false, "app=db")),
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}),
                Some((true, "tier in (front,back)")),
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                Some((false, "tier notin (front)")),
            ),
            (
                json!({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}),
                Some((true, "!canary")),
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                Some((true, "app=web,tier")),
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "In", "values": []}]}),
                None,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "Near"}]}),
                None,
            ),
            (json!({"matchLabels": {"a b": "x"}}), None),
        ];
        for (sel, want) in cases {
            let got = LabelSelector::from_object(sel)
                .ok()
                .map(|s| (s.matches(&labels), s.to_string()));
            assert_eq!(got.as_ref().map(|(m, s)| (*m, s.as_str())), *want, "{sel}");
            if let Some((_, text)) = got {
                assert_eq!(
                    LabelSelector::parse(&text).unwrap().matches(&labels),
                    LabelSelector::from_object(sel).unwrap().matches(&labels),
                    "round trip of {text:?}"
                );
            }
        }
    }

    #[test]
    fn field_selector_table() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let allowed = &["spec.nodeName", "status.phase"];
        let cases: &[(&str, Option<bool>)] = &[
            ("", Some(true)),
            ("metadata.name=a", Some(true)),
            ("metadata.name==b", Some(false)),
            ("spec.nodeName=n1,status.phase=Running", Some(true)),
            ("spec.nodeName!=n1", Some(false)),
            ("spec.nodeName=", Some(false)),
            ("status.podIP=1", None),
            ("nonsense", None),
        ];
        for (sel, want) in cases {
            let got = FieldSelector::parse(sel, allowed)
                .ok()
                .map(|s| s.matches(&pod));
            assert_eq!(got, *want, "selector {sel:?}");
        }
        let unscheduled = json!({"metadata": {"name": "b"}, "spec": {}});
        assert!(FieldSelector::parse("spec.nodeName=", allowed)
            .unwrap()
            .matches(&unscheduled));
        assert_eq!(
            FieldSelector::parse("foo=bar", allowed).unwrap_err(),
            "field label not supported: foo"
        );
    }

    /// A selector on the key alone decides from (namespace, name) exactly as from the object.
    #[test]
    fn key_only_selectors_match_the_key_as_the_object() {
        let objects = [
            ("default", "kube-root-ca.crt"),
            ("default", "other"),
            ("kube-system", "kube-root-ca.crt"),
            ("", "cluster-scoped"),
        ];
        for sel in [
            "",
            "metadata.name=kube-root-ca.crt",
            "metadata.name!=kube-root-ca.crt",
            "metadata.namespace=default",
            "metadata.namespace==default,metadata.name=other",
            "metadata.namespace!=default,metadata.name=kube-root-ca.crt",
            "metadata.namespace=",
        ] {
            let s = FieldSelector::parse(sel, &[]).unwrap();
            assert!(s.key_only(), "{sel:?}");
            for (ns, name) in objects {
                let obj = json!({"metadata": {"namespace": ns, "name": name}});
                assert_eq!(
                    s.matches_key(ns, name),
                    s.matches(&obj),
                    "selector {sel:?} on {ns}/{name}"
                );
            }
        }
        assert!(
            !FieldSelector::parse("spec.nodeName=n1", &["spec.nodeName"])
                .unwrap()
                .key_only()
        );
    }
}

/// Properties of label selectors against a model of Kubernetes' documented semantics.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["app", "tier", "env", "example.com/team"])
            .prop_map(str::to_string)
    }

    fn val() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["web", "db", "prod", "a-1"]).prop_map(str::to_string)
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        prop_oneof![
            (key(), val()).prop_map(|(k, v)| Requirement::Equals(k, v)),
            (key(), val()).prop_map(|(k, v)| Requirement::NotEquals(k, v)),
            (key(), prop::collection::vec(val(), 1..3)).prop_map(|(k, v)| Requirement::In(k, v)),
            (key(), prop::collection::vec(val(), 1..3)).prop_map(|(k, v)| Requirement::NotIn(k, v)),
            key().prop_map(Requirement::Exists),
            key().prop_map(Requirement::NotExists),
        ]
    }

    /// Kubernetes' definition, requirement by requirement: `!=` and `notin` also match an
    /// absent label; a selector matches when every requirement does.
    fn model(reqs: &[Requirement], labels: &std::collections::BTreeMap<String, String>) -> bool {
        reqs.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, s) => labels.get(k).is_some_and(|x| s.contains(x)),
            Requirement::NotIn(k, s) => labels.get(k).is_none_or(|x| !s.contains(x)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    proptest! {
        #[test]
        fn query_syntax_round_trips_and_matches_the_model(
            reqs in prop::collection::vec(requirement(), 0..4),
            labels in prop::collection::btree_map(key(), val(), 0..4),
        ) {
            let sel = LabelSelector(reqs.clone());
            let parsed = LabelSelector::parse(&sel.to_string()).unwrap();
            let lv = json!(labels);
            prop_assert_eq!(parsed.matches(&lv), model(&reqs, &labels));
            prop_assert_eq!(sel.matches(&lv), model(&reqs, &labels));
        }

        #[test]
        fn selector_objects_match_like_their_query_form(
            match_labels in prop::collection::btree_map(key(), val(), 0..3),
            labels in prop::collection::btree_map(key(), val(), 0..4),
        ) {
            let sel = LabelSelector::from_object(&json!({"matchLabels": match_labels})).unwrap();
            let text = LabelSelector::parse(&sel.to_string()).unwrap();
            let lv = json!(labels);
            prop_assert_eq!(sel.matches(&lv), text.matches(&lv));
            prop_assert_eq!(sel.matches(&lv), match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
        }
    }
}
