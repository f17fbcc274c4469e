//! Every standard kind served: a real multi-kind bundle applied with kubectl (an unserved kind in
//! the middle gets kubectl's `no matches for kind` and stops nothing), the objects every cluster
//! and every namespace has, the admission defaults (priority classes, default classes), and the
//! autoscaling/v1 view of HPAs.

use serde_json::json;

use crate::harness::Cluster;
use crate::T;

/// `openssl req -new -newkey ed25519 -subj /CN=alice/O=devs`, base64.
const ALICE_CSR: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlHZU1GSUNBUUF3SHpFT01Bd0dBMVVFQXd3RllXeHBZMlV4RFRBTEJnTlZCQW9NQkdSbGRuTXdLakFGQmdNcgpaWEFESVFBWExWZjd3c0tiTER6RzlxamlzSXE3UzJqMkZqZVI2aW9hUlo1YjIvZENIYUFBTUFVR0F5dGxjQU5CCkFLMEhwblBKZ21JcVlHTU1aQ2Q4SDluYzVVUm9NM295ZTVJd1h2cG9qTnRkWXZiMkJGbE1EQkszL1lGNHY1cG8KeUp6bE9nZ2t0MVRJTWY1Z1I3ekZGdzQ9Ci0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=";

fn bundle() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
provisioner: example.com/fast
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-data
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: fast
  hostPath: {{path: /srv/pv-data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: team-a
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 500Mi}}}}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: not-served
  namespace: team-a
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: compute
  namespace: team-a
spec:
  hard: {{pods: "10", requests.cpu: "4", limits.memory: 8Gi}}
---
apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
  namespace: team-a
spec:
  limits:
  - type: Container
    default: {{cpu: 500m, memory: 256Mi}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: team-a
spec:
  podSelector: {{}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: team-a
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
description: important
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: team-a
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-pods
  namespace: team-a
subjects:
- kind: User
  name: alice
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: pod-reader
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-viewer
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list]
- nonResourceURLs: [/healthz]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: view-nodes
subjects:
- kind: Group
  name: devs
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: ClusterRole
  name: node-viewer
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: alice
spec:
  request: {ALICE_CSR}
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 86400
  usages: [client auth]
---
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
  namespace: team-a
spec:
  replicas: 0
  template:
    metadata:
      labels: {{app: legacy}}
    spec:
      containers:
      - name: c
        image: hello:latest
---
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: legacy
  namespace: team-a
spec:
  scaleTargetRef: {{apiVersion: v1, kind: ReplicationController, name: legacy}}
  minReplicas: 1
  maxReplicas: 4
  targetCPUUtilizationPercentage: 75
"#
    )
}

#[test]
fn a_bundle_of_every_standard_kind_applies_and_prints() {
    let c = Cluster::start(&["--no-node"]);
    let path = c.dir.path().join("bundle.yaml");
    std::fs::write(&path, bundle()).expect("bundle");
    let out = c.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The unserved kind is refused as kubectl refuses it; nothing after it is lost.
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(r#"no matches for kind "Widget" in version "example.com/v1""#),
        "{stderr}"
    );
    for made in [
        "namespace/team-a created",
        "storageclass.storage.k8s.io/fast created",
        "persistentvolume/pv-data created",
        "persistentvolumeclaim/data created",
        "resourcequota/compute created",
        "limitrange/defaults created",
        "networkpolicy.networking.k8s.io/deny-all created",
        "poddisruptionbudget.policy/web created",
        "priorityclass.scheduling.k8s.io/high created",
        "role.rbac.authorization.k8s.io/pod-reader created",
        "rolebinding.rbac.authorization.k8s.io/read-pods created",
        "clusterrole.rbac.authorization.k8s.io/node-viewer created",
        "clusterrolebinding.rbac.authorization.k8s.io/view-nodes created",
        "certificatesigningrequest.certificates.k8s.io/alice created",
        "replicationcontroller/legacy created",
        "horizontalpodautoscaler.autoscaling/legacy created",
    ] {
        assert!(
            stdout.contains(made),
            "{made} missing from:\n{stdout}\n{stderr}"
        );
    }

    // Server-side printing of each kind, with kubectl's columns.
    let get = |args: &[&str]| c.kubectl_ok(args);
    let sc = get(&["get", "storageclass"]);
    assert!(
        sc.contains("local-path (default)") && sc.contains("skiff.dev/local-path"),
        "{sc}"
    );
    let pv = get(&["get", "pv"]);
    assert!(
        pv.contains("1Gi") && pv.contains("RWO") && pv.contains("Retain"),
        "{pv}"
    );
    // The claim named no class: it got the default one.
    let pvc = get(&[
        "get",
        "pvc",
        "-n",
        "team-a",
        "data",
        "-o",
        "jsonpath={.spec.storageClassName} {.status.phase}",
    ]);
    assert_eq!(pvc, "local-path Pending");
    let pdb = get(&["get", "pdb", "-n", "team-a"]);
    assert!(
        pdb.contains("MIN AVAILABLE") && pdb.contains("N/A"),
        "{pdb}"
    );
    let pc = get(&["get", "priorityclasses"]);
    assert!(
        pc.contains("system-node-critical") && pc.contains("2000001000") && pc.contains("high"),
        "{pc}"
    );
    let rb = get(&["get", "rolebinding", "-n", "team-a", "-o", "wide"]);
    assert!(
        rb.contains("Role/pod-reader") && rb.contains("alice"),
        "{rb}"
    );
    let csr = get(&["get", "csr"]);
    assert!(
        csr.contains("kubernetes.io/kube-apiserver-client")
            && csr.contains("Pending")
            && csr.contains("24h"),
        "{csr}"
    );
    get(&["certificate", "approve", "alice"]);
    c.wait_for(
        &["csr", "alice"],
        "{.status.conditions[0].type}",
        "Approved",
        T,
    );
    let quota = get(&["get", "quota", "-n", "team-a"]);
    assert!(
        quota.contains("pods: 0/10") && quota.contains("limits.memory: 0/8Gi"),
        "{quota}"
    );
    let all = get(&["get", "netpol,limits,roles,rc", "-n", "team-a"]);
    for name in ["deny-all", "defaults", "pod-reader", "legacy"] {
        assert!(all.contains(name), "{name}: {all}");
    }

    // A ReplicationController scales; its selector came from the template.
    get(&["scale", "rc", "legacy", "-n", "team-a", "--replicas=2"]);
    assert_eq!(
        get(&[
            "get",
            "rc",
            "legacy",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.replicas} {.spec.selector.app}"
        ]),
        "2 legacy"
    );
    // ... and its controller (the ReplicaSet machinery) makes the pods and counts them.
    c.wait_for(
        &["pods", "-n", "team-a", "-l", "app=legacy"],
        "{.items[*].metadata.ownerReferences[0].kind}",
        "ReplicationController ReplicationController",
        T,
    );
    c.wait_for(
        &["rc", "legacy", "-n", "team-a"],
        "{.status.replicas}",
        "2",
        T,
    );

    // autoscaling/v1 and v2 are two views of one object.
    let v2 = get(&[
        "get",
        "hpa.v2.autoscaling",
        "legacy",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.spec.metrics[0].resource.target.averageUtilization}",
    ]);
    assert_eq!(v2, "75");
    let v1 = get(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/team-a/horizontalpodautoscalers/legacy",
    ]);
    let v1: serde_json::Value = serde_json::from_str(&v1).expect("json");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 75, "{v1}");
    assert_eq!(v1["apiVersion"], "autoscaling/v1");

    // Every namespace has its default ServiceAccount and the cluster CA.
    c.wait_for(
        &["serviceaccount", "default", "-n", "team-a"],
        "{.metadata.name}",
        "default",
        T,
    );
    c.wait_for(
        &["configmap", "kube-root-ca.crt", "-n", "team-a"],
        "{.metadata.name}",
        "kube-root-ca.crt",
        T,
    );
    let ca = get(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    // Deleted, it comes back.
    get(&["delete", "configmap", "kube-root-ca.crt", "-n", "team-a"]);
    c.wait_for(
        &["configmap", "kube-root-ca.crt", "-n", "team-a"],
        "{.metadata.name}",
        "kube-root-ca.crt",
        T,
    );

    // The API server's own Service.
    assert_eq!(
        get(&[
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP} {.spec.ports[0].port}"
        ]),
        "10.43.0.1 443"
    );
    let ep = get(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}",
    ]);
    assert_eq!(ep, "127.0.0.1");
}

#[test]
fn admission_resolves_priority_classes_and_default_classes() {
    let c = Cluster::start(&["--no-node"]);
    c.apply(
        "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
preemptionPolicy: Never
---
apiVersion: v1
kind: Pod
metadata: {name: important}
spec:
  priorityClassName: high
  containers: [{name: c, image: hello:latest}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: c, image: hello:latest}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
",
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "important"],
            "{.spec.priority} {.spec.preemptionPolicy}"
        ),
        "1000 Never"
    );
    assert_eq!(
        c.jsonpath(
            &["pod", "plain"],
            "{.spec.priority} {.spec.preemptionPolicy}"
        ),
        "0 PreemptLowerPriority"
    );
    assert_eq!(
        c.jsonpath(&["ingress", "web"], "{.spec.ingressClassName}"),
        "skiff"
    );
    // A claim with no class binds to an Available volume that fits; once the claim is gone,
    // a `Retain` volume is Released.
    c.apply(
        "apiVersion: v1
kind: PersistentVolume
metadata: {name: disk}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ''
  hostPath: {path: /srv/disk}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec:
  storageClassName: ''
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
",
    );
    c.wait_for(
        &["pvc", "claim"],
        "{.status.phase} {.spec.volumeName}",
        "Bound disk",
        T,
    );
    c.wait_for(
        &["pv", "disk"],
        "{.status.phase} {.spec.claimRef.name}",
        "Bound claim",
        T,
    );
    c.kubectl_ok(&["delete", "pvc", "claim"]);
    c.wait_for(&["pv", "disk"], "{.status.phase}", "Released", T);
    // A pod waits for its claims as kube-scheduler's volume binding makes it wait.
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: needs-claim}
spec:
  containers: [{name: c, image: hello:latest}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: missing}}]
",
    );
    let scheduled = "{.status.conditions[?(@.type==\"PodScheduled\")].message}";
    c.wait_for(
        &["pod", "needs-claim"],
        scheduled,
        "0/0 nodes are available: persistentvolumeclaim \"missing\" not found.",
        T,
    );
    c.apply(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: missing}
spec:
  storageClassName: ''
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
",
    );
    c.wait_for(
        &["pod", "needs-claim"],
        scheduled,
        "0/0 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
        T,
    );
    let out = c.kubectl(&[
        "run",
        "nope",
        "--image=hello:latest",
        "--overrides",
        r#"{"spec": {"priorityClassName": "nope"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );
    // User classes may not take the system prefix or values.
    let bad = c.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: system-mine}\nvalue: 2000000000\n").expect("write");
    let out = c.kubectl(&["apply", "-f", bad.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("priority class names with 'system-' prefix are reserved"),
        "{err}"
    );
}

/// kubectl's typed `create` commands send protobuf: every kind they make decodes.
#[test]
fn kubectl_create_commands_send_protobuf_for_every_kind() {
    let c = Cluster::start(&["--no-node"]);
    let ok = |args: &[&str]| c.kubectl_ok(args);
    ok(&[
        "create",
        "cronjob",
        "nightly",
        "--image=hello:latest",
        "--schedule=0 3 * * *",
    ]);
    ok(&["create", "job", "manual", "--from=cronjob/nightly"]);
    assert_eq!(
        c.jsonpath(&["job", "manual"], "{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.spec.template.spec.containers[0].image}"),
        "manual hello:latest"
    );
    ok(&[
        "create",
        "ingress",
        "web",
        "--rule=shop.example/*=web:80",
        "--class=skiff",
    ]);
    assert_eq!(
        c.jsonpath(&["ingress", "web"], "{.spec.rules[0].host} {.spec.rules[0].http.paths[0].pathType} {.spec.rules[0].http.paths[0].backend.service.port.number}"),
        "shop.example Prefix 80"
    );
    ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--user=alice",
        "--serviceaccount=default:robot",
    ]);
    ok(&[
        "create",
        "clusterrole",
        "viewer",
        "--verb=get",
        "--non-resource-url=/healthz",
    ]);
    ok(&[
        "create",
        "clusterrolebinding",
        "viewer",
        "--clusterrole=viewer",
        "--group=devs",
    ]);
    ok(&[
        "create",
        "priorityclass",
        "batch",
        "--value=100",
        "--preemption-policy=Never",
    ]);
    ok(&[
        "create",
        "poddisruptionbudget",
        "web",
        "--selector=app=web",
        "--min-available=50%",
    ]);
    ok(&["create", "quota", "small", "--hard=pods=4,requests.cpu=2"]);
    assert_eq!(
        c.jsonpath(
            &["rolebinding", "reader"],
            "{.roleRef.name} {.subjects[0].name} {.subjects[1].namespace}"
        ),
        "reader alice default"
    );
    assert_eq!(c.jsonpath(&["pdb", "web"], "{.spec.minAvailable}"), "50%");
    assert_eq!(c.jsonpath(&["quota", "small"], "{.spec.hard.pods}"), "4");
    assert_eq!(
        c.jsonpath(&["priorityclass", "batch"], "{.value} {.preemptionPolicy}"),
        "100 Never"
    );
}

/// What real clients found different from kube-apiserver, each now the same: trailing-slash
/// discovery, statuses from creation, what DELETE answers, `PartialObjectMetadata`, server-side
/// apply conflicts with their causes, and status writes in `managedFields`.
#[test]
fn the_wire_matches_kube_apiserver_where_clients_looked() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};

    let c = Cluster::start(&["--no-node"]);
    for path in ["/version/", "/api/", "/apis/"] {
        c.kubectl_ok(&["get", "--raw", path]);
    }
    // Statuses as kube-apiserver's defaulting makes them.
    c.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80"]);
    assert_eq!(
        c.jsonpath(&["service", "web"], "{.status}"),
        r#"{"loadBalancer":{}}"#
    );
    c.kubectl_ok(&["create", "configmap", "gone", "--from-literal=k=v"]);
    // DELETE of a ConfigMap answers a Status; of a Service, the Service.
    let status = c.kubectl_ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps/gone",
    ]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(
        (
            &status["kind"],
            &status["status"],
            &status["details"]["kind"],
            &status["details"]["name"]
        ),
        (
            &json!("Status"),
            &json!("Success"),
            &json!("configmaps"),
            &json!("gone")
        ),
        "{status}"
    );
    let svc = c.kubectl_ok(&["delete", "--raw", "/api/v1/namespaces/default/services/web"]);
    assert!(svc.contains(r#""kind":"Service""#), "{svc}");
    // Status writes (the Deployment controller's) own their fields under `status`.
    c.kubectl_ok(&["create", "deployment", "d", "--image=hello:latest"]);
    c.wait_for(
        &["deployment", "d"],
        "{.metadata.managedFields[?(@.subresource==\"status\")].operation}",
        "Update",
        T,
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = crate::crash::client(&c).await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "meta", "labels": {"a": "b"}}, "data": {"k": "v"}}),
        )
        .unwrap();
        cms.create(&Default::default(), &cm).await.expect("create");
        // Metadata-only lists, gets and watches.
        let list = cms
            .list_metadata(&ListParams::default())
            .await
            .expect("list_metadata");
        assert!(list
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some("meta")));
        let one = cms.get_metadata("meta").await.expect("get_metadata");
        assert_eq!(
            one.metadata
                .labels
                .unwrap_or_default()
                .get("a")
                .map(String::as_str),
            Some("b")
        );
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let mut events = cms
            .watch_metadata(&WatchParams::default().timeout(10), &rv)
            .await
            .expect("watch_metadata")
            .boxed();
        cms.patch(
            "meta",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "c"}}})),
        )
        .await
        .expect("patch");
        match events.next().await {
            Some(Ok(WatchEvent::Modified(m))) => {
                assert_eq!(
                    m.metadata
                        .labels
                        .unwrap_or_default()
                        .get("a")
                        .map(String::as_str),
                    Some("c")
                )
            }
            other => panic!("{other:?}"),
        }
        // A server-side apply conflict names the manager and the field, as a cause.
        cms.patch(
            "meta",
            &PatchParams::apply("first").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "one"}})),
        )
        .await
        .expect("first apply");
        let req =
            http::Request::patch("/api/v1/namespaces/default/configmaps/meta?fieldManager=second")
                .header("content-type", "application/apply-patch+yaml")
                .body(
                    br#"{"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "two"}}"#.to_vec(),
                )
                .expect("request");
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .expect("send");
        assert_eq!(resp.status(), 409);
        let body = resp.into_body().collect_bytes().await.expect("body");
        let status: serde_json::Value = serde_json::from_slice(&body).expect("status json");
        assert_eq!(
            status["details"]["causes"][0]["reason"], "FieldManagerConflict",
            "{status}"
        );
        assert_eq!(
            status["details"]["causes"][0]["field"], ".data.k",
            "{status}"
        );
        assert!(status["details"].get("group").is_none(), "{status}");
        let _ = cms.delete("meta", &DeleteParams::default()).await;
    });
}

/// The CronTab CustomResourceDefinition of the Kubernetes documentation: served at once, with
/// validation, defaulting, pruning, printer columns, the status subresource, discovery and
/// `kubectl explain`; deleting the CRD deletes its objects.
const CRONTAB_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                cronSpec:
                  type: string
                  pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
                image:
                  type: string
                replicas:
                  type: integer
                  minimum: 1
                  maximum: 10
                  default: 1
            status:
              type: object
              properties:
                ready:
                  type: boolean
      additionalPrinterColumns:
      - name: Spec
        type: string
        description: The cron spec defining the interval a CronJob is run
        jsonPath: .spec.cronSpec
      - name: Replicas
        type: integer
        description: The number of jobs launched by the CronJob
        jsonPath: .spec.replicas
      - name: Age
        type: date
        jsonPath: .metadata.creationTimestamp
      subresources:
        status: {}
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames:
    - ct
"#;

#[test]
fn a_custom_resource_definition_serves_its_kind() {
    let c = Cluster::start(&["--no-node"]);
    c.apply(CRONTAB_CRD);
    assert_eq!(
        c.jsonpath(
            &["crd", "crontabs.stable.example.com"],
            "{.status.conditions[?(@.type==\"Established\")].status}"
        ),
        "True"
    );
    let resources = c.kubectl_ok(&["api-resources", "--api-group=stable.example.com"]);
    assert!(
        resources.contains("crontabs") && resources.contains("ct") && resources.contains("CronTab"),
        "{resources}"
    );
    c.apply(
        r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-new-cron-object
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
"#,
    );
    // Defaulted, printed with the CRD's columns.
    assert_eq!(
        c.jsonpath(&["ct", "my-new-cron-object"], "{.spec.replicas}"),
        "1"
    );
    let table = c.kubectl_ok(&["get", "crontabs"]);
    assert!(
        table.contains("SPEC") && table.contains("REPLICAS") && table.contains("* * * * */5"),
        "{table}"
    );
    // Validation and pruning by the schema.
    let bad = c.dir.path().join("bad-cron.yaml");
    std::fs::write(&bad, "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: \"* * * * *\", replicas: 11}\n").expect("write");
    let out = c.kubectl(&["apply", "-f", bad.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.replicas in body should be less than or equal to 10"),
        "{err}"
    );
    std::fs::write(&bad, "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: \"* * * * *\", colour: red}\n").expect("write");
    let out = c.kubectl(&["apply", "-f", bad.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field \"spec.colour\""),
        "{err}"
    );
    // The status subresource: status writes go through /status only.
    c.kubectl_ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"ready": true}}"#,
    ]);
    c.kubectl_ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"status": {"ready": false}, "spec": {"replicas": 2}}"#,
    ]);
    assert_eq!(
        c.jsonpath(
            &["ct", "my-new-cron-object"],
            "{.status.ready} {.spec.replicas}"
        ),
        "true 2"
    );
    // Custom resources have no strategic merge patch, as in Kubernetes.
    let smp = c.kubectl(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=strategic",
        "-p",
        r#"{"spec": {"replicas": 3}}"#,
    ]);
    assert!(
        !smp.status.success()
            && String::from_utf8_lossy(&smp.stderr)
                .contains("application/strategic-merge-patch+json is not supported by stable.example.com/v1, Kind=CronTab"),
        "{}",
        String::from_utf8_lossy(&smp.stderr)
    );
    // kubectl explain reads the CRD's schema.
    let explain = c.kubectl_ok(&["explain", "crontab.spec"]);
    assert!(
        explain.contains("cronSpec") && explain.contains("replicas"),
        "{explain}"
    );
    // Deleting the CRD deletes its objects, then the kind is no longer served.
    c.kubectl_ok(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--timeout=60s",
    ]);
    let gone = c.kubectl(&["get", "crontabs"]);
    assert!(
        !gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stdout)
    );
}
