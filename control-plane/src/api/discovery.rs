//! Discovery and schema documents: `/version`, `/api`, `/apis` (aggregated v2 and legacy),
//! per-group-version `APIResourceList`s, and the OpenAPI v3 documents kubectl needs for
//! `apply`/`create -f` (one PATCH operation with a `fieldValidation` parameter per kind, so kubectl
//! validates on the server with `fieldValidation=Strict`).

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::{self, ResourceType};

/// The exact Content-Type kubectl requires for aggregated discovery v2.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Does the Accept header ask for aggregated discovery v2?
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|part| {
                part.contains("as=APIGroupDiscoveryList")
                    && part.contains("v=v2")
                    && !part.contains("v=v2beta1")
            })
        })
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": skiff_common::KUBE_MAJOR,
        "minor": skiff_common::KUBE_MINOR,
        "emulationMajor": skiff_common::KUBE_MAJOR,
        "emulationMinor": skiff_common::KUBE_MINOR,
        "gitVersion": skiff_common::KUBE_GIT_VERSION,
        "gitCommit": "skiff",
        "gitTreeState": "clean",
        "buildDate": "2026-11-27T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// The kind and verbs of a subresource, as Kubernetes' discovery lists them.
fn subresource_kind(
    r: &ResourceType,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match sub {
        "status" | "approval" => (r.group, r.version, r.kind, &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "finalize" => (r.group, r.version, r.kind, &["update"]),
        _ => (r.group, r.version, r.kind, &["get"]),
    }
}

/// Resources served outside the resource table: the review APIs (`api::reviews`), create only
/// and never stored, and the metrics APIs (`api::metricsapi`), read only and never stored.
/// (group, version, plural, kind, namespaced, verbs)
type Served = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);
const CREATE: &[&str] = &["create"];
const READ: &[&str] = &["get", "list"];
const REVIEWS: &[Served] = &[
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
        CREATE,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        CREATE,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
        CREATE,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        CREATE,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
        CREATE,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
        CREATE,
    ),
    (
        "metrics.k8s.io",
        "v1beta1",
        "nodes",
        "NodeMetrics",
        false,
        READ,
    ),
    (
        "metrics.k8s.io",
        "v1beta1",
        "pods",
        "PodMetrics",
        true,
        READ,
    ),
    (
        "custom.metrics.k8s.io",
        "v1beta2",
        "pods/http_requests_per_second",
        "MetricValueList",
        true,
        &["get"],
    ),
    (
        "custom.metrics.k8s.io",
        "v1beta2",
        "services/http_requests_per_second",
        "MetricValueList",
        true,
        &["get"],
    ),
];

/// The review groups with their versions, after the table's groups.
fn review_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v, ..) in REVIEWS {
        match out.iter_mut().find(|(group, _)| group == g) {
            Some((_, versions)) if !versions.contains(v) => versions.push(v),
            Some(_) => {}
            None => out.push((g, vec![v])),
        }
    }
    out
}

type ServedIn = (&'static str, &'static str, bool, &'static [&'static str]);

fn reviews_in<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = ServedIn> + 'a {
    REVIEWS
        .iter()
        .filter(move |(g, v, ..)| *g == group && *v == version)
        .map(|(_, _, plural, kind, namespaced, verbs)| (*plural, *kind, *namespaced, *verbs))
}

fn aggregated_resource(r: &ResourceType) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (group, version, kind, verbs) = subresource_kind(r, s);
            json!({"subresource": s, "responseKind": {"group": group, "version": version, "kind": kind}, "verbs": verbs})
        })
        .collect();
    json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
        "shortNames": r.short_names,
        "categories": r.categories,
        "subresources": subs,
    })
}

/// Aggregated discovery for the core group (`core = true`) or the named groups: one item per
/// group, its versions in preference order.
pub fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    for (group, versions) in resources::groups() {
        if group.is_empty() != core {
            continue;
        }
        let versions: Vec<Value> = versions
            .iter()
            .map(|version| {
                let res: Vec<Value> = resources::all()
                    .into_iter()
                    .filter(|r| r.group == group && r.version == *version)
                    .map(aggregated_resource)
                    .collect();
                json!({"version": version, "freshness": "Current", "resources": res})
            })
            .collect();
        let meta = if core {
            json!({"creationTimestamp": null})
        } else {
            json!({"creationTimestamp": null, "name": group})
        };
        items.push(json!({"metadata": meta, "versions": versions}));
    }
    if !core {
        for (group, versions) in review_groups() {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let res: Vec<Value> = reviews_in(group, version)
                        .map(|(plural, kind, namespaced, verbs)| {
                            json!({
                                "resource": plural,
                                "responseKind": {"group": group, "version": version, "kind": kind},
                                "scope": if namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": kind.to_lowercase(),
                                "verbs": verbs,
                            })
                        })
                        .collect();
                    json!({"version": version, "freshness": "Current", "resources": res})
                })
                .collect();
            items.push(json!({"metadata": {"creationTimestamp": null, "name": group}, "versions": versions}));
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// Legacy `/api`.
pub fn legacy_api(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// Legacy `/apis`: each group with its versions, the first one preferred.
pub fn legacy_apis() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .chain(review_groups())
        .map(|(g, versions)| {
            let gvs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "preferredVersion": gvs.first().cloned().unwrap_or_default(), "versions": gvs})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `APIResourceList` for one group/version, or None if not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&ResourceType> = resources::all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let mut out: Vec<Value> = reviews_in(group, version)
        .map(|(plural, kind, namespaced, verbs)| {
            json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                "kind": kind, "verbs": verbs})
        })
        .collect();
    if rs.is_empty() && out.is_empty() {
        return None;
    }
    for r in rs {
        out.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": r.verbs(), "shortNames": r.short_names, "categories": r.categories,
        }));
        for s in r.subresources {
            let (group, version, kind, verbs) = subresource_kind(r, s);
            let mut entry = json!({"name": format!("{}/{}", r.plural, s), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if group != r.group || version != r.version {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            out.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// A JSON response with an explicit Content-Type.
pub fn json_with_type(v: &Value, content_type: &'static str) -> Response {
    let mut r = axum::Json(v).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
