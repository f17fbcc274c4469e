//! Services: defaults (type, session affinity, traffic policies, port protocol and target),
//! validation (DNS-1035 names, ports, node ports, types), the cluster IP that may not change,
//! the allocated addresses an update keeps, and the `kubectl get services` columns. The
//! addresses themselves are allocated by the registry ([`crate::api::registry`]).

use serde_json::{json, Map, Value};
use skiff_common::names::{is_dns1123_label, LABEL_MSG};

use super::print::{age_col, col, map_text, name_col};
use super::{ensure_object, entry, not_supported, str_at, Claim, Row, Strategy, Taken};
use crate::api::error::FieldCause;

/// The Service strategy.
pub(crate) struct Service;

/// The store resource of cluster IP claims (as Kubernetes' `IPAddress` objects).
pub(crate) const IP_CLAIMS: &str = "networking.k8s.io/ipaddresses";
/// The store resource of node port claims.
pub(crate) const NODE_PORT_CLAIMS: &str = "skiff.io/nodeports";

fn ip_claim(ip: &str) -> Claim {
    Claim {
        resource: IP_CLAIMS,
        name: ip.to_string(),
    }
}

fn port_claim(port: i64) -> Claim {
    Claim {
        resource: NODE_PORT_CLAIMS,
        name: port.to_string(),
    }
}

impl Strategy for Service {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default_service(ensure_object(obj, "spec"));
    }

    fn initial_status(&self) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn claim_resources(&self) -> &'static [&'static str] {
        &[IP_CLAIMS, NODE_PORT_CLAIMS]
    }

    fn claims(&self, obj: &Value) -> Vec<Claim> {
        let mut out = Vec::new();
        if str_at(obj, "/spec/type") == "ExternalName" {
            return out;
        }
        let ip = str_at(obj, "/spec/clusterIP");
        if !ip.is_empty() && ip != "None" {
            out.push(ip_claim(ip));
        }
        for p in obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                out.push(port_claim(n));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Give a Service its cluster IP and node ports when it needs them and has none; explicit
    /// ones must be free.
    fn allocate(&self, svc: &mut Value, taken: Taken<'_>) -> Result<(), FieldCause> {
        let kind = str_at(svc, "/spec/type").to_string();
        if kind == "ExternalName" {
            return Ok(());
        }
        let spec = ensure_object(svc, "spec");
        let ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
        if ip.is_empty() {
            let ip = (0..4096)
                .map(|_| {
                    let n = 2 + rand::random::<u16>() % 65000;
                    format!("10.43.{}.{}", n >> 8, n & 0xff)
                })
                .find(|ip| !taken(&ip_claim(ip)))
                .ok_or_else(|| {
                    FieldCause::invalid("spec.clusterIPs", "", "no free cluster IP in 10.43.0.0/16")
                })?;
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        } else if ip != "None" && taken(&ip_claim(ip)) {
            return Err(FieldCause::invalid(
                "spec.clusterIPs",
                ip,
                "failed to allocate IP: provided IP is already allocated",
            ));
        } else if !spec.contains_key("clusterIPs") {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        if kind != "NodePort" && kind != "LoadBalancer" {
            return Ok(());
        }
        let mut chosen = Vec::new();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for (i, p) in ports.iter_mut().enumerate() {
                match p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    Some(n) if taken(&port_claim(n)) => {
                        return Err(FieldCause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &n.to_string(),
                            "provided port is already allocated",
                        ))
                    }
                    Some(n) => chosen.push(n),
                    None => {
                        let n = (0..10000)
                            .map(|_| 30000 + i64::from(rand::random::<u16>() % 2768))
                            .find(|n| !taken(&port_claim(*n)) && !chosen.contains(n))
                            .ok_or_else(|| {
                                FieldCause::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    "",
                                    "no free node port in 30000-32767",
                                )
                            })?;
                        chosen.push(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_service(obj, obj.get("spec").unwrap_or(&Value::Null), causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str);
        let new_ip = new.pointer("/spec/clusterIP").and_then(Value::as_str);
        if old_ip.is_some_and(|o| !o.is_empty())
            && new_ip != old_ip
            && old.pointer("/spec/type") == new.pointer("/spec/type")
        {
            causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                new_ip.unwrap_or(""),
                "may not change once set",
            ));
        }
    }

    /// An update that leaves out a Service's allocated addresses keeps them (as Kubernetes does).
    fn carry_over(&self, old: &Value, new: &mut Value) {
        let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let missing = spec.get(k).is_none_or(|v| v.is_null() || v == "");
            if missing {
                if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                    spec.insert(k.into(), v.clone());
                }
            }
        }
        // Node ports belong to the types that use them: a change to ClusterIP drops them, as
        // Kubernetes drops type-dependent fields.
        let uses_node_ports = matches!(
            spec.get("type").and_then(Value::as_str),
            Some("NodePort" | "LoadBalancer")
        );
        if !uses_node_ports {
            return;
        }
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut() {
                if p.get("nodePort")
                    .is_some_and(|n| n.as_i64().unwrap_or(0) != 0)
                {
                    continue;
                }
                if let Some(np) = old_ports
                    .iter()
                    .find(|o| {
                        o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                    })
                    .and_then(|o| o.get("nodePort"))
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Type", "string", 0, "type determines how the Service is exposed."),
            col("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly by the master."),
            col("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
            age_col(),
            col("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
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
            json!(row.name),
            json!(s("/spec/type")),
            json!(ip),
            json!(external),
            json!(service_ports(obj)),
            json!(row.age),
            json!(map_text(obj.pointer("/spec/selector"))),
        ]
    }
}

fn default_service(spec: &mut Map<String, Value>) {
    let kind = entry(spec, "type", json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    entry(spec, "sessionAffinity", json!("None"));
    if kind != "ExternalName" {
        entry(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        entry(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            entry(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                entry(p, "targetPort", port);
            }
        }
    }
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn validate_service(obj: &Value, spec: &Value, causes: &mut Vec<FieldCause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !name.is_empty()
        && (!is_dns1123_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()))
    {
        causes.retain(|c| c.field != "metadata.name");
        causes.push(FieldCause::invalid("metadata.name", name, DNS1035_MSG));
    }
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !TYPES.contains(&kind) {
        causes.push(not_supported("spec.type".into(), kind, TYPES));
    }
    if kind == "ExternalName" {
        if spec
            .get("externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(FieldCause::required("spec.externalName"));
        }
        return;
    }
    if let Some(ip) = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        match ip.parse::<std::net::Ipv4Addr>() {
            Err(_) => causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
            Ok(addr) if addr.octets()[..2] != [10, 43] => causes.push(FieldCause::invalid(
                "spec.clusterIPs",
                ip,
                &format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
            )),
            Ok(_) => {}
        }
    }
    let ports = spec.get("ports").and_then(Value::as_array);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_none_or(Vec::is_empty) && !headless {
        causes.push(FieldCause::required("spec.ports"));
    }
    let ports = ports.cloned().unwrap_or_default();
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && pname.is_empty() {
            causes.push(FieldCause::required(format!("{at}.name")));
        } else if !pname.is_empty() {
            if !is_dns1123_label(pname) {
                causes.push(FieldCause::invalid(format!("{at}.name"), pname, LABEL_MSG));
            } else if names.contains(&pname) {
                causes.push(FieldCause::duplicate(format!("{at}.name"), pname));
            }
            names.push(pname);
        }
        match p.get("port").and_then(Value::as_i64) {
            None => causes.push(FieldCause::required(format!("{at}.port"))),
            Some(n) if !(1..=65535).contains(&n) => causes.push(FieldCause::invalid(
                format!("{at}.port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&proto) {
                causes.push(not_supported(
                    format!("{at}.protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => causes
                .push(FieldCause::invalid(
                    format!("{at}.targetPort"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
            Some(Value::String(s)) if s.is_empty() || s.len() > 15 => {
                causes.push(FieldCause::invalid(
                    format!("{at}.targetPort"),
                    s,
                    "must be no more than 15 characters",
                ))
            }
            _ => {}
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if kind == "ClusterIP" && np != 0 {
                causes.push(FieldCause::forbidden(
                    format!("{at}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if np != 0 && !(30000..=32767).contains(&np) {
                causes.push(FieldCause::invalid(
                    format!("{at}.nodePort"),
                    &np.to_string(),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
    if let Some(a) = spec.get("sessionAffinity").and_then(Value::as_str) {
        if !["None", "ClientIP"].contains(&a) {
            causes.push(not_supported(
                "spec.sessionAffinity".into(),
                a,
                &["ClientIP", "None"],
            ));
        }
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
