//! RBAC evaluation, as Kubernetes' RBAC authorizer decides: a request is allowed when a rule of
//! a role bound to its user allows it. Pure: the caller gives the policy (roles and bindings, as
//! read from the store) and the request's attributes.
//!
//! Semantics follow `rbac.authorization.k8s.io/v1`: verbs and API groups match exactly or by
//! `*`; a resource matches exactly (`pods`, `pods/log`), by `*`, or by `*/<subresource>`; empty
//! `resourceNames` match every name; a non-resource URL matches exactly, by `*`, or by a prefix
//! ending in `*`. ClusterRoleBindings grant everywhere; a RoleBinding grants its Role, or a
//! ClusterRole's rules, in its own namespace only. Members of `system:masters` are allowed
//! everything, as kube-apiserver's privileged-group authorizer does before RBAC.

use std::collections::HashMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

/// The group whose members are allowed everything.
pub const MASTERS: &str = "system:masters";

/// Who makes a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:NS:NAME` for a ServiceAccount).
    pub name: String,
    /// Unique id (a ServiceAccount's uid), empty when the credential has none.
    pub uid: String,
    /// Groups (every authenticated user is in `system:authenticated`).
    pub groups: Vec<String>,
    /// Extra attributes (a ServiceAccount token's pod and credential id).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Is the user in `system:masters` (allowed everything)?
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// What a request does, as the authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    /// A request for an API resource.
    Resource {
        /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
        /// a special verb (`impersonate`, `bind`, `escalate`, `use`...).
        verb: String,
        /// API group, empty for core.
        group: String,
        /// Resource (plural).
        resource: String,
        /// Subresource, empty for none.
        subresource: String,
        /// The object's name, empty when the request names none (list, create without a name).
        name: String,
        /// Namespace, empty for cluster-scoped requests.
        namespace: String,
    },
    /// A request for a path outside the API (`/healthz`, `/version`, `/metrics`).
    NonResource {
        /// `get`, `post`, `put`, `delete`...
        verb: String,
        /// The path.
        path: String,
    },
}

/// Does `rule` allow `attrs`?
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    let any = |list: &[String], want: &str| list.iter().any(|v| v == "*" || v == want);
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            any(&rule.verbs, verb)
                && any(groups, group)
                && resource_matches(
                    rule.resources.as_deref().unwrap_or_default(),
                    resource,
                    subresource,
                )
                && rule
                    .resource_names
                    .as_deref()
                    .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == name))
        }
        Attributes::NonResource { verb, path } => {
            any(&rule.verbs, verb)
                && rule
                    .non_resource_urls
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|url| url_matches(url, path))
        }
    }
}

fn resource_matches(rule_resources: &[String], resource: &str, subresource: &str) -> bool {
    rule_resources.iter().any(|r| {
        if r == "*" {
            return true;
        }
        if subresource.is_empty() {
            return r == resource;
        }
        // `pods/log`, or `*/log` for that subresource of every resource.
        r.split_once('/')
            .is_some_and(|(res, sub)| sub == subresource && (res == resource || res == "*"))
    })
}

fn url_matches(rule_url: &str, path: &str) -> bool {
    if rule_url.ends_with('*') {
        path.starts_with(rule_url.trim_end_matches('*'))
    } else {
        rule_url == path
    }
}

/// Does a subject of a binding in `binding_ns` (empty for a ClusterRoleBinding) name `user`?
/// A ServiceAccount subject names the user `system:serviceaccount:<namespace>:<name>`, its
/// namespace defaulting to the binding's; with neither it names nobody.
pub fn subject_matches(subject: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = sa_namespace(subject, binding_ns);
            !ns.is_empty()
                && user
                    .name
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.strip_prefix(ns))
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(subject.name.as_str())
        }
        _ => false,
    }
}

fn sa_namespace<'a>(subject: &'a Subject, binding_ns: &'a str) -> &'a str {
    subject
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(binding_ns)
}

/// A subject as Kubernetes' RBAC reasons name it (`User "alice"`, `ServiceAccount "sa/ns"`).
fn describe_subject(subject: &Subject, binding_ns: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let ns = sa_namespace(subject, binding_ns);
        format!("{} {:?}", subject.kind, format!("{}/{ns}", subject.name))
    } else {
        format!("{} {:?}", subject.kind, subject.name)
    }
}

/// Roles and bindings, indexed for evaluation.
#[derive(Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// (namespace, name) → rules.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<(String, RoleRef, Vec<Subject>)>,
    /// namespace → (binding name, role, subjects).
    bindings: HashMap<String, Vec<(String, RoleRef, Vec<Subject>)>>,
    /// (namespace, "" for cluster bindings) → who a subject names (`user:NAME`, `group:NAME`)
    /// → the bindings (indexes, in order) with such a subject; a user's walk visits only those.
    by_subject: HashMap<String, HashMap<String, Vec<usize>>>,
}

/// Who each binding of `list` (in `ns`) names → the bindings' indexes, in order.
fn index_subjects(
    ns: &str,
    list: &[(String, RoleRef, Vec<Subject>)],
) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (_, _, subjects)) in list.iter().enumerate() {
        for key in subjects.iter().filter_map(|s| subject_key(s, ns)) {
            let at = out.entry(key).or_default();
            if at.last() != Some(&i) {
                at.push(i);
            }
        }
    }
    out
}

/// The index key of a subject of a binding in `binding_ns`, if it can name anyone.
fn subject_key(subject: &Subject, binding_ns: &str) -> Option<String> {
    match subject.kind.as_str() {
        "User" => Some(format!("user:{}", subject.name)),
        "Group" => Some(format!("group:{}", subject.name)),
        "ServiceAccount" => {
            let ns = sa_namespace(subject, binding_ns);
            (!ns.is_empty()).then(|| format!("user:system:serviceaccount:{ns}:{}", subject.name))
        }
        _ => None,
    }
}

/// Why a request was allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// The user is in `system:masters`.
    Masters,
    /// A binding grants it: Kubernetes' wording for `status.reason`.
    By(String),
}

impl Policy {
    /// Index the given objects (those without a name are ignored).
    pub fn new(
        cluster_roles: impl IntoIterator<Item = ClusterRole>,
        roles: impl IntoIterator<Item = Role>,
        cluster_bindings: impl IntoIterator<Item = ClusterRoleBinding>,
        bindings: impl IntoIterator<Item = RoleBinding>,
    ) -> Policy {
        let mut p = Policy::default();
        for r in cluster_roles {
            if let Some(name) = r.metadata.name {
                p.cluster_roles.insert(name, r.rules.unwrap_or_default());
            }
        }
        for r in roles {
            if let (Some(ns), Some(name)) = (r.metadata.namespace, r.metadata.name) {
                p.roles.insert((ns, name), r.rules.unwrap_or_default());
            }
        }
        for b in cluster_bindings {
            if let Some(name) = b.metadata.name {
                p.cluster_bindings
                    .push((name, b.role_ref, b.subjects.unwrap_or_default()));
            }
        }
        for b in bindings {
            if let (Some(ns), Some(name)) = (b.metadata.namespace, b.metadata.name) {
                p.bindings.entry(ns).or_default().push((
                    name,
                    b.role_ref,
                    b.subjects.unwrap_or_default(),
                ));
            }
        }
        let cluster = index_subjects("", &p.cluster_bindings);
        p.by_subject.insert(String::new(), cluster);
        let local: Vec<(String, HashMap<String, Vec<usize>>)> = p
            .bindings
            .iter()
            .map(|(ns, list)| (ns.clone(), index_subjects(ns, list)))
            .collect();
        p.by_subject.extend(local);
        p
    }

    /// The bindings of `namespace` ("" for the cluster's) that may name `user`, in order.
    fn candidates(&self, namespace: &str, user: &UserInfo) -> Vec<usize> {
        let Some(index) = self.by_subject.get(namespace) else {
            return Vec::new();
        };
        let mut out: Vec<usize> = std::iter::once(format!("user:{}", user.name))
            .chain(user.groups.iter().map(|g| format!("group:{g}")))
            .filter_map(|k| index.get(&k))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Is `attrs` allowed for `user`, and by what? `None`: denied (no rule allows it).
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> Option<Allowed> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Some(Allowed::Masters);
        }
        let namespace = match attrs {
            Attributes::Resource { namespace, .. } => namespace.as_str(),
            Attributes::NonResource { .. } => "",
        };
        let mut allowed = None;
        self.visit(user, namespace, |grant, rule| {
            if !rule_allows(rule, attrs) {
                return true;
            }
            allowed = Some(Allowed::By(format!(
                "RBAC: allowed by {}",
                grant.describe()
            )));
            false
        });
        allowed
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included), as a
    /// SelfSubjectRulesReview lists them: masters first get the rules that allow everything.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        if user.groups.iter().any(|g| g == MASTERS) {
            out.push(PolicyRule {
                verbs: vec!["*".into()],
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                ..Default::default()
            });
            out.push(PolicyRule {
                verbs: vec!["*".into()],
                non_resource_urls: Some(vec!["*".into()]),
                ..Default::default()
            });
        }
        self.visit(user, namespace, |_, rule| {
            out.push(rule.clone());
            true
        });
        out
    }

    /// Walk the rules bound to `user`: those of ClusterRoleBindings, then those of the
    /// RoleBindings in `namespace` (none when it is empty), each with the grant it comes from,
    /// until `visit` returns false. The one walk behind both [`Policy::allows`] and
    /// [`Policy::rules_for`], as Kubernetes' `VisitRulesFor`.
    fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&Grant, &PolicyRule) -> bool,
    ) {
        let cluster = self
            .candidates("", user)
            .into_iter()
            .filter_map(|i| self.cluster_bindings.get(i))
            .map(|b| ("", b));
        let local_list = self.bindings.get(namespace);
        let local = if namespace.is_empty() {
            Vec::new()
        } else {
            self.candidates(namespace, user)
        }
        .into_iter()
        .filter_map(|i| local_list.and_then(|l| l.get(i)))
        .map(|b| (namespace, b));
        for (ns, (binding, role, subjects)) in cluster.chain(local) {
            let Some(subject) = subjects.iter().find(|s| subject_matches(s, user, ns)) else {
                continue;
            };
            let rules = match (role.kind.as_str(), ns) {
                ("ClusterRole", _) => self.cluster_roles.get(&role.name),
                // A ClusterRoleBinding may only name a ClusterRole.
                ("Role", "") => None,
                ("Role", ns) => self.roles.get(&(ns.to_string(), role.name.clone())),
                _ => None,
            };
            let grant = Grant {
                binding,
                namespace: ns,
                role,
                subject,
            };
            for rule in rules.into_iter().flatten() {
                if !visit(&grant, rule) {
                    return;
                }
            }
        }
    }
}

/// Where a rule comes from: a binding (a ClusterRoleBinding when `namespace` is empty), its role
/// and the subject of it that names the user.
struct Grant<'a> {
    binding: &'a str,
    namespace: &'a str,
    role: &'a RoleRef,
    subject: &'a Subject,
}

impl Grant<'_> {
    /// As Kubernetes' RBAC reasons name it.
    fn describe(&self) -> String {
        let who = describe_subject(self.subject, self.namespace);
        let (kind, role) = (&self.role.kind, &self.role.name);
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} of {kind} {role:?} to {who}",
                self.binding
            )
        } else {
            format!(
                "RoleBinding \"{}/{}\" of {kind} {role:?} to {who}",
                self.binding, self.namespace
            )
        }
    }
}

/// The message of a denial, in kube-apiserver's words (the `Status` wraps it as
/// `<resource> "<name>" is forbidden: <message>`).
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    match attrs {
        Attributes::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let resource = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            format!(
                "User {:?} cannot {verb} resource {resource:?} in API group {group:?} {scope}",
                user.name
            )
        }
    }
}

/// The parts of `servant` no rule of `owner` covers, one verb, group, resource and name (or URL)
/// each, as Kubernetes' escalation check (`validation.Covers`) breaks rules down. Empty: a user
/// holding `owner` may grant `servant`.
pub fn uncovered(owner: &[PolicyRule], servant: &PolicyRule) -> Vec<PolicyRule> {
    let one = |v: &str| Some(vec![v.to_string()]);
    let mut atoms = Vec::new();
    for verb in &servant.verbs {
        for group in servant.api_groups.as_deref().unwrap_or_default() {
            for resource in servant.resources.as_deref().unwrap_or_default() {
                let names = servant.resource_names.as_deref().unwrap_or_default();
                if names.is_empty() {
                    atoms.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: one(group),
                        resources: one(resource),
                        ..Default::default()
                    });
                }
                for name in names {
                    atoms.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..Default::default()
                    });
                }
            }
        }
        for url in servant.non_resource_urls.as_deref().unwrap_or_default() {
            atoms.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: one(url),
                ..Default::default()
            });
        }
    }
    atoms
        .into_iter()
        .filter(|atom| !owner.iter().any(|rule| covers(rule, atom)))
        .collect()
}

/// Does `owner` cover the one-verb, one-target rule `atom`? A `*` in the atom is covered only by
/// a `*` (holding every verb is not the same as holding "every verb there will be").
fn covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| {
        list.as_deref()
            .unwrap_or_default()
            .iter()
            .any(|x| x == "*" || x == v)
    };
    let first = |list: &Option<Vec<String>>| {
        list.as_deref()
            .and_then(|l| l.first())
            .cloned()
            .unwrap_or_default()
    };
    if !has(&Some(owner.verbs.clone()), &atom.verbs[0]) {
        return false;
    }
    if let Some(url) = atom.non_resource_urls.as_deref().and_then(|u| u.first()) {
        return owner
            .non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| {
                o == "*"
                    || o == url
                    || (o.ends_with('*') && url.starts_with(o.trim_end_matches('*')))
            });
    }
    let resource = first(&atom.resources);
    let resource_ok = owner
        .resources
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| {
            o == "*"
                || *o == resource
                || resource
                    .split_once('/')
                    .is_some_and(|(_, sub)| *o == format!("*/{sub}"))
        });
    let names_ok = match owner.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => atom
            .resource_names
            .as_deref()
            .and_then(|n| n.first())
            .is_some_and(|n| names.contains(n)),
    };
    has(&owner.api_groups, &first(&atom.api_groups)) && resource_ok && names_ok
}

/// A rule as Kubernetes prints it in escalation errors.
pub fn describe_rule(rule: &PolicyRule) -> String {
    let list = |v: &Option<Vec<String>>| {
        let items: Vec<String> = v
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        format!("[{}]", items.join(" "))
    };
    let mut parts = Vec::new();
    if rule.resources.as_ref().is_some_and(|r| !r.is_empty()) {
        parts.push(format!("APIGroups:{}", list(&rule.api_groups)));
        parts.push(format!("Resources:{}", list(&rule.resources)));
        if rule.resource_names.as_ref().is_some_and(|r| !r.is_empty()) {
            parts.push(format!("ResourceNames:{}", list(&rule.resource_names)));
        }
    }
    if rule
        .non_resource_urls
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        parts.push(format!("NonResourceURLs:{}", list(&rule.non_resource_urls)));
    }
    parts.push(format!("Verbs:{}", list(&Some(rule.verbs.clone()))));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: strings(groups),
            resources: strings(resources),
            resource_names: strings(names),
            non_resource_urls: None,
        }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "team-a".into(),
        }
    }

    #[test]
    fn resource_rules_table() {
        let cases: &[(PolicyRule, Attributes, bool)] = &[
            // verbs
            (
                rule(&["get"], &[""], &["pods"], &[]),
                res("get", "", "pods", "", "p"),
                true,
            ),
            (
                rule(&["get"], &[""], &["pods"], &[]),
                res("list", "", "pods", "", ""),
                false,
            ),
            (
                rule(&["*"], &[""], &["pods"], &[]),
                res("deletecollection", "", "pods", "", ""),
                true,
            ),
            // API groups
            (
                rule(&["get"], &["apps"], &["deployments"], &[]),
                res("get", "apps", "deployments", "", "d"),
                true,
            ),
            (
                rule(&["get"], &[""], &["deployments"], &[]),
                res("get", "apps", "deployments", "", "d"),
                false,
            ),
            (
                rule(&["get"], &["*"], &["deployments"], &[]),
                res("get", "apps", "deployments", "", "d"),
                true,
            ),
            (
                rule(&["get"], &[], &["pods"], &[]),
                res("get", "", "pods", "", "p"),
                false,
            ),
            // resources and subresources
            (
                rule(&["get"], &[""], &["*"], &[]),
                res("get", "", "secrets", "", "s"),
                true,
            ),
            (
                rule(&["get"], &[""], &["*"], &[]),
                res("get", "", "pods", "log", "p"),
                true,
            ),
            (
                rule(&["get"], &[""], &["pods"], &[]),
                res("get", "", "pods", "log", "p"),
                false,
            ),
            (
                rule(&["get"], &[""], &["pods/log"], &[]),
                res("get", "", "pods", "log", "p"),
                true,
            ),
            (
                rule(&["get"], &[""], &["pods/log"], &[]),
                res("get", "", "pods", "", "p"),
                false,
            ),
            (
                rule(&["get"], &[""], &["pods/log"], &[]),
                res("get", "", "pods", "exec", "p"),
                false,
            ),
            (
                rule(&["update"], &["apps"], &["*/scale"], &[]),
                res("update", "apps", "deployments", "scale", "d"),
                true,
            ),
            (
                rule(&["update"], &["apps"], &["*/scale"], &[]),
                res("update", "apps", "deployments", "", "d"),
                false,
            ),
            // `pods/*` is not a wildcard in Kubernetes.
            (
                rule(&["get"], &[""], &["pods/*"], &[]),
                res("get", "", "pods", "log", "p"),
                false,
            ),
            // resourceNames
            (
                rule(&["get"], &[""], &["configmaps"], &["a"]),
                res("get", "", "configmaps", "", "a"),
                true,
            ),
            (
                rule(&["get"], &[""], &["configmaps"], &["a"]),
                res("get", "", "configmaps", "", "b"),
                false,
            ),
            (
                rule(&["list"], &[""], &["configmaps"], &["a"]),
                res("list", "", "configmaps", "", ""),
                false,
            ),
            (
                rule(&["get"], &[""], &["configmaps"], &[]),
                res("get", "", "configmaps", "", "b"),
                true,
            ),
            // a resource rule never allows a non-resource URL
            (
                rule(&["get"], &["*"], &["*"], &[]),
                Attributes::NonResource {
                    verb: "get".into(),
                    path: "/healthz".into(),
                },
                false,
            ),
        ];
        for (i, (r, attrs, want)) in cases.iter().enumerate() {
            assert_eq!(rule_allows(r, attrs), *want, "case {i}: {r:?} {attrs:?}");
        }
    }

    #[test]
    fn non_resource_rules_table() {
        let cases: &[(&[&str], &str, &str, bool)] = &[
            (&["/healthz"], "get", "/healthz", true),
            (&["/healthz"], "get", "/healthz/ping", false),
            (&["/healthz/*"], "get", "/healthz/ping", true),
            (&["/healthz/*"], "get", "/healthz", false),
            (&["/api*"], "get", "/apis/apps", true),
            (&["/api**"], "get", "/apis/apps", true),
            (&["*"], "get", "/metrics", true),
            (&["/version"], "post", "/version", false),
        ];
        for (urls, verb, path, want) in cases {
            let r = PolicyRule {
                verbs: vec!["get".into()],
                non_resource_urls: strings(urls),
                ..Default::default()
            };
            let attrs = Attributes::NonResource {
                verb: verb.to_string(),
                path: path.to_string(),
            };
            assert_eq!(rule_allows(&r, &attrs), *want, "{urls:?} {verb} {path}");
        }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: None,
        }
    }

    #[test]
    fn subjects_table() {
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..Default::default()
        };
        let sa = UserInfo {
            name: "system:serviceaccount:team-a:builder".into(),
            groups: vec!["system:serviceaccounts".into()],
            ..Default::default()
        };
        // (subject, user, namespace of the binding, "" for a ClusterRoleBinding)
        let cases = [
            (subject("User", "alice", None), &alice, "", true),
            (subject("User", "bob", None), &alice, "", false),
            (subject("Group", "devs", None), &alice, "team-a", true),
            (subject("Group", "ops", None), &alice, "", false),
            (
                subject("ServiceAccount", "builder", Some("team-a")),
                &sa,
                "",
                true,
            ),
            (
                subject("ServiceAccount", "builder", Some("team-b")),
                &sa,
                "team-a",
                false,
            ),
            // Without a namespace, a ServiceAccount subject is in the binding's namespace.
            (
                subject("ServiceAccount", "builder", None),
                &sa,
                "team-a",
                true,
            ),
            (
                subject("ServiceAccount", "builder", None),
                &sa,
                "team-b",
                false,
            ),
            (subject("ServiceAccount", "builder", None), &sa, "", false),
            (
                subject("User", "system:serviceaccount:team-a:builder", None),
                &sa,
                "",
                true,
            ),
            (subject("Unknown", "alice", None), &alice, "", false),
        ];
        for (s, user, ns, want) in cases {
            assert_eq!(
                subject_matches(&s, user, ns),
                want,
                "{s:?} {user:?} in {ns:?}"
            );
        }
        // Named in reasons as Kubernetes does: a ServiceAccount as name/namespace.
        assert_eq!(
            describe_subject(&subject("ServiceAccount", "builder", None), "team-a"),
            "ServiceAccount \"builder/team-a\""
        );
        assert_eq!(
            describe_subject(&subject("Group", "devs", None), "team-a"),
            "Group \"devs\""
        );
    }

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    fn in_ns(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            name: String::new(),
            namespace: ns.into(),
        }
    }

    /// Two tenants: a RoleBinding of the `edit`-like ClusterRole in team-a grants alice there
    /// and nowhere else; a Role binds only in its namespace; a ClusterRoleBinding grants
    /// everywhere; masters are allowed everything.
    #[test]
    fn bindings_grant_in_their_scope() {
        let edit = ClusterRole {
            metadata: meta(None, "edit"),
            rules: Some(vec![rule(&["*"], &[""], &["pods", "configmaps"], &[])]),
            ..Default::default()
        };
        let viewer = ClusterRole {
            metadata: meta(None, "node-viewer"),
            rules: Some(vec![rule(&["get", "list"], &[""], &["nodes"], &[])]),
            ..Default::default()
        };
        let secrets = Role {
            metadata: meta(Some("team-b"), "secret-reader"),
            rules: Some(vec![rule(&["get"], &[""], &["secrets"], &[])]),
        };
        let policy = Policy::new(
            [edit, viewer],
            [secrets],
            [ClusterRoleBinding {
                metadata: meta(None, "devs-see-nodes"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "node-viewer".into(),
                },
                subjects: Some(vec![subject("Group", "devs", None)]),
            }],
            [
                RoleBinding {
                    metadata: meta(Some("team-a"), "alice-edit"),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "ClusterRole".into(),
                        name: "edit".into(),
                    },
                    subjects: Some(vec![subject("User", "alice", None)]),
                },
                RoleBinding {
                    metadata: meta(Some("team-b"), "bob-secrets"),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: "secret-reader".into(),
                    },
                    subjects: Some(vec![subject("User", "bob", None)]),
                },
            ],
        );
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..Default::default()
        };
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let admin = UserInfo {
            name: "system:admin".into(),
            groups: vec![MASTERS.into()],
            ..Default::default()
        };
        let nodes = Attributes::Resource {
            verb: "list".into(),
            group: String::new(),
            resource: "nodes".into(),
            subresource: String::new(),
            name: String::new(),
            namespace: String::new(),
        };
        let cases = [
            (&alice, in_ns("create", "pods", "team-a"), true),
            (&alice, in_ns("list", "configmaps", "team-a"), true),
            (&alice, in_ns("list", "pods", "team-b"), false),
            (&alice, in_ns("get", "secrets", "team-a"), false),
            (&alice, nodes.clone(), true),
            (&bob, in_ns("get", "secrets", "team-b"), true),
            (&bob, in_ns("get", "secrets", "team-a"), false),
            (&bob, nodes.clone(), false),
            (&admin, in_ns("delete", "secrets", "kube-system"), true),
        ];
        for (user, attrs, want) in cases {
            assert_eq!(
                policy.allows(user, &attrs).is_some(),
                want,
                "{} {attrs:?}",
                user.name
            );
        }
        // What each may do where, as `kubectl auth can-i --list` asks.
        let count = |user: &UserInfo, ns: &str| policy.rules_for(user, ns).len();
        assert_eq!(
            count(&alice, "team-a"),
            2,
            "edit in team-a and node-viewer everywhere"
        );
        assert_eq!(count(&alice, "team-b"), 1, "node-viewer only");
        assert_eq!(count(&bob, "team-b"), 1, "secret-reader in team-b");
        assert_eq!(count(&bob, "team-a"), 0);
        let masters = policy.rules_for(&admin, "team-a");
        assert_eq!(masters[0].resources, Some(vec!["*".to_string()]));
        assert_eq!(masters[1].non_resource_urls, Some(vec!["*".to_string()]));
        assert_eq!(
            policy.allows(&alice, &in_ns("create", "pods", "team-a")),
            Some(Allowed::By(
                "RBAC: allowed by RoleBinding \"alice-edit/team-a\" of ClusterRole \"edit\" to User \"alice\"".into()
            ))
        );
    }

    #[test]
    fn denials_read_as_kube_apiservers() {
        let user = UserInfo {
            name: "system:serviceaccount:team-a:alice".into(),
            groups: vec![],
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&user, &in_ns("list", "pods", "team-b")),
            "User \"system:serviceaccount:team-a:alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\""
        );
        let scale = Attributes::Resource {
            verb: "update".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: "scale".into(),
            name: "web".into(),
            namespace: String::new(),
        };
        assert_eq!(
            forbidden_message(&user, &scale),
            "User \"system:serviceaccount:team-a:alice\" cannot update resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(
                &user,
                &Attributes::NonResource {
                    verb: "get".into(),
                    path: "/metrics".into()
                }
            ),
            "User \"system:serviceaccount:team-a:alice\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn escalation_coverage_table() {
        let owner = vec![
            rule(&["get", "list"], &[""], &["pods", "pods/log"], &[]),
            rule(&["*"], &["apps"], &["deployments"], &[]),
            rule(&["get"], &[""], &["secrets"], &["db"]),
            rule(&["get"], &["*"], &["*/status"], &[]),
            PolicyRule {
                verbs: vec!["get".into()],
                non_resource_urls: strings(&["/healthz", "/logs/*"]),
                ..Default::default()
            },
        ];
        // (servant rule, how many of its parts are not covered)
        let cases: Vec<(PolicyRule, usize)> = vec![
            (rule(&["get"], &[""], &["pods"], &[]), 0),
            (rule(&["get", "list"], &[""], &["pods", "pods/log"], &[]), 0),
            (rule(&["get", "delete"], &[""], &["pods"], &[]), 1),
            (rule(&["*"], &[""], &["pods"], &[]), 1),
            (rule(&["get"], &["*"], &["pods"], &[]), 1),
            (
                rule(&["update", "patch"], &["apps"], &["deployments"], &[]),
                0,
            ),
            (
                rule(&["get"], &["apps"], &["deployments", "statefulsets"], &[]),
                1,
            ),
            (rule(&["get"], &[""], &["secrets"], &["db"]), 0),
            (rule(&["get"], &[""], &["secrets"], &["db", "api"]), 1),
            (rule(&["get"], &[""], &["secrets"], &[]), 1),
            (rule(&["get"], &["batch"], &["jobs/status"], &[]), 0),
            (rule(&["get"], &["batch"], &["jobs"], &[]), 1),
            (
                PolicyRule {
                    verbs: vec!["get".into()],
                    non_resource_urls: strings(&["/logs/node", "/metrics"]),
                    ..Default::default()
                },
                1,
            ),
        ];
        for (servant, want) in cases {
            let missing = uncovered(&owner, &servant);
            assert_eq!(missing.len(), want, "{servant:?}: {missing:?}");
        }
        assert_eq!(
            describe_rule(&rule(&["get"], &[""], &["secrets"], &[])),
            r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#
        );
    }
}
