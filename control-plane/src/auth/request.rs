//! What a request asks, as the authorizer sees it: kube-apiserver's `RequestInfoFactory` over the
//! method, the raw path and the query. Pure.
//!
//! `/api/v1/...` and `/apis/GROUP/VERSION/...` with a resource are resource requests (verbs
//! get/list/watch/create/update/patch/delete/deletecollection; a `metadata.name=` field selector
//! names the object of a list or watch); everything else (`/version`, `/healthz`, discovery,
//! `/openapi/...`, the module store) is a non-resource request whose verb is the lower-cased
//! method. The path is used as sent (not percent-decoded), as the API's router does, so the two
//! never disagree about what a path names.

use super::rbac::Attributes;

/// The attributes of a request with `method` (upper case), `path` and raw `query`.
pub fn attributes(method: &str, path: &str, query: Option<&str>) -> Attributes {
    let non_resource = || Attributes::NonResource {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.len() < 3 {
        return non_resource();
    }
    let (group, mut rest) = match parts[0] {
        "api" => ("", &parts[1..]),
        "apis" if parts.len() >= 4 => (parts[1], &parts[2..]),
        _ => return non_resource(),
    };
    // rest = version, ...
    rest = &rest[1..];
    let mut verb = match rest.first() {
        Some(&"watch") if rest.len() >= 2 => {
            rest = &rest[1..];
            "watch"
        }
        _ => match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        },
    }
    .to_string();
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1].to_string();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let at = |i: usize| rest.get(i).copied().unwrap_or("").to_string();
    let (resource, mut name, subresource) = (at(0), at(1), at(2));
    let params = || url::form_urlencoded::parse(query.unwrap_or("").as_bytes());
    if name.is_empty() && verb == "get" {
        let watch = params()
            .find(|(k, _)| k == "watch")
            .is_some_and(|(_, v)| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"));
        verb = if watch { "watch" } else { "list" }.into();
    }
    if name.is_empty() && (verb == "list" || verb == "watch") {
        if let Some((_, selector)) = params().find(|(k, _)| k == "fieldSelector") {
            name = exact_name(&selector).unwrap_or_default();
        }
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".into();
    }
    Attributes::Resource {
        verb,
        group: group.to_string(),
        resource,
        subresource,
        name,
        namespace,
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==x` among its terms), if
/// it is a valid path segment.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let v = term
            .trim()
            .strip_prefix("metadata.name")?
            .trim_start()
            .strip_prefix('=')?;
        let v = v.strip_prefix('=').unwrap_or(v).trim();
        let valid = !v.is_empty() && v != "." && v != ".." && !v.contains(['/', '%']);
        valid.then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str, ns: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    fn non(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource {
            verb: verb.into(),
            path: path.into(),
        }
    }

    #[test]
    fn request_attributes_table() {
        let cases: Vec<(&str, &str, Option<&str>, Attributes)> = vec![
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                None,
                res("list", "", "pods", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/pods",
                None,
                res("list", "", "pods", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Some("watch=true"),
                res("watch", "", "pods", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Some("watch=0"),
                res("list", "", "pods", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Some("watch=1&fieldSelector=metadata.name%3Dweb"),
                res("watch", "", "pods", "", "web", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Some("fieldSelector=status.phase%3DRunning,metadata.name%3D%3Dweb"),
                res("list", "", "pods", "", "web", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Some("fieldSelector=metadata.name%3D..%2Fx"),
                res("list", "", "pods", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/a/pods",
                None,
                res("watch", "", "pods", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/web",
                None,
                res("get", "", "pods", "", "web", "a"),
            ),
            (
                "HEAD",
                "/api/v1/namespaces/a/pods/web",
                None,
                res("get", "", "pods", "", "web", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/web/log",
                None,
                res("get", "", "pods", "log", "web", "a"),
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods",
                None,
                res("create", "", "pods", "", "", "a"),
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/web/eviction",
                None,
                res("create", "", "pods", "eviction", "web", "a"),
            ),
            (
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/bot/token",
                None,
                res("create", "", "serviceaccounts", "token", "bot", "a"),
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/a/deployments/web/scale",
                None,
                res("update", "apps", "deployments", "scale", "web", "a"),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/a/deployments/web",
                None,
                res("patch", "apps", "deployments", "", "web", "a"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/a/deployments/web",
                None,
                res("delete", "apps", "deployments", "", "web", "a"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/a/deployments",
                None,
                res("deletecollection", "apps", "deployments", "", "", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a",
                None,
                res("get", "", "namespaces", "", "a", "a"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/a/finalize",
                None,
                res("update", "", "namespaces", "finalize", "a", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces/a/status",
                None,
                res("get", "", "namespaces", "status", "a", "a"),
            ),
            (
                "GET",
                "/api/v1/namespaces",
                None,
                res("list", "", "namespaces", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/nodes/n1/",
                None,
                res("get", "", "nodes", "", "n1", ""),
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                None,
                res(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    "",
                    "",
                    "",
                ),
            ),
            ("GET", "/api", None, non("get", "/api")),
            ("GET", "/api/v1", None, non("get", "/api/v1")),
            ("GET", "/apis/apps/v1", None, non("get", "/apis/apps/v1")),
            ("GET", "/apis/apps", None, non("get", "/apis/apps")),
            ("GET", "/version", None, non("get", "/version")),
            (
                "GET",
                "/openapi/v3/apis/apps/v1",
                None,
                non("get", "/openapi/v3/apis/apps/v1"),
            ),
            (
                "PUT",
                "/skiff/v1/modules/app:v1",
                None,
                non("put", "/skiff/v1/modules/app:v1"),
            ),
            (
                "OPTIONS",
                "/api/v1/pods",
                None,
                res("", "", "pods", "", "", ""),
            ),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                attributes(method, path, query),
                want,
                "{method} {path} {query:?}"
            );
        }
    }
}
