//! Server-side printing: `meta.k8s.io/v1` `Table`s with the columns kubectl users know, for
//! pods, nodes, namespaces, events, leases, workloads, services, endpoints, config maps,
//! secrets, service accounts and autoscalers, and `Name, Age` for anything else. Pure code.

use serde_json::{json, Value};

use crate::resources::ResourceType;

fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": priority})
}

/// The column definitions for a resource type.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    match rt.kind {
        "Pod" => vec![
            name,
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age,
            col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        "Node" => vec![
            name,
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            age,
            col("Version", "string", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", 1, "List of internal IPs in the node."),
            col("External-IP", "string", 1, "List of external IPs in the node."),
            col("OS-Image", "string", 1, "OS Image reported by the node."),
            col("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            col("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        "Namespace" => vec![name, col("Status", "string", 0, "The status of the namespace"), age],
        "Event" => vec![
            col("Last Seen", "string", 0, "The time of the last occurrence."),
            col("Type", "string", 0, "Type of this event (Normal, Warning)."),
            col("Reason", "string", 0, "The reason for the transition into the object's current status."),
            col("Object", "string", 0, "The object this Event is about."),
            col("Message", "string", 0, "A human-readable description of the status of this operation."),
        ],
        "Lease" => vec![name, col("Holder", "string", 0, "The holder of the lease."), age],
        "Deployment" => [
            vec![
                name,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col("Up-to-date", "integer", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                col("Available", "integer", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                age,
            ],
            template_cols(Some("Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")),
        ]
        .concat(),
        "ReplicaSet" => [
            vec![
                name,
                col("Desired", "integer", 0, "Replicas is the number of desired replicas."),
                col("Current", "integer", 0, "Replicas is the most recently observed number of replicas."),
                col("Ready", "integer", 0, "The number of ready replicas for this replica set."),
                age,
            ],
            template_cols(Some("Selector is a label query over pods that should match the replica count.")),
        ]
        .concat(),
        "StatefulSet" => [
            vec![
                name,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                age,
            ],
            template_cols(None),
        ]
        .concat(),
        "DaemonSet" => [
            vec![
                name,
                col("Desired", "integer", 0, "The total number of nodes that should be running the daemon pod."),
                col("Current", "integer", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
                col("Ready", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
                col("Up-to-date", "integer", 0, "The total number of nodes that are running updated daemon pod"),
                col("Available", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
                col("Node Selector", "string", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."),
                age,
            ],
            template_cols(Some("A label query over pods that are managed by the daemon set.")),
        ]
        .concat(),
        "Job" => [
            vec![
                name,
                col("Status", "string", 0, "Status of the job."),
                col("Completions", "string", 0, "The desired number of successfully finished pods the job should be run with."),
                col("Duration", "string", 0, "Time required to complete the job."),
                age,
            ],
            template_cols(Some("A label query over pods that should match the pod count.")),
        ]
        .concat(),
        "CronJob" => [
            vec![
                name,
                col("Schedule", "string", 0, "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
                col("Timezone", "string", 0, "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
                col("Suspend", "boolean", 0, "This flag tells the controller to suspend subsequent executions."),
                col("Active", "integer", 0, "A list of pointers to currently running jobs."),
                col("Last Schedule", "string", 0, "Information when was the last time the job was successfully scheduled."),
                age,
            ],
            template_cols(Some("A label query over pods that should match the pod count.")),
        ]
        .concat(),
        "Service" => vec![
            name,
            col("Type", "string", 0, "type determines how the Service is exposed."),
            col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly by the master."),
            col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
            age,
            col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        "Endpoints" => vec![
            name,
            col("Endpoints", "string", 0, "Endpoints is the list of endpoints in the service."),
            age,
        ],
        "EndpointSlice" => vec![
            name,
            col("AddressType", "string", 0, "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", 0, "endpoints is a list of unique endpoints in this slice."),
            age,
        ],
        "Ingress" => vec![
            name,
            col("Class", "string", 0, "ingressClassName is the name of the IngressClass cluster resource."),
            col("Hosts", "string", 0, "Hosts that incoming requests are matched against."),
            col("Address", "string", 0, "Address is a list containing ingress points for the load-balancer."),
            col("Ports", "string", 0, "Ports of the ingress points."),
            age,
        ],
        "IngressClass" => vec![
            name,
            col("Controller", "string", 0, "controller refers to the name of the controller that should handle this class."),
            col("Parameters", "string", 0, "parameters is a link to a custom resource containing additional configuration for the controller."),
            age,
        ],
        "ConfigMap" => vec![name, col("Data", "integer", 0, "Data contains the configuration data."), age],
        "Secret" => vec![
            name,
            col("Type", "string", 0, "Used to facilitate programmatic handling of secret data."),
            col("Data", "integer", 0, "Data contains the secret data."),
            age,
        ],
        "ServiceAccount" => vec![name, col("Secrets", "string", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), age],
        "HorizontalPodAutoscaler" => vec![
            name,
            col("Reference", "string", 0, "reference to scaled resource"),
            col("Targets", "string", 0, "the current and the target metrics"),
            col("MinPods", "string", 0, "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            col("MaxPods", "integer", 0, "maxReplicas is the upper limit for the number of pods that can be set by the autoscaler."),
            col("Replicas", "integer", 0, "current number of replicas of pods managed by this autoscaler."),
            age,
        ],
        _ => vec![name, age],
    }
}

/// The `-o wide` columns of a kind with a pod template: containers, images and (with its
/// description) the selector.
fn template_cols(selector: Option<&str>) -> Vec<Value> {
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

fn int_at(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// `CONTAINERS`, `IMAGES` of a pod template.
fn template_columns(template: Option<&Value>) -> (String, String) {
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

fn selector_text(sel: Option<&Value>) -> String {
    match sel.map(super::selectors::LabelSelector::from_object) {
        Some(Ok(s)) if !s.0.is_empty() => s.to_string(),
        _ => "<none>".into(),
    }
}

fn map_text(m: Option<&Value>) -> String {
    match m.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `ENDPOINTS` of an Endpoints object: up to three `ip:port`, then `+ N more...`.
fn endpoints_text(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in ep
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for a in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    list_text(all)
}

fn list_text(all: Vec<String>) -> String {
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

fn job_status(job: &Value) -> &'static str {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn workload_cells(
    rt: &ResourceType,
    obj: &Value,
    name: String,
    age: String,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (containers, images) = template_columns(obj.pointer("/spec/template"));
    let selector = selector_text(obj.pointer("/spec/selector"));
    match rt.kind {
        "Deployment" => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                int_at(obj, "/status/readyReplicas"),
                int_at(obj, "/spec/replicas")
            )),
            json!(int_at(obj, "/status/updatedReplicas")),
            json!(int_at(obj, "/status/availableReplicas")),
            json!(age),
            json!(containers),
            json!(images),
            json!(selector),
        ],
        "ReplicaSet" => vec![
            json!(name),
            json!(int_at(obj, "/spec/replicas")),
            json!(int_at(obj, "/status/replicas")),
            json!(int_at(obj, "/status/readyReplicas")),
            json!(age),
            json!(containers),
            json!(images),
            json!(selector),
        ],
        "StatefulSet" => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                int_at(obj, "/status/readyReplicas"),
                int_at(obj, "/spec/replicas")
            )),
            json!(age),
            json!(containers),
            json!(images),
        ],
        "DaemonSet" => vec![
            json!(name),
            json!(int_at(obj, "/status/desiredNumberScheduled")),
            json!(int_at(obj, "/status/currentNumberScheduled")),
            json!(int_at(obj, "/status/numberReady")),
            json!(int_at(obj, "/status/updatedNumberScheduled")),
            json!(int_at(obj, "/status/numberAvailable")),
            json!(map_text(obj.pointer("/spec/template/spec/nodeSelector"))),
            json!(age),
            json!(containers),
            json!(images),
            json!(selector),
        ],
        "Job" => {
            let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!("{}/{c}", int_at(obj, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    int_at(obj, "/status/succeeded"),
                    int_at(obj, "/spec/parallelism").max(1)
                ),
            };
            let start = obj
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let end = obj
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .unwrap_or(now);
            let duration = start
                .map(|st| human_duration(end.duration_since(st).as_secs()))
                .unwrap_or_default();
            vec![
                json!(name),
                json!(job_status(obj)),
                json!(completions),
                json!(duration),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector),
            ]
        }
        _ => {
            let (containers, images) =
                template_columns(obj.pointer("/spec/jobTemplate/spec/template"));
            let last = obj.pointer("/status/lastScheduleTime");
            vec![
                json!(name),
                json!(s("/spec/schedule")),
                json!(obj
                    .pointer("/spec/timeZone")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")),
                json!(obj
                    .pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(obj
                    .pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)),
                json!(if last.is_some_and(|v| !v.is_null()) {
                    age_of(last, now)
                } else {
                    "<none>".into()
                }),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector_text(
                    obj.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
    }
}

/// One row's cells for an object at time `now`.
pub fn cells(rt: &ResourceType, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = s("/metadata/name");
    let age = age_of(obj.pointer("/metadata/creationTimestamp"), now);
    match rt.kind {
        "Pod" => pod_cells(obj, name, age, now),
        "Node" => node_cells(obj, name, age),
        "Namespace" => vec![json!(name), json!(s("/status/phase")), json!(age)],
        "Event" => {
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
        "Lease" => vec![json!(name), json!(s("/spec/holderIdentity")), json!(age)],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => {
            workload_cells(rt, obj, name, age, now)
        }
        "Service" => {
            let external = obj
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .or_else(|| {
                    obj.pointer("/spec/externalName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "<none>".into());
            let ip = obj
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("<none>");
            vec![
                json!(name),
                json!(s("/spec/type")),
                json!(ip),
                json!(external),
                json!(service_ports(obj)),
                json!(age),
                json!(map_text(obj.pointer("/spec/selector"))),
            ]
        }
        "Endpoints" => vec![json!(name), json!(endpoints_text(obj)), json!(age)],
        "Ingress" => {
            let mut hosts: Vec<String> = obj
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    r.get("host")
                        .and_then(Value::as_str)
                        .unwrap_or("*")
                        .to_string()
                })
                .collect();
            hosts.dedup();
            let addrs: Vec<String> = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            let tls = obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            vec![
                json!(name),
                json!(obj
                    .pointer("/spec/ingressClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
                json!(age),
            ]
        }
        "IngressClass" => vec![
            json!(name),
            json!(obj
                .pointer("/spec/controller")
                .and_then(Value::as_str)
                .unwrap_or("")),
            json!("<none>"),
            json!(age),
        ],
        "EndpointSlice" => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                .map(|p| p.to_string())
                .collect();
            let addrs: Vec<String> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                json!(name),
                json!(s("/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(list_text(addrs)),
                json!(age),
            ]
        }
        "ConfigMap" => {
            let n = ["data", "binaryData"]
                .iter()
                .map(|f| {
                    obj.get(*f)
                        .and_then(Value::as_object)
                        .map_or(0, |m| m.len())
                })
                .sum::<usize>();
            vec![json!(name), json!(n), json!(age)]
        }
        "Secret" => vec![
            json!(name),
            json!(s("/type")),
            json!(obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())),
            json!(age),
        ],
        "ServiceAccount" => vec![
            json!(name),
            json!(obj
                .get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                .to_string()),
            json!(age),
        ],
        "HorizontalPodAutoscaler" => {
            let reference = format!(
                "{}/{}",
                s("/spec/scaleTargetRef/kind"),
                s("/spec/scaleTargetRef/name")
            );
            let min = obj
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                json!(name),
                json!(reference),
                json!("<unknown>"),
                json!(min.to_string()),
                json!(int_at(obj, "/spec/maxReplicas")),
                json!(int_at(obj, "/status/currentReplicas")),
                json!(age),
            ]
        }
        _ => vec![json!(name), json!(age)],
    }
}

fn pod_cells(pod: &Value, name: String, age: String, now: jiff::Timestamp) -> Vec<Value> {
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let init_specs: Vec<&Value> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let is_sidecar = |name: Option<&str>| {
        init_specs.iter().any(|c| {
            c.get("name").and_then(Value::as_str) == name
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    // Sidecars (restartable init containers) count in READY, as kubectl prints it.
    let mut total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0)
        + init_specs
            .iter()
            .filter(|c| is_sidecar(c.get("name").and_then(Value::as_str)))
            .count();
    total = total.max(statuses.len());
    let mut ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let mut note_restart = |c: &Value, restarts: &mut i64| {
        *restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
    };
    // Init containers first: `Init:N/M`, `Init:<reason>` while they have not all completed.
    let init_statuses: Vec<&Value> = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut initializing = false;
    let mut sidecar_restarts = 0;
    for (i, c) in init_statuses.iter().enumerate() {
        note_restart(c, &mut restarts);
        if is_sidecar(c.get("name").and_then(Value::as_str)) {
            note_restart(c, &mut sidecar_restarts);
            if c.get("started").and_then(Value::as_bool) == Some(true)
                && c.get("ready").and_then(Value::as_bool) == Some(true)
            {
                ready += 1;
            }
            continue;
        }
        let terminated = c.pointer("/state/terminated");
        let waiting = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        match (terminated, waiting) {
            (Some(t), _) if t.get("exitCode").and_then(Value::as_i64) == Some(0) => continue,
            (Some(t), _) => {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => format!("Init:{r}"),
                    None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Init:Signal:{sig}"),
                        None => format!(
                            "Init:ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            }
            (None, Some(w)) => reason = format!("Init:{w}"),
            (None, None) => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }
    let initialized = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Initialized")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
    let mut has_running = false;
    // Until the init containers are done, the app containers' statuses say nothing yet.
    let show_containers = !initializing || initialized;
    if show_containers {
        restarts = sidecar_restarts;
    }
    for c in statuses.iter().rev().filter(|_| show_containers) {
        note_restart(c, &mut restarts);
        if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            reason = match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => r.to_string(),
                None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!(
                        "ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            };
        } else if c.pointer("/state/running").is_some()
            && c.get("ready").and_then(Value::as_bool) == Some(true)
        {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = "Terminating".into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let or_none = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age),
        json!(or_none(
            pod.pointer("/status/podIP").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/spec/nodeName").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/status/nominatedNodeName")
                .and_then(Value::as_str)
        )),
        json!("<none>"),
    ]
}

fn node_cells(node: &Value, name: String, age: String) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some(t))
            })
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |k: &str| {
        node.pointer(&format!("/status/nodeInfo/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    vec![
        json!(name),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age),
        json!(info("kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn age_of(ts: Option<&Value>, now: jiff::Timestamp) -> String {
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
pub fn human_duration(secs: i64) -> String {
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

/// PartialObjectMetadata for a row's `object`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// What each Table row carries as its `object`: the `includeObject` query parameter, as
/// Kubernetes' TableOptions define it (kubectl asks for `Object` to `--sort-by` a field
/// outside the metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the parameter (unset is `Metadata`); anything else is the message of a 400.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }

    fn row(self, cells: Vec<Value>, obj: &Value) -> Value {
        match self {
            IncludeObject::None => json!({"cells": cells}),
            IncludeObject::Metadata => json!({"cells": cells, "object": partial_metadata(obj)}),
            IncludeObject::Object => json!({"cells": cells, "object": obj}),
        }
    }
}

/// A Table of `objects` at list revision `rv`, each row's `object` as `include` says.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    rv: &str,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| include.row(cells(rt, o, now), o))
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = Value::Array(columns(rt));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn include_object_table() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}});
        let cases = [
            (None, Ok(Some("PartialObjectMetadata"))),
            (Some("Metadata"), Ok(Some("PartialObjectMetadata"))),
            (Some("Object"), Ok(Some("Pod"))),
            (Some("None"), Ok(None)),
            (Some("object"), Err(())),
        ];
        for (param, want) in cases {
            let got = IncludeObject::parse(param).map_err(|_| ()).map(|include| {
                let t = table(pods, std::slice::from_ref(&pod), "1", true, include);
                t["rows"][0]
                    .get("object")
                    .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
            });
            assert_eq!(got, want.map(|k| k.map(str::to_string)), "{param:?}");
        }
        let t = table(
            pods,
            std::slice::from_ref(&pod),
            "1",
            true,
            IncludeObject::Object,
        );
        assert_eq!(t["rows"][0]["object"]["status"]["phase"], "Running");
    }

    #[test]
    fn human_duration_table() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (24 * 3600 * 30, "30d"),
            (24 * 3600 * 800, "2y70d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let now = "2026-01-01T00:01:00Z".parse().unwrap();
        for rt in resources::RESOURCES {
            let obj =
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
            assert_eq!(cells(rt, &obj, now).len(), columns(rt).len(), "{}", rt.kind);
        }
    }

    #[test]
    fn workload_and_service_cells_table() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let find = |g: &str, p: &str| {
            resources::RESOURCES
                .iter()
                .find(|r| r.group == g && r.plural == p)
                .unwrap()
        };
        let cases = vec![
            (
                find("apps", "deployments"),
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                vec![json!("web"), json!("2/3"), json!(3), json!(2)],
            ),
            (
                find("", "services"),
                json!({"metadata": {"name": "svc"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
                vec![
                    json!("svc"),
                    json!("NodePort"),
                    json!("10.43.0.9"),
                    json!("<none>"),
                    json!("80:30080/TCP"),
                ],
            ),
            (
                find("batch", "jobs"),
                json!({"metadata": {"name": "j"}, "spec": {"completions": 2}, "status": {"succeeded": 2, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:30Z", "conditions": [{"type": "Complete", "status": "True"}]}}),
                vec![json!("j"), json!("Complete"), json!("2/2"), json!("30s")],
            ),
            (
                find("", "endpoints"),
                json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "a"}, {"ip": "b"}], "ports": [{"port": 80}, {"port": 81}]}]}),
                vec![json!("e"), json!("a:80,a:81,b:80 + 1 more...")],
            ),
        ];
        for (rt, obj, want) in cases {
            let got = cells(rt, &obj, now);
            assert_eq!(&got[..want.len()], &want[..], "{}", rt.kind);
        }
    }

    #[test]
    fn pod_status_column_table() {
        let rt = resources::find("", "v1", "pods").unwrap();
        let base = |status: Value| json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "c"}]}, "status": status});
        let cases = vec![
            (json!({"phase": "Pending"}), "0/1", "Pending"),
            (
                json!({"phase": "Pending", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
                "0/1",
                "ErrImagePull",
            ),
            (
                json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                "1/1",
                "Running",
            ),
            (
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                "0/1",
                "Completed",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
                "0/1",
                "ExitCode:3",
            ),
        ];
        let now = "2026-01-01T00:01:00Z".parse().unwrap();
        // An init container, then a sidecar (restartable init container), then the app.
        let with_inits = |status: Value| json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"initContainers": [{"name": "i"}, {"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}, "status": status});
        let waiting = |name: &str, reason: &str| json!({"name": name, "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}});
        let init_cases = vec![
            (
                json!({"phase": "Pending", "initContainerStatuses": [waiting("i", "PodInitializing"), waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:0/2",
            ),
            (
                json!({"phase": "Pending", "initContainerStatuses": [waiting("i", "ErrImagePull"), waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:ErrImagePull",
            ),
            (
                json!({"phase": "Failed", "initContainerStatuses": [{"name": "i", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}, waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:Error",
            ),
            (
                json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}], "initContainerStatuses": [{"name": "i", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, {"name": "s", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}], "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                "2/2",
                "Running",
            ),
        ];
        for (status, ready, want) in init_cases {
            let c = cells(rt, &with_inits(status.clone()), now);
            assert_eq!(
                (
                    c[1].as_str().unwrap(),
                    c[2].as_str().unwrap(),
                    c[3].as_str().unwrap()
                ),
                (ready, want, if want == "Running" { "1" } else { "0" }),
                "{status}"
            );
        }
        for (status, ready, want) in cases {
            let c = cells(rt, &base(status.clone()), now);
            assert_eq!(
                (
                    c[1].as_str().unwrap(),
                    c[2].as_str().unwrap(),
                    c[4].as_str().unwrap()
                ),
                (ready, want, "60s"),
                "{status}"
            );
        }
    }
}
