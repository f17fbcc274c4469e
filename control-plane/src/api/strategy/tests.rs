//! Table tests of the strategies: validation, defaults, immutable fields, schedules, the
//! events.k8s.io conversion and the scale view.

use serde_json::{json, Value};

use super::batch::check_schedule;
use super::event::EventsV1;
use super::workloads::scale_of;
use super::Strategy;
use crate::api::registry::rules;
use crate::resources::{self, ResourceType};

fn default(rt: &ResourceType, obj: &mut Value) {
    rt.strategy.default(obj);
}

fn validate_update(
    rt: &ResourceType,
    old: &Value,
    new: &Value,
    causes: &mut Vec<crate::api::error::FieldCause>,
) {
    rt.strategy.validate_update(old, new, causes);
}

fn rt(group: &str, plural: &str) -> &'static ResourceType {
    let version = if group == "autoscaling" { "v2" } else { "v1" };
    resources::find(group, version, plural).unwrap()
}

fn fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    rules::validate(rt, obj)
        .into_iter()
        .map(|c| c.field)
        .collect()
}

fn deployment(selector: Value, labels: Value, restart: &str) -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"selector": selector, "template": {
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "hello"}]}}}})
}

#[test]
fn workload_validation_table() {
    let d = rt("apps", "deployments");
    let cases: Vec<(&ResourceType, Value, Vec<&str>)> = vec![
        (
            d,
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web"}),
                "Always",
            ),
            vec![],
        ),
        (
            d,
            deployment(
                json!({"matchLabels": {"app": "db"}}),
                json!({"app": "web"}),
                "Always",
            ),
            vec!["spec.template.metadata.labels"],
        ),
        (
            d,
            deployment(Value::Null, json!({"app": "web"}), "Always"),
            vec!["spec.selector"],
        ),
        (
            d,
            deployment(json!({}), json!({"app": "web"}), "Always"),
            vec!["spec.selector"],
        ),
        (
            d,
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web"}),
                "Never",
            ),
            vec!["spec.template.spec.restartPolicy"],
        ),
        (
            rt("batch", "jobs"),
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}}),
            vec!["spec.template.spec.restartPolicy"],
        ),
        (
            rt("batch", "jobs"),
            json!({"metadata": {"name": "j"}, "spec": {"backoffLimit": -1, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
            vec!["spec.backoffLimit"],
        ),
        (
            rt("batch", "cronjobs"),
            json!({"metadata": {"name": "c"}, "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            vec!["spec.schedule"],
        ),
        (
            rt("", "services"),
            json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}, {"port": 70000, "name": "b"}]}}),
            vec![
                "metadata.name",
                "spec.ports[0].name",
                "spec.ports[1].port",
                "spec.ports[1].targetPort",
            ],
        ),
        (
            rt("", "services"),
            json!({"metadata": {"name": "svc"}, "spec": {}}),
            vec!["spec.ports"],
        ),
        (
            rt("", "services"),
            json!({"metadata": {"name": "svc"}, "spec": {"clusterIP": "../../etc", "ports": [{"port": 80}]}}),
            vec!["spec.clusterIPs[0]"],
        ),
        (
            rt("", "services"),
            json!({"metadata": {"name": "svc"}, "spec": {"clusterIP": "1.2.3.4", "ports": [{"port": 80}]}}),
            vec!["spec.clusterIPs"],
        ),
        (
            rt("", "services"),
            json!({"metadata": {"name": "svc"}, "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}}),
            vec![],
        ),
        (
            rt("", "configmaps"),
            json!({"metadata": {"name": "c"}, "data": {"ok.key": "1", "bad key": "2"}}),
            vec!["data[bad key]"],
        ),
        (
            rt("autoscaling", "horizontalpodautoscalers"),
            json!({"metadata": {"name": "h"}, "spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}}),
            vec!["spec.maxReplicas"],
        ),
        (
            rt("networking.k8s.io", "ingresses"),
            json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "*.shop.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                {"path": "/api", "pathType": "Exact", "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}],
                "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
            vec![],
        ),
        (
            rt("networking.k8s.io", "ingresses"),
            json!({"metadata": {"name": "i"}, "spec": {}}),
            vec!["spec"],
        ),
        (
            rt("networking.k8s.io", "ingresses"),
            json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a*.b:80", "http": {"paths": [
                {"path": "api", "backend": {"service": {"name": "Web", "port": {}}}},
                {"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "w", "port": {"number": 0}}}},
                {"path": "/y", "pathType": "Exact", "backend": {"service": {"name": "w", "port": {"number": 80, "name": "http"}}}}]}}]}}),
            vec![
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].pathType",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend.service.name",
                "spec.rules[0].http.paths[0].backend.service.port",
                "spec.rules[0].http.paths[1].pathType",
                "spec.rules[0].http.paths[1].backend.service.port.number",
                "spec.rules[0].http.paths[2].backend.service.port",
            ],
        ),
    ];
    for (rt, mut obj, want) in cases {
        default(rt, &mut obj);
        let mut got = fields(rt, &obj);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "{} {obj}", rt.kind);
    }
}

#[test]
fn defaults_table() {
    let mut d = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
        "Always",
    );
    default(rt("apps", "deployments"), &mut d);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    let mut j = json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
    default(rt("batch", "jobs"), &mut j);
    assert_eq!(j["spec"]["completions"], 1);
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        "u1"
    );
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"]["controller-uid"],
        "u1"
    );
    assert!(fields(rt("batch", "jobs"), &j).is_empty());
    let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}, "data": {"a": "YQ=="}});
    default(rt("", "secrets"), &mut s);
    assert_eq!(s["data"], json!({"a": "YQ==", "k": "dg=="}));
    assert_eq!(s["type"], "Opaque");
    assert!(s.get("stringData").is_none());
    let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    default(rt("", "services"), &mut svc);
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
}

#[test]
fn immutable_fields_table() {
    let d = rt("apps", "deployments");
    let old = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
        "Always",
    );
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(3);
    let mut causes = Vec::new();
    validate_update(d, &old, &new, &mut causes);
    assert!(causes.is_empty());
    new["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    validate_update(d, &old, &new, &mut causes);
    assert_eq!(causes[0].field, "spec.selector");
    let cm = rt("", "configmaps");
    let old = json!({"immutable": true, "data": {"a": "1"}});
    let mut causes = Vec::new();
    validate_update(
        cm,
        &old,
        &json!({"immutable": true, "data": {"a": "2"}}),
        &mut causes,
    );
    assert_eq!(causes[0].field, "data");
}

#[test]
fn schedules_table() {
    for (s, ok) in [
        ("*/5 * * * *", true),
        ("0 0 * * sun", true),
        ("@hourly", true),
        ("0 0 1 jan-mar *", true),
        ("60 * * * *", false),
        ("* * * *", false),
        ("*/0 * * * *", false),
        ("@sometimes", false),
    ] {
        assert_eq!(check_schedule(s).is_ok(), ok, "{s}");
    }
}

#[test]
fn events_convert_both_ways() {
    let core = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "count": 2, "reason": "Started"});
    let new = EventsV1.served_form(core.clone());
    assert_eq!(new["regarding"]["name"], "p");
    assert_eq!(new["note"], "m");
    assert_eq!(new["deprecatedCount"], 2);
    assert_eq!(new["reason"], "Started");
    let mut back = core.clone();
    back["kind"] = json!("Event");
    back["apiVersion"] = json!("v1");
    assert_eq!(EventsV1.storage_form(new), back);
}

#[test]
fn scale_view() {
    let mut d = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
        "Always",
    );
    d["spec"]["replicas"] = json!(3);
    d["status"] = json!({"replicas": 2});
    let s = scale_of(&d);
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["status"]["replicas"], 2);
    assert_eq!(s["status"]["selector"], "app=web");
}

/// The kinds served since the registry: each case is an object after defaults and the fields
/// validation names.
#[test]
fn more_kinds_validation_table() {
    let docker = |ty: &str, key: &str, body: &str| {
        use base64::Engine;
        json!({"metadata": {"name": "reg"}, "type": ty,
            "data": {key: base64::engine::general_purpose::STANDARD.encode(body)}})
    };
    let scoped = |exprs: Value| {
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"},
            "scopeSelector": {"matchExpressions": exprs}}})
    };
    let cases: Vec<(&ResourceType, Value, Vec<&str>)> = vec![
        (
            rt("", "resourcequotas"),
            scoped(
                json!([{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]},
                {"scopeName": "BestEffort", "operator": "Exists"}]),
            ),
            vec![],
        ),
        (
            rt("", "resourcequotas"),
            scoped(json!([{"scopeName": "PriorityClass", "operator": "In"},
                {"scopeName": "BestEffort", "operator": "In", "values": ["x"]},
                {"scopeName": "Colour", "operator": "Exists"},
                {"scopeName": "PriorityClass", "operator": "Near"},
                {"scopeName": "PriorityClass", "operator": "Exists", "values": ["x"]}])),
            vec![
                "spec.scopeSelector.matchExpressions[0].values",
                "spec.scopeSelector.matchExpressions[1].operator",
                "spec.scopeSelector.matchExpressions[2].scopeName",
                "spec.scopeSelector.matchExpressions[3].operator",
                "spec.scopeSelector.matchExpressions[4].values",
            ],
        ),
        (
            rt("", "secrets"),
            docker(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                r#"{"auths": {}}"#,
            ),
            vec![],
        ),
        (
            rt("", "secrets"),
            docker(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                "hunter2",
            ),
            vec!["data[.dockerconfigjson]"],
        ),
        (
            rt("", "secrets"),
            docker("kubernetes.io/dockerconfigjson", "config.json", "{}"),
            vec!["data[.dockerconfigjson]"],
        ),
        (
            rt("", "secrets"),
            docker("kubernetes.io/dockercfg", ".dockercfg", r#"{"r": {}}"#),
            vec![],
        ),
        (
            rt("", "secrets"),
            docker("Opaque", ".dockerconfigjson", "hunter2"),
            vec![],
        ),
        (
            rt("", "persistentvolumes"),
            json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data/pv"}}}),
            vec![],
        ),
        (
            rt("", "persistentvolumes"),
            json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "lots"}, "accessModes": ["ReadWriteSometimes"], "hostPath": {"path": "../etc"}, "local": {"path": "/x"}}}),
            vec![
                "spec.capacity[storage]",
                "spec.accessModes[0]",
                "spec",
                "spec.hostPath.path",
            ],
        ),
        (
            rt("", "persistentvolumes"),
            json!({"metadata": {"name": "pv"}, "spec": {}}),
            vec!["spec.capacity", "spec.accessModes", "spec"],
        ),
        (
            rt("", "persistentvolumeclaims"),
            json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            vec![],
        ),
        (
            rt("", "persistentvolumeclaims"),
            json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {}}}),
            vec!["spec.resources[storage]"],
        ),
        (
            rt("storage.k8s.io", "storageclasses"),
            json!({"metadata": {"name": "sc"}, "reclaimPolicy": "Recycle"}),
            vec!["provisioner", "reclaimPolicy"],
        ),
        (
            rt("", "resourcequotas"),
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10", "requests.cpu": "-1"}}}),
            vec!["spec.hard[requests.cpu]"],
        ),
        (
            rt("", "limitranges"),
            json!({"metadata": {"name": "l"}, "spec": {"limits": [{"type": "Node", "max": {"cpu": "x"}}]}}),
            vec!["spec.limits[0].type", "spec.limits[0].max[cpu]"],
        ),
        (
            rt("networking.k8s.io", "networkpolicies"),
            json!({"metadata": {"name": "np"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}}),
            vec!["spec.ingress[0].from[0].ipBlock.cidr"],
        ),
        (
            rt("policy", "poddisruptionbudgets"),
            json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "maxUnavailable": "120%"}}),
            vec!["spec", "spec.maxUnavailable"],
        ),
        (
            rt("scheduling.k8s.io", "priorityclasses"),
            json!({"metadata": {"name": "system-mine"}, "value": 2000000000}),
            vec!["value", "metadata.name"],
        ),
        (
            rt("scheduling.k8s.io", "priorityclasses"),
            json!({"metadata": {"name": "high"}, "value": 1000}),
            vec![],
        ),
        (
            rt("rbac.authorization.k8s.io", "roles"),
            json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]}),
            vec!["rules[0].apiGroups", "rules[1].nonResourceURLs"],
        ),
        (
            rt("rbac.authorization.k8s.io", "clusterroles"),
            json!({"metadata": {"name": "system:aggregate-to-view"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]}),
            vec![],
        ),
        (
            rt("rbac.authorization.k8s.io", "clusterroles"),
            json!({"metadata": {"name": "a/b"}, "rules": []}),
            vec!["metadata.name"],
        ),
        (
            rt("rbac.authorization.k8s.io", "clusterrolebindings"),
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "Robot", "name": "x"}]}),
            vec!["roleRef.kind", "subjects[0].namespace", "subjects[1].kind"],
        ),
        (
            rt("certificates.k8s.io", "certificatesigningrequests"),
            json!({"metadata": {"name": "csr"}, "spec": {"request": "bm90IGEgY3Ny", "signerName": "nosigner", "expirationSeconds": 60}}),
            vec!["spec.request", "spec.signerName", "spec.expirationSeconds"],
        ),
        (
            rt("", "replicationcontrollers"),
            json!({"metadata": {"name": "rc"}, "spec": {"selector": {"app": "db"}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
            vec!["spec.template.metadata.labels"],
        ),
        (
            rt("", "replicationcontrollers"),
            json!({"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
            vec![],
        ),
        (
            rt("apps", "controllerrevisions"),
            json!({"metadata": {"name": "cr"}, "revision": -1}),
            vec!["revision"],
        ),
    ];
    for (rt, mut obj, want) in cases {
        default(rt, &mut obj);
        let mut got = fields(rt, &obj);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "{} {obj}", rt.kind);
    }
}

/// A hostile CRD: a pattern that is not a regular expression, or one too large to compile
/// within the bound, is refused (rather than letting every value through), as is a schema
/// without an object root.
#[test]
fn hostile_crds_are_refused() {
    let crd = |pattern: &str, plural: &str| {
        json!({"metadata": {"name": format!("{plural}.x.example")}, "spec": {"group": "x.example", "scope": "Namespaced",
            "names": {"plural": plural, "kind": "W"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object",
                "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}}}}}]}})
    };
    let rt = rt("apiextensions.k8s.io", "customresourcedefinitions");
    let check = |mut obj: Value| {
        default(rt, &mut obj);
        fields(rt, &obj)
    };
    assert_eq!(check(crd("^[a-z]+$", "widgets")), Vec::<String>::new());
    assert_eq!(
        check(crd("(unclosed", "widgets")),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[a].pattern"]
    );
    // A pattern whose compiled form exceeds the bound (a repetition of a repetition).
    assert_eq!(check(crd("(a{1000}){1000}", "widgets")).len(), 1);
    let mut flat = crd("x", "widgets");
    flat["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"] = json!("string");
    assert_eq!(
        check(flat),
        vec!["spec.versions[0].schema.openAPIV3Schema.type"]
    );
}

#[test]
fn more_kinds_defaults_and_immutable_fields() {
    let mut np = json!({"metadata": {"name": "np"}, "spec": {"podSelector": {}, "egress": [{}]}});
    default(rt("networking.k8s.io", "networkpolicies"), &mut np);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let mut rc = json!({"metadata": {"name": "rc"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
    default(rt("", "replicationcontrollers"), &mut rc);
    assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(rc["spec"]["replicas"], 1);
    assert_eq!(scale_of(&rc)["status"]["selector"], "app=web");

    let cases: Vec<(&ResourceType, Value, Value, Vec<&str>)> = vec![
        (
            rt("", "persistentvolumeclaims"),
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}, "volumeName": "pv1"}}),
            vec![],
        ),
        (
            rt("", "persistentvolumeclaims"),
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv1"}}),
            json!({"spec": {"accessModes": ["ReadWriteMany"], "volumeName": "pv2"}}),
            vec!["spec"],
        ),
        (
            rt("rbac.authorization.k8s.io", "rolebindings"),
            json!({"roleRef": {"kind": "Role", "name": "a"}}),
            json!({"roleRef": {"kind": "Role", "name": "b"}}),
            vec!["roleRef"],
        ),
        (
            rt("scheduling.k8s.io", "priorityclasses"),
            json!({"value": 1}),
            json!({"value": 2}),
            vec!["value"],
        ),
        (
            rt("storage.k8s.io", "storageclasses"),
            json!({"provisioner": "a"}),
            json!({"provisioner": "b"}),
            vec!["provisioner"],
        ),
    ];
    for (rt, old, new, want) in cases {
        let mut causes = Vec::new();
        validate_update(rt, &old, &new, &mut causes);
        let got: Vec<String> = causes.into_iter().map(|c| c.field).collect();
        assert_eq!(got, want, "{} {old} -> {new}", rt.kind);
    }
}

/// autoscaling/v1 is a view of the stored v2 objects: the CPU target converts both ways, and
/// what v1 cannot show survives a round trip through it.
#[test]
fn hpa_v1_round_trips_through_v2() {
    let v1 = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
    let stored = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}});
    let served = v1.strategy.served_form(stored.clone());
    assert_eq!(served["spec"]["targetCPUUtilizationPercentage"], 70);
    assert_eq!(served["status"]["currentCPUUtilizationPercentage"], 40);
    assert!(served["spec"].get("metrics").is_none());
    let back = v1.strategy.storage_form(served);
    assert_eq!(back["spec"], stored["spec"]);
    assert!(back["metadata"].get("annotations").is_none());
}
