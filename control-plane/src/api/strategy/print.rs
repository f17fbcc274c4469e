//! Helpers of server-side printing shared by the strategies' table columns and cells: column
//! definitions, ages as kubectl prints them, selectors, maps and lists as text. Pure code.

use serde_json::{json, Value};

/// The `Name` column every kind starts with.
pub(crate) fn name_col() -> Value {
    col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    )
}

/// The `Age` column.
pub(crate) fn age_col() -> Value {
    col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")
}

/// The columns kube-apiserver's default table prints for a kind without printer columns of its
/// own (Roles, bindings, quotas, CRDs): `Name` and `Created At`.
pub(crate) fn created_at_columns() -> Vec<Value> {
    vec![
        name_col(),
        col("Created At", "date", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

/// The cells of [`created_at_columns`].
pub(crate) fn created_at_cells(obj: &Value, name: &str) -> Vec<Value> {
    vec![
        json!(name),
        json!(obj
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")),
    ]
}

pub(crate) fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": priority})
}

/// The `-o wide` columns of a kind with a pod template: containers, images and (with its
/// description) the selector.
pub(crate) fn template_cols(selector: Option<&str>) -> Vec<Value> {
    let mut cols = vec![
        col(
            "Containers",
            "string",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            1,
            "Images referenced by each container in the template.",
        ),
    ];
    if let Some(d) = selector {
        cols.push(col("Selector", "string", 1, d));
    }
    cols
}

pub(crate) fn int_at(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// `CONTAINERS`, `IMAGES` of a pod template.
pub(crate) fn template_columns(template: Option<&Value>) -> (String, String) {
    let cs = template
        .and_then(|t| t.pointer("/spec/containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    (names.join(","), images.join(","))
}

pub(crate) fn selector_text(sel: Option<&Value>) -> String {
    match sel.map(crate::api::selectors::LabelSelector::from_object) {
        Some(Ok(s)) if !s.0.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

pub(crate) fn map_text(m: Option<&Value>) -> String {
    match m.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

pub(crate) fn list_text(all: Vec<String>) -> String {
    if all.is_empty() {
        return "<none>".into();
    }
    let more = all.len().saturating_sub(3);
    let shown = all.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

pub(crate) fn age_of(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    match ts
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => {
            let secs = now.duration_since(t).as_secs();
            if secs < -1 {
                "<invalid>".into()
            } else {
                human_duration(secs.max(0))
            }
        }
        None => "<unknown>".into(),
    }
}

/// Kubernetes' `HumanDuration`: `10s`, `3m2s`, `5h`, `2d`, `3y20d`...
pub(crate) fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let d = (h % (24 * 365)) / 24;
        if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        }
    } else {
        format!("{}y", h / (24 * 365))
    }
}
