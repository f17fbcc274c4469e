//! CertificateSigningRequests (certificates.k8s.io/v1): a PEM certificate request, a signer
//! name, known key usages, a spec that never changes, approval and status through their
//! subresources, and the `kubectl get csr` columns. Signing is `controllers::csrsigning`.

use base64::Engine as _;
use serde_json::{json, Value};

use super::print::{age_col, col, human_duration, name_col};
use super::{not_supported, str_at, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::validation::elements;

/// The key usages a request may ask for.
const USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// The CertificateSigningRequest strategy.
pub(crate) struct CertificateSigningRequest;

impl Strategy for CertificateSigningRequest {
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match spec.get("request").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required("spec.request")),
            Some(b64) => {
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if !pem.is_some_and(|p| p.contains("-----BEGIN CERTIFICATE REQUEST-----")) {
                    causes.push(FieldCause::invalid(
                        "spec.request",
                        "",
                        "PEM block type must be CERTIFICATE REQUEST",
                    ));
                }
            }
        }
        let signer = str_at(spec, "/signerName");
        if signer.is_empty() {
            causes.push(FieldCause::required("spec.signerName"));
        } else if !signer.contains('/') || signer.starts_with('/') || signer.ends_with('/') {
            causes.push(FieldCause::invalid(
                "spec.signerName",
                signer,
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            ));
        }
        for (i, u) in elements(spec.get("usages")) {
            let u = u.as_str().unwrap_or("");
            if !USAGES.contains(&u) {
                causes.push(not_supported(format!("spec.usages[{i}]"), u, USAGES));
            }
        }
        if let Some(s) = spec.get("expirationSeconds").and_then(Value::as_i64) {
            if s < 600 {
                causes.push(FieldCause::invalid(
                    "spec.expirationSeconds",
                    &s.to_string(),
                    "may not specify a duration less than 600 seconds (10 minutes)",
                ));
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old.get("spec") != new.get("spec") {
            causes.push(FieldCause::invalid("spec", "", "field is immutable"));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            age_col(),
            col(
                "SignerName",
                "string",
                0,
                "Name of the signer to sign the certificate.",
            ),
            col(
                "Requestor",
                "string",
                0,
                "Name of the user requesting the certificate.",
            ),
            col(
                "RequestedDuration",
                "string",
                0,
                "The requested duration of validity of the certificate.",
            ),
            col(
                "Condition",
                "string",
                0,
                "Condition of the request (Approved, Denied, Failed).",
            ),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let mut conditions: Vec<String> = elements(obj.pointer("/status/conditions"))
            .filter(|(_, c)| c.get("status").and_then(Value::as_str) != Some("False"))
            .filter_map(|(_, c)| c.get("type").and_then(Value::as_str).map(str::to_string))
            .collect();
        if obj.pointer("/status/certificate").is_some_and(|c| c != "") {
            conditions.push("Issued".into());
        }
        let condition = if conditions.is_empty() {
            "Pending".to_string()
        } else {
            conditions.join(",")
        };
        let duration = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map_or("<none>".to_string(), human_duration);
        vec![
            json!(row.name),
            json!(row.age),
            json!(str_at(obj, "/spec/signerName")),
            json!(str_at(obj, "/spec/username")),
            json!(duration),
            json!(condition),
        ]
    }
}
