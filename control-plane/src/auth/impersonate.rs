//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers, what
//! the caller must be allowed (`impersonate` on `users`, `serviceaccounts`, `groups`,
//! `authentication.k8s.io/uids` and `userextras/<key>`, as kube-apiserver checks them) and the
//! user the request then acts as. Pure: the API's authentication layer authorizes each check.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::authn::AUTHENTICATED;
use super::rbac::{Attributes, UserInfo};
use super::satoken;

const USER: &str = "impersonate-user";
const UID: &str = "impersonate-uid";
const GROUP: &str = "impersonate-group";
const EXTRA: &str = "impersonate-extra-";

/// Whom a request asks to act as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impersonation {
    user: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

/// Why the headers cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImpersonationError {
    /// Groups, uid or extras without a user, or an unreadable header.
    #[error("{0}")]
    Bad(String),
}

/// The impersonation a request asks for, if any.
pub fn parse(headers: &HeaderMap) -> Result<Option<Impersonation>, ImpersonationError> {
    let mut asked = false;
    let mut imp = Impersonation::default();
    for (name, value) in headers {
        let n = name.as_str();
        if !n.starts_with("impersonate-") {
            continue;
        }
        asked = true;
        let v = value
            .to_str()
            .map_err(|_| ImpersonationError::Bad(format!("header {n} is not valid text")))?
            .to_string();
        match n {
            USER => imp.user = v,
            UID => imp.uid = Some(v),
            GROUP => imp.groups.push(v),
            _ => match n.strip_prefix(EXTRA) {
                Some(key) if !key.is_empty() => {
                    let key = percent_decode(key);
                    imp.extra.entry(key).or_default().push(v);
                }
                _ => {
                    return Err(ImpersonationError::Bad(format!(
                        "unknown impersonation header {n}"
                    )))
                }
            },
        }
    }
    if !asked {
        return Ok(None);
    }
    if imp.user.is_empty() {
        return Err(ImpersonationError::Bad(
            "requested impersonation of groups, uid or extra without impersonating a user".into(),
        ));
    }
    Ok(Some(imp))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

impl Impersonation {
    /// What the caller must be allowed, one check per asked attribute.
    pub fn checks(&self) -> Vec<Attributes> {
        let check =
            |group: &str, resource: &str, sub: &str, name: &str, ns: &str| Attributes::Resource {
                verb: "impersonate".into(),
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                name: name.into(),
                namespace: ns.into(),
            };
        let mut out = vec![match service_account(&self.user) {
            Some((ns, name)) => check("", "serviceaccounts", "", name, ns),
            None => check("", "users", "", &self.user, ""),
        }];
        out.extend(self.groups.iter().map(|g| check("", "groups", "", g, "")));
        if let Some(uid) = &self.uid {
            out.push(check("authentication.k8s.io", "uids", "", uid, ""));
        }
        for (key, values) in &self.extra {
            out.extend(
                values
                    .iter()
                    .map(|v| check("authentication.k8s.io", "userextras", key, v, "")),
            );
        }
        out
    }

    /// The user the request acts as once every check passed.
    pub fn user(&self) -> UserInfo {
        let mut groups = self.groups.clone();
        if groups.is_empty() {
            if let Some((ns, _)) = service_account(&self.user) {
                groups = satoken::groups(ns);
            }
        }
        if !groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == "system:unauthenticated")
            && self.user != "system:anonymous"
        {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: self.user.clone(),
            uid: self.uid.clone().unwrap_or_default(),
            groups,
            extra: self.extra.clone(),
        }
    }
}

/// `(namespace, name)` of a ServiceAccount user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn check(resource: &str, name: &str, ns: &str) -> Attributes {
        Attributes::Resource {
            verb: "impersonate".into(),
            group: "".into(),
            resource: resource.into(),
            subresource: "".into(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn impersonation_table() {
        // (headers, checks, user name, groups) or an error.
        type Want = Result<Option<(Vec<Attributes>, &'static str, Vec<&'static str>)>, ()>;
        let cases: Vec<(Vec<(&str, &str)>, Want)> = vec![
            (vec![("authorization", "Bearer x")], Ok(None)),
            (
                vec![("Impersonate-User", "alice")],
                Ok(Some((
                    vec![check("users", "alice", "")],
                    "alice",
                    vec![AUTHENTICATED],
                ))),
            ),
            (
                vec![
                    ("Impersonate-User", "alice"),
                    ("Impersonate-Group", "devs"),
                    ("Impersonate-Group", "ops"),
                ],
                Ok(Some((
                    vec![
                        check("users", "alice", ""),
                        check("groups", "devs", ""),
                        check("groups", "ops", ""),
                    ],
                    "alice",
                    vec!["devs", "ops", AUTHENTICATED],
                ))),
            ),
            (
                vec![("Impersonate-User", "system:serviceaccount:team-a:bot")],
                Ok(Some((
                    vec![check("serviceaccounts", "bot", "team-a")],
                    "system:serviceaccount:team-a:bot",
                    vec![
                        "system:serviceaccounts",
                        "system:serviceaccounts:team-a",
                        AUTHENTICATED,
                    ],
                ))),
            ),
            (vec![("Impersonate-Group", "system:masters")], Err(())),
            (vec![("Impersonate-Everything", "x")], Err(())),
        ];
        for (pairs, want) in cases {
            let got = parse(&headers(&pairs));
            match (got, want) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some(imp)), Ok(Some((checks, name, groups)))) => {
                    assert_eq!(imp.checks(), checks, "{pairs:?}");
                    let u = imp.user();
                    assert_eq!(u.name, name);
                    assert_eq!(u.groups, groups, "{pairs:?}");
                }
                (Err(_), Err(())) => {}
                (got, want) => panic!("{pairs:?}: got {got:?}, want {want:?}"),
            }
        }
        let extra = parse(&headers(&[
            ("Impersonate-User", "a"),
            ("Impersonate-Extra-scopes%2Fv1", "read"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            extra.checks()[1],
            Attributes::Resource {
                verb: "impersonate".into(),
                group: "authentication.k8s.io".into(),
                resource: "userextras".into(),
                subresource: "scopes/v1".into(),
                name: "read".into(),
                namespace: "".into(),
            }
        );
    }
}
