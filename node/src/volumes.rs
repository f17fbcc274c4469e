//! A pod's volumes and a container's view of them: what the guest sees as preopened directories.
//!
//! The pure core turns a pod spec plus the ConfigMaps and Secrets it names (`Sources`) into
//! environment variables (`env`, with `envFrom`, `valueFrom` and `$(VAR)` expansion), volume
//! plans (`plan`: `emptyDir`, `configMap`, `secret`, `downwardAPI`, `projected`, `hostPath`)
//! and per-container mounts (`mounts`: `mountPath`, `subPath`, `readOnly`, `workingDir`).
//! `materialize` writes the plans under the pod's directory; `Sources::fetch` reads the API
//! (and `crate::tokens`, which uses this module and not the other way round, fills
//! `Sources::tokens` for `serviceAccountToken` projections).
//!
//! Invariants: a guest sees only the directories its mounts name (wasmtime-wasi's preopens are
//! capability-based: no `..` or symlink leads out of them); volume names are DNS-1123 labels
//! before they name a directory; every directory a mount names (volume, `subPath`, `workingDir`,
//! a `hostPath` below its allowed prefix, a claim) is opened by `safefs` without following any
//! link and handed to the runtime as that open directory, so a link a guest planted never
//! leads a later container out; `hostPath` is refused unless the node allows that path; item
//! paths and `subPath`s are relative and never contain `..`; secret values never appear in
//! errors or logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod,
    ResourceFieldSelector, Secret, Volume,
};
use kube::api::Api;

use crate::safefs::{DirHandle, SafeFsError};

/// Errors of resolving a container's configuration or laying out its volumes. The message is
/// what the container's waiting state and the Warning event say.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The pod's configuration cannot be satisfied (missing key, bad path, refused hostPath...).
    #[error("{0}")]
    Config(String),
    /// Writing the volume's files failed.
    #[error("{0}")]
    Io(String),
    /// Reading a ConfigMap or Secret from the API failed (other than not found).
    #[error("{0}")]
    Api(String),
    /// A path inside a volume was refused (a symbolic link, not a directory) or not opened.
    #[error("{what}: {source}")]
    Path {
        /// Which mount or volume.
        what: String,
        /// Why.
        source: SafeFsError,
    },
}

fn path_err(what: impl Into<String>) -> impl FnOnce(SafeFsError) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Path { what, source }
}

fn config(msg: impl Into<String>) -> VolumeError {
    VolumeError::Config(msg.into())
}

/// Kubernetes' lifetime of a projected token when the projection names none.
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// What one `serviceAccountToken` projection asks for: (audience, "" for the API server's;
/// lifetime in seconds).
pub type TokenWant = (String, i64);

/// The token a projection asks for. Pure.
pub fn token_want(p: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection) -> TokenWant {
    (
        p.audience.clone().unwrap_or_default(),
        p.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
    )
}

/// A ServiceAccount token as issued.
#[derive(Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// How long it lives from when it was issued.
    pub lifetime: std::time::Duration,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("IssuedToken")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The ConfigMaps and Secrets a pod refers to, as the node read them (`None`: not found).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// ConfigMap name → its keys (`data` and `binaryData`).
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Secret name → its keys.
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Projected ServiceAccount tokens (`crate::tokens::request_all`).
    pub tokens: HashMap<TokenWant, IssuedToken>,
}

impl Sources {
    /// Read what the pod refers to from the API.
    pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Self, VolumeError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let (cm_names, secret_names) = skiff_common::podrefs::referenced(pod);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        Ok(Sources {
            config_maps: read_all(&cms, cm_names, "configmap", |cm| (cm.data, cm.binary_data))
                .await?,
            // `stringData` is write-only in Kubernetes; `data` wins where both hold a key.
            secrets: read_all(&secrets, secret_names, "secret", |s| {
                (s.string_data, s.data)
            })
            .await?,
            tokens: HashMap::new(),
        })
    }

    fn source(&self, secret: bool, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        let map = if secret {
            &self.secrets
        } else {
            &self.config_maps
        };
        map.get(name).and_then(Option::as_ref)
    }
}

type Keys = BTreeMap<String, Vec<u8>>;

/// Get each named object (`None` when it does not exist) and flatten its text and binary keys.
async fn read_all<K>(
    api: &Api<K>,
    names: HashSet<String>,
    what: &str,
    split: impl Fn(
        K,
    ) -> (
        Option<BTreeMap<String, String>>,
        Option<BTreeMap<String, k8s_openapi::ByteString>>,
    ),
) -> Result<HashMap<String, Option<Keys>>, VolumeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = HashMap::new();
    for name in names {
        let got = api
            .get_opt(&name)
            .await
            .map_err(|e| VolumeError::Api(format!("reading {what} {name:?}: {e}")))?;
        let keys = got.map(|obj| {
            let (text, binary) = split(obj);
            let mut m: Keys = text
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            m.extend(
                binary
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            m
        });
        out.insert(name, keys);
    }
    Ok(out)
}

fn kind_word(secret: bool) -> &'static str {
    if secret {
        "secret"
    } else {
        "configmap"
    }
}

fn kind_title(secret: bool) -> &'static str {
    if secret {
        "Secret"
    } else {
        "ConfigMap"
    }
}

/// What a node knows of itself and the pod that `fieldRef`/`resourceFieldRef` can name.
pub struct PodFacts<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// This node's name.
    pub node: &'a str,
    /// This node's address (also the pod's address: pods are served through the node).
    pub host_ip: &'a str,
    /// The node's allocatable cpu (millicores) and memory (bytes): what a missing limit means.
    pub allocatable: (i64, i64),
}

/// Expand `$(VAR)` references as Kubernetes does: defined variables are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars(name) {
                        out.push_str(&v);
                        i += end + 3;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The value of a `fieldRef` (env or downward API files).
pub fn field_value(f: &ObjectFieldSelector, facts: &PodFacts<'_>) -> Result<String, VolumeError> {
    let meta = &facts.pod.metadata;
    let path = f.field_path.as_str();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
        )
    };
    if let Some(v) = keyed("metadata.labels", &meta.labels) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations", &meta.annotations) {
        return Ok(v);
    }
    let spec = facts.pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(&meta.labels),
        "metadata.annotations" => map_lines(&meta.annotations),
        "spec.nodeName" => facts.node.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => {
            facts.host_ip.to_string()
        }
        other => {
            return Err(config(format!(
                "fieldRef {other:?} is not a supported field"
            )))
        }
    })
}

/// Labels or annotations as the downward API writes them: `key="value"` lines, sorted.
fn map_lines(m: &Option<BTreeMap<String, String>>) -> String {
    m.iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// The value of a `resourceFieldRef` for the container named in it (or `container`).
pub fn resource_value(
    r: &ResourceFieldSelector,
    container: Option<&Container>,
    facts: &PodFacts<'_>,
) -> Result<String, VolumeError> {
    let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => facts
            .pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == name)
            })
            .ok_or_else(|| config(format!("resourceFieldRef: no container named {name:?}")))?,
        None => {
            container.ok_or_else(|| config("resourceFieldRef in a volume needs containerName"))?
        }
    };
    let res = c.resources.as_ref();
    let (which, resource) = r.resource.split_once('.').ok_or_else(|| {
        config(format!(
            "resourceFieldRef {:?} is not supported",
            r.resource
        ))
    })?;
    let get = |which: &str, what: &str| {
        let m = match which {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        m.and_then(|m| m.get(what)).map(|q| q.0.clone())
    };
    let bad = |e: skiff_common::quantity::QuantityError| config(e.to_string());
    let divisor = r.divisor.as_ref().map(|q| q.0.as_str());
    match resource {
        "cpu" => {
            let millis = match get(which, "cpu") {
                Some(q) => skiff_common::quantity::cpu_millis(&q).map_err(bad)?,
                None if which == "limits" => facts.allocatable.0,
                None => 0,
            };
            let div = skiff_common::quantity::cpu_millis(divisor.unwrap_or("1")).map_err(bad)?;
            Ok(ceil_div(millis, div.max(1)).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match get(which, resource) {
                Some(q) => skiff_common::quantity::bytes(&q).map_err(bad)?,
                None if which == "limits" && resource == "memory" => facts.allocatable.1,
                None => 0,
            };
            let div = skiff_common::quantity::bytes(divisor.unwrap_or("1")).map_err(bad)?;
            Ok(ceil_div(bytes, div.max(1)).to_string())
        }
        other => Err(config(format!(
            "resourceFieldRef: resource {other:?} is not supported"
        ))),
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.as_bytes()[0].is_ascii_digit()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A container's environment as Kubernetes builds it: `envFrom` sources in order, then `env`
/// (later entries win), `valueFrom` resolved, `$(VAR)` expanded against what came before.
pub fn env(
    c: &Container,
    sources: &Sources,
    facts: &PodFacts<'_>,
) -> Result<Vec<(String, String)>, VolumeError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => vars.push((k, v)),
    };
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (secret, name, optional) = match (&f.config_map_ref, &f.secret_ref) {
            (Some(r), _) => (false, r.name.as_str(), r.optional.unwrap_or(false)),
            (None, Some(r)) => (true, r.name.as_str(), r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match sources.source(secret, name) {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    // Kubernetes skips keys that are not valid variable names (with an event).
                    if is_env_name(&key) {
                        set(&mut vars, key, String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            None if optional => {}
            None => return Err(config(format!("{} {name:?} not found", kind_word(secret)))),
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => {
                let known = vars.clone();
                expand(v, &|n| {
                    known.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
                })
            }
            (None, None) => String::new(),
            (None, Some(src)) => {
                if let Some(f) = &src.field_ref {
                    field_value(f, facts).map_err(|err| config(format!("env {}: {err}", e.name)))?
                } else if let Some(r) = &src.resource_field_ref {
                    resource_value(r, Some(c), facts)
                        .map_err(|err| config(format!("env {}: {err}", e.name)))?
                } else {
                    let (secret, name, key, optional) =
                        match (&src.config_map_key_ref, &src.secret_key_ref) {
                            (Some(r), _) => (false, &r.name, &r.key, r.optional.unwrap_or(false)),
                            (None, Some(r)) => (true, &r.name, &r.key, r.optional.unwrap_or(false)),
                            (None, None) => {
                                return Err(config(format!(
                                    "env {}: valueFrom names no source",
                                    e.name
                                )))
                            }
                        };
                    match sources.source(secret, name).map(|d| d.get(key)) {
                        Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                        _ if optional => continue,
                        None => {
                            return Err(config(format!("{} {name:?} not found", kind_word(secret))))
                        }
                        Some(None) => {
                            return Err(config(format!(
                                "couldn't find key {key} in {} {ns}/{name}",
                                kind_title(secret)
                            )))
                        }
                    }
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// A container's `resources.limits` as the runtime enforces them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// `limits.memory` in bytes.
    pub memory: Option<usize>,
    /// `limits.cpu` in millicores (at least 1).
    pub cpu_millis: Option<u64>,
}

/// Read a container's limits. A limit that does not parse, or is negative, is an error (the
/// container is not started), never "no limit". Pure.
pub fn limits(c: &Container) -> Result<Limits, VolumeError> {
    let Some(l) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) else {
        return Ok(Limits::default());
    };
    let read = |what: &str, f: fn(&str) -> Result<i64, skiff_common::quantity::QuantityError>| {
        l.get(what)
            .map(|q| match f(&q.0) {
                Ok(v) if v >= 0 => Ok(v),
                Ok(_) => Err(config(format!(
                    "container {:?}: limits.{what} {:?} must be greater than or equal to 0",
                    c.name, q.0
                ))),
                Err(e) => Err(config(format!(
                    "container {:?}: limits.{what} {:?}: {e}",
                    c.name, q.0
                ))),
            })
            .transpose()
    };
    let memory = read("memory", skiff_common::quantity::bytes)?;
    let cpu = read("cpu", skiff_common::quantity::cpu_millis)?;
    Ok(Limits {
        memory: memory
            .map(|b| {
                usize::try_from(b).map_err(|_| {
                    config(format!(
                        "container {:?}: limits.memory is too large",
                        c.name
                    ))
                })
            })
            .transpose()?,
        cpu_millis: cpu.map(|m| m.max(1) as u64),
    })
}

/// What a volume is on the node.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// A directory of the pod, empty at start; `sizeLimit` in bytes.
    EmptyDir { size_limit: Option<u64> },
    /// Files written once at pod start and mounted read-only.
    Files(Vec<(String, Vec<u8>)>),
    /// A directory of the host the node allows: `rest` (no link followed) below the allowed
    /// prefix `base`.
    HostPath {
        /// The `--allow-host-path` prefix it lies under.
        base: PathBuf,
        /// The path below it.
        rest: PathBuf,
        /// `DirectoryOrCreate`.
        create: bool,
    },
    /// A persistentVolumeClaim: a directory of the node that outlives the pod
    /// (`<claims>/<namespace>/<claim>`), as a StatefulSet's `volumeClaimTemplates` give each pod.
    Claim { namespace: String, claim: String },
}

/// A checked relative path: no absolute paths, no `..`, not empty.
pub fn relative(p: &str, what: &str) -> Result<PathBuf, VolumeError> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(path.to_path_buf())
    } else {
        Err(config(format!(
            "{what} {p:?} must be a relative path without '..'"
        )))
    }
}

fn key_files(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    secret: bool,
    ns: &str,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>, VolumeError> {
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(config(format!("{} {name:?} not found", kind_word(secret))))
        };
    };
    match items {
        None => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .filter_map(|it| match data.get(&it.key) {
                Some(v) => Some(Ok((it.path.clone(), v.clone()))),
                None if optional => None,
                None => Some(Err(config(format!(
                    "couldn't find key {} in {} {ns}/{name}",
                    it.key,
                    kind_title(secret)
                )))),
            })
            .collect(),
    }
}

fn downward_files(
    items: &[DownwardAPIVolumeFile],
    facts: &PodFacts<'_>,
) -> Result<Vec<(String, Vec<u8>)>, VolumeError> {
    items
        .iter()
        .map(|it| {
            let v = match (&it.field_ref, &it.resource_field_ref) {
                (Some(f), _) => field_value(f, facts)?,
                (None, Some(r)) => resource_value(r, None, facts)?,
                (None, None) => {
                    return Err(config(format!(
                        "downwardAPI item {:?} names no field",
                        it.path
                    )))
                }
            };
            Ok((it.path.clone(), v.into_bytes()))
        })
        .collect()
}

/// Is `path` (absolute) inside one of the allowed prefixes?
pub fn host_path_allowed(path: &Path, allowed: &[PathBuf]) -> bool {
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && allowed.iter().any(|a| path.starts_with(a))
}

/// Plan every volume of the pod. Pure.
pub fn plan(
    pod: &Pod,
    sources: &Sources,
    facts: &PodFacts<'_>,
    allowed_host_paths: &[PathBuf],
) -> Result<Vec<(String, Plan)>, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    let mut out: Vec<(String, Plan)> = Vec::new();
    for v in volumes {
        let name = v.name.as_str();
        // The name becomes a directory under the pod's: only a DNS-1123 label may.
        if !skiff_common::names::is_dns1123_label(name) {
            return Err(config(format!(
                "volume name {name:?} is not valid: {}",
                skiff_common::names::LABEL_MSG
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(config(format!("volume name {name:?} is used twice")));
        }
        let plan = if let Some(e) = &v.empty_dir {
            let size_limit = match &e.size_limit {
                Some(q) => Some(
                    skiff_common::quantity::bytes(&q.0)
                        .map_err(|err| config(format!("volume {name:?}: sizeLimit: {err}")))?
                        .max(0) as u64,
                ),
                None => None,
            };
            Plan::EmptyDir { size_limit }
        } else if let Some(c) = &v.config_map {
            Plan::Files(key_files(
                sources.source(false, &c.name),
                c.items.as_ref(),
                c.optional.unwrap_or(false),
                false,
                ns,
                &c.name,
            )?)
        } else if let Some(s) = &v.secret {
            let sname = s.secret_name.clone().unwrap_or_default();
            Plan::Files(key_files(
                sources.source(true, &sname),
                s.items.as_ref(),
                s.optional.unwrap_or(false),
                true,
                ns,
                &sname,
            )?)
        } else if let Some(d) = &v.downward_api {
            Plan::Files(downward_files(d.items.as_deref().unwrap_or(&[]), facts)?)
        } else if let Some(p) = &v.projected {
            let mut files = Vec::new();
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    files.extend(key_files(
                        sources.source(false, &c.name),
                        c.items.as_ref(),
                        c.optional.unwrap_or(false),
                        false,
                        ns,
                        &c.name,
                    )?);
                } else if let Some(s) = &src.secret {
                    files.extend(key_files(
                        sources.source(true, &s.name),
                        s.items.as_ref(),
                        s.optional.unwrap_or(false),
                        true,
                        ns,
                        &s.name,
                    )?);
                } else if let Some(d) = &src.downward_api {
                    files.extend(downward_files(d.items.as_deref().unwrap_or(&[]), facts)?);
                } else if let Some(t) = &src.service_account_token {
                    let token = sources.tokens.get(&token_want(t)).ok_or_else(|| {
                        config(format!(
                            "volume {name:?}: no ServiceAccount token was issued for it"
                        ))
                    })?;
                    files.push((t.path.clone(), token.token.clone().into_bytes()));
                } else {
                    return Err(config(format!(
                        "volume {name:?}: only configMap, secret, downwardAPI and serviceAccountToken projections are supported on skiff nodes"
                    )));
                }
            }
            Plan::Files(files)
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if !host_path_allowed(&path, allowed_host_paths) {
                return Err(config(format!(
                    "volume {name:?}: hostPath {:?} is not allowed on this node (start the node with --allow-host-path to allow a directory)",
                    h.path
                )));
            }
            let create = match h.type_.as_deref().unwrap_or("") {
                "" | "Directory" => false,
                "DirectoryOrCreate" => true,
                other => {
                    return Err(config(format!(
                        "volume {name:?}: hostPath type {other:?} is not supported: only directories can be mounted into a wasm sandbox"
                    )))
                }
            };
            let base = allowed_host_paths
                .iter()
                .filter(|a| path.starts_with(a))
                .max_by_key(|a| a.as_os_str().len())
                .cloned()
                .unwrap_or_default();
            let rest = path
                .strip_prefix(&base)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            Plan::HostPath { base, rest, create }
        } else if let Some(c) = &v.persistent_volume_claim {
            relative(&c.claim_name, &format!("volume {name:?}: claimName"))?;
            if !skiff_common::names::is_dns1123_subdomain(&c.claim_name)
                || !skiff_common::names::is_dns1123_label(ns)
            {
                return Err(config(format!(
                    "volume {name:?}: claimName {:?} is not a name",
                    c.claim_name
                )));
            }
            Plan::Claim {
                namespace: ns.to_string(),
                claim: c.claim_name.clone(),
            }
        } else {
            return Err(config(format!(
                "volume {name:?}: this volume type is not supported on skiff nodes (emptyDir, configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim are)"
            )));
        };
        if let Plan::Files(files) = &plan {
            for (p, _) in files {
                relative(p, &format!("volume {name:?}: item path"))?;
            }
        }
        out.push((name.to_string(), plan));
    }
    Ok(out)
}

/// A volume laid out on the node.
#[derive(Clone, Debug)]
pub struct Laid {
    /// Volume name.
    pub name: String,
    /// Host directory, open.
    pub dir: DirHandle,
    /// Mounted read-only whatever the mount says (configMap, secret, downward API, projected).
    pub read_only: bool,
    /// `emptyDir.sizeLimit`.
    pub size_limit: Option<u64>,
}

fn io(what: &Path, e: std::io::Error) -> VolumeError {
    VolumeError::Io(format!("{}: {e}", what.display()))
}

/// Write the planned volumes under `pod_dir/volumes/` and open each (no link followed).
/// Files volumes are rewritten whole (into a fresh directory renamed into place), emptyDirs are
/// kept (they survive container restarts).
pub fn materialize(
    pod_dir: &Path,
    claims: &Path,
    plans: &[(String, Plan)],
) -> Result<Vec<Laid>, VolumeError> {
    let root = pod_dir.join("volumes");
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let volumes = DirHandle::open(&root).map_err(path_err("volumes"))?;
    let mut out = Vec::new();
    for (name, plan) in plans {
        // Checked by `plan` already; a name is never joined onto a host path unchecked.
        if !skiff_common::names::is_dns1123_label(name) {
            return Err(config(format!("volume name {name:?} is not valid")));
        }
        let in_volume = path_err(format!("volume {name:?}"));
        let laid = match plan {
            Plan::EmptyDir { size_limit } => Laid {
                name: name.clone(),
                dir: volumes.open_dir(Path::new(name), true).map_err(in_volume)?,
                read_only: false,
                size_limit: *size_limit,
            },
            Plan::Files(files) => {
                let dir = root.join(name);
                let tmp = root.join(format!(".{name}.tmp"));
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
                for (rel, bytes) in files {
                    let path = tmp.join(relative(rel, &format!("volume {name:?}: item path"))?);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                    }
                    std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
                }
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
                Laid {
                    name: name.clone(),
                    dir: volumes
                        .open_dir(Path::new(name), false)
                        .map_err(in_volume)?,
                    read_only: true,
                    size_limit: None,
                }
            }
            Plan::Claim { namespace, claim } => {
                std::fs::create_dir_all(claims).map_err(|e| io(claims, e))?;
                let dir = DirHandle::open(claims)
                    .and_then(|c| c.open_dir(&Path::new(namespace).join(claim), true))
                    .map_err(in_volume)?;
                Laid {
                    name: name.clone(),
                    dir,
                    read_only: false,
                    size_limit: None,
                }
            }
            Plan::HostPath { base, rest, create } => {
                // The allowed prefix is the admin's; below it, links are not followed (another
                // pod that mounts the same host directory may have planted one).
                let dir = DirHandle::open(base)
                    .and_then(|b| b.open_dir(rest, *create))
                    .map_err(|e| match e {
                        SafeFsError::NotDir(_) => config(format!(
                            "volume {name:?}: hostPath {} is not a directory",
                            base.join(rest).display()
                        )),
                        e => in_volume(e),
                    })?;
                Laid {
                    name: name.clone(),
                    dir,
                    read_only: false,
                    size_limit: None,
                }
            }
        };
        out.push(laid);
    }
    Ok(out)
}

/// A directory the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Host directory, open.
    pub host: DirHandle,
    /// Path in the guest.
    pub guest: String,
    /// No writes.
    pub read_only: bool,
}

/// A container's mounts as preopens, plus the host directory of its `workingDir` (if any).
/// `subPath`s are created inside the volume when missing, as Kubernetes does.
pub fn mounts(
    c: &Container,
    laid: &[Laid],
    env: &[(String, String)],
) -> Result<(Vec<Preopen>, Option<Preopen>), VolumeError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let vol = laid.iter().find(|l| l.name == m.name).ok_or_else(|| {
            config(format!(
                "container {:?}: volumeMount {:?} names no volume of the pod",
                c.name, m.name
            ))
        })?;
        if !m.mount_path.starts_with('/') {
            return Err(config(format!(
                "container {:?}: mountPath {:?} must be absolute",
                c.name, m.mount_path
            )));
        }
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, &|n| {
                env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })),
            _ => None,
        };
        let host = match sub {
            Some(s) => {
                let rel = relative(&s, &format!("container {:?}: subPath", c.name))?;
                // Component by component, no link followed (CVE-2017-1002101): a link a guest
                // made in the volume is refused, never mounted.
                match vol.dir.open_dir(&rel, !vol.read_only) {
                    Ok(h) => h,
                    Err(SafeFsError::NotDir(_)) => {
                        return Err(config(format!(
                        "container {:?}: subPath {s:?} of volume {:?} is not a directory (only directories can be mounted into a wasm sandbox)",
                        c.name, m.name
                    )))
                    }
                    Err(e) => {
                        return Err(path_err(format!(
                            "container {:?}: subPath {s:?} of volume {:?}",
                            c.name, m.name
                        ))(e))
                    }
                }
            }
            None => vol.dir.clone(),
        };
        out.push(Preopen {
            host,
            guest: match m.mount_path.trim_end_matches('/') {
                "" => "/".to_string(),
                p => p.to_string(),
            },
            read_only: vol.read_only || m.read_only.unwrap_or(false),
        });
    }
    let cwd = match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        None => None,
        Some(w) => {
            let best = out
                .iter()
                .filter(|p| {
                    Path::new(w).starts_with(&p.guest)
                })
                .max_by_key(|p| p.guest.len())
                .ok_or_else(|| {
                    config(format!(
                        "container {:?}: workingDir {w:?} is not inside a volume mount (a wasm container has no root filesystem)",
                        c.name
                    ))
                })?;
            let rest = Path::new(w)
                .strip_prefix(&best.guest)
                .map_err(|_| config(format!("workingDir {w:?}")))?;
            let rest = rest.to_string_lossy();
            let host = if rest.is_empty() {
                best.host.clone()
            } else {
                // Made when missing (as container runtimes do), never through a link.
                best.host
                    .open_dir(&relative(&rest, "workingDir")?, !best.read_only)
                    .map_err(path_err(format!(
                        "container {:?}: workingDir {w:?}",
                        c.name
                    )))?
            };
            Some(Preopen {
                host,
                guest: w.to_string(),
                read_only: best.read_only,
            })
        }
    };
    Ok((out, cwd))
}

/// Bytes used under `dir` (files only; symlinks are not followed).
pub fn usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn facts(p: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod: p,
            node: "n1",
            host_ip: "127.0.0.1",
            allocatable: (2000, 4 << 30),
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "cfg".into(),
            Some(
                [
                    ("greeting".to_string(), b"hi".to_vec()),
                    ("1bad".to_string(), b"x".to_vec()),
                ]
                .into(),
            ),
        );
        s.config_maps.insert("gone".into(), None);
        s.secrets.insert(
            "pw".into(),
            Some([("password".to_string(), b"s3cret".to_vec())].into()),
        );
        s.tokens.insert(
            (String::new(), DEFAULT_TOKEN_SECONDS),
            IssuedToken {
                token: "jwt-for-tests".into(),
                lifetime: std::time::Duration::from_secs(3600),
            },
        );
        s
    }

    #[test]
    fn expand_table() {
        let vars = |n: &str| (n == "A").then(|| "1".to_string());
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y", "x1y"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$(A", "$(A"),
            ("a$", "a$"),
            ("€$(A)", "€1"),
        ] {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    #[test]
    fn env_table() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1",
            "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}}),
        );
        let c = |env: serde_json::Value, env_from: serde_json::Value| -> Container {
            serde_json::from_value(json!({"name": "c", "env": env, "envFrom": env_from,
                "resources": {"limits": {"memory": "64Mi"}}}))
            .unwrap()
        };
        let ok = |c: Container| env(&c, &sources(), &facts(&p)).map_err(|e| e.to_string());
        type Want = Result<Vec<(&'static str, &'static str)>, &'static str>;
        let cases: Vec<(Container, Want)> = vec![
            (
                c(
                    json!([{"name": "A", "value": "x"}, {"name": "B", "value": "$(A)-y"}]),
                    json!([]),
                ),
                Ok(vec![("A", "x"), ("B", "x-y")]),
            ),
            (
                c(
                    json!([{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                      {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                      {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]),
                    json!([]),
                ),
                Ok(vec![("N", "p"), ("L", "web"), ("NODE", "n1")]),
            ),
            (
                c(
                    json!([{"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                      {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}]),
                    json!([]),
                ),
                Ok(vec![("M", "64"), ("C", "2000")]),
            ),
            (
                c(
                    json!([{"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                      {"name": "P", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "password"}}}]),
                    json!([]),
                ),
                Ok(vec![("G", "hi"), ("P", "s3cret")]),
            ),
            (
                c(
                    json!([{"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]),
                    json!([]),
                ),
                Err("couldn't find key nope in ConfigMap ns/cfg"),
            ),
            (
                c(
                    json!([{"name": "G", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]),
                    json!([]),
                ),
                Err("configmap \"gone\" not found"),
            ),
            (
                c(
                    json!([{"name": "G", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}]),
                    json!([]),
                ),
                Ok(vec![]),
            ),
            (
                c(
                    json!([{"name": "greeting", "value": "override"}]),
                    json!([{"configMapRef": {"name": "cfg"}}]),
                ),
                Ok(vec![("greeting", "override")]),
            ),
            (
                c(
                    json!([]),
                    json!([{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "pw"}}]),
                ),
                Ok(vec![
                    ("CFG_1bad", "x"),
                    ("CFG_greeting", "hi"),
                    ("password", "s3cret"),
                ]),
            ),
            (
                c(json!([]), json!([{"secretRef": {"name": "missing"}}])),
                Err("secret \"missing\" not found"),
            ),
            (
                c(
                    json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]),
                    json!([]),
                ),
                Err("env X: fieldRef \"status.phase\" is not a supported field"),
            ),
        ];
        for (container, want) in cases {
            let got = ok(container);
            let want = want.map(|v| {
                v.into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want.map_err(str::to_string));
        }
    }

    #[test]
    fn limits_table() {
        let c = |l: serde_json::Value| -> Container {
            serde_json::from_value(json!({"name": "c", "resources": {"limits": l}})).unwrap()
        };
        let ok = |m: Option<usize>, cpu: Option<u64>| {
            Ok(Limits {
                memory: m,
                cpu_millis: cpu,
            })
        };
        let cases: Vec<(serde_json::Value, Result<Limits, &str>)> = vec![
            (json!({}), ok(None, None)),
            (json!({"memory": "64Mi", "cpu": "250m"}), ok(Some(64 << 20), Some(250))),
            (json!({"cpu": "0"}), ok(None, Some(1))),
            // Never "no limit" for what does not parse: the container is not started.
            (json!({"memory": "lots"}), Err("container \"c\": limits.memory \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
            (json!({"memory": "1e400"}), Err("container \"c\": limits.memory \"1e400\": quantity \"1e400\" is too large")),
            (json!({"cpu": "-1"}), Err("container \"c\": limits.cpu \"-1\" must be greater than or equal to 0")),
        ];
        for (l, want) in cases {
            let got = limits(&c(l.clone())).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{l}");
        }
    }

    #[test]
    fn plan_table() {
        let with = |vols: serde_json::Value| {
            pod(
                json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "1"}},
                "spec": {"containers": [{"name": "c"}], "volumes": vols}}),
            )
        };
        let allowed = [PathBuf::from("/srv/shared")];
        let run = |p: Pod| {
            plan(&p, &sources(), &facts(&p), &allowed)
                .map(|v| v.into_iter().map(|(_, p)| p).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        let files = |v: Vec<(&str, &str)>| {
            Plan::Files(
                v.into_iter()
                    .map(|(a, b)| (a.to_string(), b.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let cases: Vec<(serde_json::Value, Result<Vec<Plan>, &str>)> = vec![
            (json!([{"name": "s", "emptyDir": {"sizeLimit": "1Mi"}}]),
                Ok(vec![Plan::EmptyDir { size_limit: Some(1 << 20) }])),
            (json!([{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "etc/g.txt"}]}}]),
                Ok(vec![files(vec![("etc/g.txt", "hi")])])),
            (json!([{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "../g"}]}}]),
                Err("volume \"c\": item path \"../g\" must be a relative path without '..'")),
            (json!([{"name": "s", "secret": {"secretName": "pw"}}]),
                Ok(vec![files(vec![("password", "s3cret")])])),
            (json!([{"name": "s", "secret": {"secretName": "nope"}}]),
                Err("secret \"nope\" not found")),
            (json!([{"name": "s", "secret": {"secretName": "nope", "optional": true}}]),
                Ok(vec![files(vec![])])),
            (json!([{"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]),
                Ok(vec![files(vec![("labels", "a=\"1\"\nb=\"2\"\n"), ("name", "p")])])),
            (json!([{"name": "pr", "projected": {"sources": [{"configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "g"}]}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]),
                Ok(vec![files(vec![("g", "hi"), ("ns", "ns")])])),
            (json!([{"name": "pr", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
                Ok(vec![files(vec![("token", "jwt-for-tests")])])),
            (json!([{"name": "pr", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}]),
                Err("volume \"pr\": no ServiceAccount token was issued for it")),
            (json!([{"name": "pr", "projected": {"sources": [{"clusterTrustBundle": {"path": "b"}}]}}]),
                Err("volume \"pr\": only configMap, secret, downwardAPI and serviceAccountToken projections are supported on skiff nodes")),
            (json!([{"name": "h", "hostPath": {"path": "/srv/shared/x", "type": "DirectoryOrCreate"}}]),
                Ok(vec![Plan::HostPath { base: "/srv/shared".into(), rest: "x".into(), create: true }])),
            (json!([{"name": "/etc", "emptyDir": {}}]),
                Err("volume name \"/etc\" is not valid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")),
            (json!([{"name": "..", "configMap": {"name": "cfg"}}]),
                Err("volume name \"..\" is not valid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")),
            (json!([{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]),
                Err("volume name \"a\" is used twice")),
            (json!([{"name": "v", "persistentVolumeClaim": {"claimName": "."}}]),
                Err("volume \"v\": claimName \".\" is not a name")),
            (json!([{"name": "h", "hostPath": {"path": "/etc"}}]),
                Err("volume \"h\": hostPath \"/etc\" is not allowed on this node (start the node with --allow-host-path to allow a directory)")),
            (json!([{"name": "h", "hostPath": {"path": "/srv/shared/../../etc"}}]),
                Err("volume \"h\": hostPath \"/srv/shared/../../etc\" is not allowed on this node (start the node with --allow-host-path to allow a directory)")),
            (json!([{"name": "h", "hostPath": {"path": "/srv/shared/f", "type": "File"}}]),
                Err("volume \"h\": hostPath type \"File\" is not supported: only directories can be mounted into a wasm sandbox")),
            (json!([{"name": "v", "persistentVolumeClaim": {"claimName": "x"}}]),
                Ok(vec![Plan::Claim { namespace: "ns".into(), claim: "x".into() }])),
            (json!([{"name": "v", "persistentVolumeClaim": {"claimName": "../x"}}]),
                Err("volume \"v\": claimName \"../x\" must be a relative path without '..'")),
            (json!([{"name": "v", "iscsi": {"targetPortal": "x", "iqn": "y", "lun": 0}}]),
                Err("volume \"v\": this volume type is not supported on skiff nodes (emptyDir, configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim are)")),
        ];
        for (vols, want) in cases {
            let want = want.map_err(str::to_string);
            assert_eq!(run(with(vols.clone())), want, "{vols}");
        }
    }

    #[test]
    fn mounts_table() {
        let tmp = std::env::temp_dir().join(format!("skiff-mounts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let plans = vec![
            ("data".to_string(), Plan::EmptyDir { size_limit: None }),
            (
                "cfg".to_string(),
                Plan::Files(vec![("a/b".into(), b"x".to_vec())]),
            ),
        ];
        let laid = materialize(&tmp, &tmp.join("claims"), &plans).unwrap();
        assert_eq!(std::fs::read(tmp.join("volumes/cfg/a/b")).unwrap(), b"x");
        let c = |v: serde_json::Value| -> Container { serde_json::from_value(v).unwrap() };
        let env = vec![("POD".to_string(), "p1".to_string())];
        let (m, cwd) = mounts(
            &c(json!({"name": "c", "workingDir": "/work/sub",
                "volumeMounts": [{"name": "data", "mountPath": "/work/"},
                    {"name": "data", "mountPath": "/per-pod", "subPathExpr": "$(POD)"},
                    {"name": "cfg", "mountPath": "/etc/cfg"}]})),
            &laid,
            &env,
        )
        .unwrap();
        assert_eq!(
            m.iter()
                .map(|p| (p.guest.as_str(), p.read_only))
                .collect::<Vec<_>>(),
            [("/work", false), ("/per-pod", false), ("/etc/cfg", true)]
        );
        assert!(tmp.join("volumes/data/p1").is_dir());
        let cwd = cwd.unwrap();
        assert_eq!(cwd.host.shown(), tmp.join("volumes/data/sub"));
        assert!(tmp.join("volumes/data/sub").is_dir());
        // A link planted in the volume (as a guest can) is refused as a subPath or workingDir.
        std::os::unix::fs::symlink("../../..", tmp.join("volumes/data/escape")).unwrap();
        for bad in [
            json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "escape"}]}),
            json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "escape/new"}]}),
            json!({"name": "c", "workingDir": "/x/escape", "volumeMounts": [{"name": "data", "mountPath": "/x"}]}),
        ] {
            let err = mounts(&c(bad.clone()), &laid, &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains("symbolic link"), "{bad}: {err}");
        }
        assert!(!tmp.join("new").exists() && !tmp.parent().unwrap().join("new").exists());
        for (bad, want) in [
            (json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
                "container \"c\": volumeMount \"nope\" names no volume of the pod"),
            (json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../.."}]}),
                "container \"c\": subPath \"../..\" must be a relative path without '..'"),
            (json!({"name": "c", "workingDir": "/app"}),
                "container \"c\": workingDir \"/app\" is not inside a volume mount (a wasm container has no root filesystem)"),
        ] {
            assert_eq!(mounts(&c(bad), &laid, &env).unwrap_err().to_string(), want);
        }
        std::fs::write(tmp.join("volumes/data/f"), vec![0u8; 1000]).unwrap();
        assert!(usage(&tmp.join("volumes/data")) >= 1000);
        // A volume name that is a path is refused before it touches the disk.
        let evil = vec![(
            "../../evil".to_string(),
            Plan::EmptyDir { size_limit: None },
        )];
        assert!(materialize(&tmp, &tmp.join("claims"), &evil).is_err());
        assert!(!tmp.parent().unwrap().join("evil").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
