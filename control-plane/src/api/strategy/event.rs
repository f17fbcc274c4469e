//! Events: core/v1 Events, and events.k8s.io/v1 Events, which are the same objects stored in
//! their core form and converted on the way in and out (field renames); the `kubectl get
//! events` columns.

use serde_json::{json, Value};

use super::print::{age_of, col};
use super::{str_at, Row, Strategy};

/// The core/v1 Event strategy.
pub(crate) struct Event;

impl Strategy for Event {
    fn columns(&self) -> Vec<Value> {
        vec![
            col("Last Seen", "string", 0, "The time of the last occurrence."),
            col("Type", "string", 0, "Type of this event (Normal, Warning)."),
            col(
                "Reason",
                "string",
                0,
                "The reason for the transition into the object's current status.",
            ),
            col("Object", "string", 0, "The object this Event is about."),
            col(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        let now = row.now;
        {
            let last = obj
                .pointer("/lastTimestamp")
                .filter(|v| !v.is_null())
                .or_else(|| obj.pointer("/eventTime").filter(|v| !v.is_null()))
                .or_else(|| obj.pointer("/firstTimestamp"));
            let object = format!(
                "{}/{}",
                s("/involvedObject/kind").to_lowercase(),
                s("/involvedObject/name")
            );
            vec![
                json!(age_of(last, now)),
                json!(s("/type")),
                json!(s("/reason")),
                json!(object),
                json!(s("/message")),
            ]
        }
    }
}

/// The events.k8s.io/v1 Event strategy: a view of core Events.
pub(crate) struct EventsV1;

impl Strategy for EventsV1 {
    fn columns(&self) -> Vec<Value> {
        Event.columns()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        Event.cells(&rename(obj.clone(), false), row)
    }

    fn storage_form(&self, obj: Value) -> Value {
        let mut o = rename(obj, false);
        o["kind"] = json!("Event");
        o["apiVersion"] = json!("v1");
        o
    }

    fn served_form(&self, obj: Value) -> Value {
        rename(obj, true)
    }
}

/// Fields of a core/v1 Event and their events.k8s.io/v1 names.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(mut v: Value, forward: bool) -> Value {
    if let Some(m) = v.as_object_mut() {
        for (core, new) in EVENT_RENAMES {
            let (from, to) = if forward { (core, new) } else { (new, core) };
            if let Some(x) = m.remove(*from) {
                m.insert(to.to_string(), x);
            }
        }
    }
    v
}
