//! The live API servers of a cluster, as kube-apiserver's lease endpoint reconciler keeps them:
//! every server holds an identity Lease `kube-system/apiserver-<hash of its identity>` (label
//! `apiserver.kubernetes.io/identity: kube-apiserver`, its address in the annotation
//! `skiff.dev/advertise-address`), renewed every `RENEW`, and makes the `default/kubernetes`
//! Endpoints and EndpointSlices list the address of every Lease that is alive.
//!
//! A Lease is alive while it changes: unchanged for `TTL` by this server's own clock (since it
//! first saw that version) it is dead, so no clock difference between machines matters; dead
//! for `FORGET` it is deleted (with its resourceVersion as precondition, so a server that came
//! back keeps its Lease). On shutdown a server deletes its Lease and takes itself out of the
//! Endpoints at once. Several servers reconcile the same objects; a conflict waits for the next
//! round. [`desired`] is pure and table-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

/// How often a server renews its Lease and reconciles the Endpoints.
pub const RENEW: Duration = Duration::from_secs(5);
/// A Lease unchanged this long belongs to a server that is gone (kube-apiserver's master lease
/// TTL).
pub const TTL: Duration = Duration::from_secs(15);
/// A dead Lease is deleted after this.
const FORGET: Duration = Duration::from_secs(300);
/// The label of identity Leases.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// The annotation with a server's `host:port`.
pub const ADDRESS_ANNOTATION: &str = "skiff.dev/advertise-address";
const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "kubernetes";
const MANAGED_BY: &str = "apiserver.skiff.dev";

/// The Lease name of a server identity (a DNS label, whatever the identity holds).
pub fn lease_name(identity: &str) -> String {
    let digest = sha2::Sha256::digest(identity.as_bytes());
    format!("apiserver-{}", hex::encode(&digest[..8]))
}

/// `host:port` (`[v6]:port`) into its parts.
fn split(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some((ip.to_string(), port.parse().ok()?))
}

/// What the Endpoints' subsets and the EndpointSlices must be for these live servers: one
/// subset and one slice per (address family, port); the first slice is `kubernetes`, the
/// others `kubernetes-<family>-<port>`. Pure.
pub fn desired(live: &[String]) -> (Vec<EndpointSubset>, Vec<EndpointSlice>) {
    let mut groups: BTreeMap<(&str, u16), BTreeSet<String>> = BTreeMap::new();
    for (host, port) in live.iter().filter_map(|a| split(a)) {
        let family = if host.contains(':') { "IPv6" } else { "IPv4" };
        groups.entry((family, port)).or_default().insert(host);
    }
    let subsets = groups
        .iter()
        .map(|((_, port), hosts)| EndpointSubset {
            addresses: Some(
                hosts
                    .iter()
                    .map(|h| EndpointAddress {
                        ip: h.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: i32::from(*port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .collect();
    let slices = groups
        .iter()
        .enumerate()
        .map(|(i, ((family, port), hosts))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(match i {
                    0 => SERVICE.to_string(),
                    _ => format!("{SERVICE}-{}-{port}", family.to_lowercase()),
                }),
                namespace: Some("default".into()),
                labels: Some(
                    [
                        ("kubernetes.io/service-name", SERVICE),
                        ("endpointslice.kubernetes.io/managed-by", MANAGED_BY),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            },
            address_type: family.to_string(),
            endpoints: hosts
                .iter()
                .map(|h| Endpoint {
                    addresses: vec![h.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![SlicePort {
                name: Some("https".into()),
                port: Some(i32::from(*port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        })
        .collect();
    (subsets, slices)
}

/// One server's view of the identity Leases.
pub struct Reconciler {
    leases: Api<Lease>,
    endpoints: Api<Endpoints>,
    slices: Api<EndpointSlice>,
    name: String,
    identity: String,
    address: String,
    /// Each Lease's resourceVersion last seen and when this server first saw it.
    observed: HashMap<String, (String, Instant)>,
}

impl Reconciler {
    /// For the server `identity` serving at `address` (`host:port`), through `client`.
    pub fn new(client: kube::Client, identity: &str, address: &str) -> Reconciler {
        Reconciler {
            leases: Api::namespaced(client.clone(), NAMESPACE),
            endpoints: Api::namespaced(client.clone(), "default"),
            slices: Api::namespaced(client, "default"),
            name: lease_name(identity),
            identity: identity.to_string(),
            address: address.to_string(),
            observed: HashMap::new(),
        }
    }

    /// Renew this server's Lease, then reconcile; errors wait for the next round.
    pub async fn round(&mut self) -> Result<(), kube::Error> {
        self.renew().await?;
        let live = self.live().await?;
        self.reconcile(&live).await
    }

    async fn renew(&self) -> Result<(), kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let mut lease = match self.leases.get_opt(&self.name).await? {
            Some(l) => l,
            None => Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(now.clone()),
                    ..Default::default()
                }),
            },
        };
        lease
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(IDENTITY_LABEL.into(), "kube-apiserver".into());
        lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ADDRESS_ANNOTATION.into(), self.address.clone());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(TTL.as_secs() as i32);
        spec.renew_time = Some(now);
        if lease.metadata.resource_version.is_some() {
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
        } else {
            self.leases.create(&PostParams::default(), &lease).await?;
        }
        Ok(())
    }

    /// The addresses of the live servers (this one included), and dead Leases forgotten.
    async fn live(&mut self) -> Result<Vec<String>, kube::Error> {
        let leases = self
            .leases
            .list(&ListParams::default().labels(&format!("{IDENTITY_LABEL}=kube-apiserver")))
            .await?;
        let now = Instant::now();
        let mut live = vec![self.address.clone()];
        let mut seen = HashMap::new();
        for lease in leases {
            let (Some(name), Some(rv)) = (lease.metadata.name, lease.metadata.resource_version)
            else {
                continue;
            };
            let since = match self.observed.get(&name) {
                Some((old, at)) if *old == rv => *at,
                _ => now,
            };
            seen.insert(name.clone(), (rv.clone(), since));
            let age = now.duration_since(since);
            if name == self.name || age < TTL {
                if let Some(a) = lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ADDRESS_ANNOTATION))
                {
                    live.push(a.clone());
                }
            } else if age >= FORGET {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(rv),
                        uid: None,
                    }),
                    ..Default::default()
                };
                let _ = self.leases.delete(&name, &dp).await;
            }
        }
        self.observed = seen;
        live.sort();
        live.dedup();
        Ok(live)
    }

    /// Make the Endpoints and EndpointSlices list `live`.
    async fn reconcile(&self, live: &[String]) -> Result<(), kube::Error> {
        let (subsets, slices) = desired(live);
        let mut endpoints = match self.endpoints.get_opt(SERVICE).await? {
            Some(e) => e,
            None => Endpoints {
                metadata: ObjectMeta {
                    name: Some(SERVICE.into()),
                    labels: Some(
                        [(
                            "endpointslice.kubernetes.io/skip-mirror".to_string(),
                            "true".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        if endpoints.subsets.as_ref() != Some(&subsets) {
            endpoints.subsets = Some(subsets);
            if endpoints.metadata.resource_version.is_some() {
                self.endpoints
                    .replace(SERVICE, &PostParams::default(), &endpoints)
                    .await?;
            } else {
                self.endpoints
                    .create(&PostParams::default(), &endpoints)
                    .await?;
            }
        }
        let stored = self
            .slices
            .list(&ListParams::default().labels(&format!(
                "kubernetes.io/service-name={SERVICE},endpointslice.kubernetes.io/managed-by={MANAGED_BY}"
            )))
            .await?;
        let mut by_name: HashMap<String, EndpointSlice> = stored
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        for want in slices {
            let name = want.metadata.name.clone().unwrap_or_default();
            match by_name.remove(&name) {
                Some(mut have) => {
                    if have.address_type == want.address_type
                        && have.endpoints == want.endpoints
                        && have.ports == want.ports
                    {
                        continue;
                    }
                    have.address_type = want.address_type;
                    have.endpoints = want.endpoints;
                    have.ports = want.ports;
                    self.slices
                        .replace(&name, &PostParams::default(), &have)
                        .await?;
                }
                None => {
                    self.slices.create(&PostParams::default(), &want).await?;
                }
            }
        }
        for name in by_name.into_keys() {
            self.slices.delete(&name, &DeleteParams::default()).await?;
        }
        Ok(())
    }

    /// Leave: delete this server's Lease and take it out of the Endpoints.
    pub async fn leave(&mut self) {
        let _ = self
            .leases
            .delete(&self.name, &DeleteParams::default())
            .await;
        match self.live().await {
            Ok(mut live) => {
                live.retain(|a| *a != self.address);
                if let Err(e) = self.reconcile(&live).await {
                    tracing::debug!(error = %e, "leaving the kubernetes Endpoints");
                }
            }
            Err(e) => tracing::debug!(error = %e, "leaving the kubernetes Endpoints"),
        }
    }
}

/// Keep this server's Lease and the Endpoints current until `stop`, then leave.
pub async fn run(mut reconciler: Reconciler, stop: CancellationToken) {
    loop {
        if let Err(e) = reconciler.round().await {
            tracing::debug!(error = %e, "reconciling the kubernetes Endpoints");
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            _ = stop.cancelled() => break,
        }
    }
    reconciler.leave().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_list_every_live_server_by_family_and_port() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str, &'a [&'a str])]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&["10.0.0.1:6443"], &[("kubernetes", "IPv4", &["10.0.0.1"])]),
            (
                &["10.0.0.2:6443", "10.0.0.1:6443", "10.0.0.3:6443"],
                &[("kubernetes", "IPv4", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])],
            ),
            (
                &["127.0.0.1:7001", "127.0.0.1:7000"],
                &[
                    ("kubernetes", "IPv4", &["127.0.0.1"]),
                    ("kubernetes-ipv4-7001", "IPv4", &["127.0.0.1"]),
                ],
            ),
            (
                &[
                    "[::1]:6443",
                    "10.0.0.1:6443",
                    "not-an-address",
                    "10.0.0.9:port",
                ],
                &[
                    ("kubernetes", "IPv4", &["10.0.0.1"]),
                    ("kubernetes-ipv6-6443", "IPv6", &["::1"]),
                ],
            ),
        ];
        for (live, want) in cases {
            let live: Vec<String> = live.iter().map(|s| s.to_string()).collect();
            let (subsets, slices) = desired(&live);
            assert_eq!(subsets.len(), want.len(), "{live:?}");
            let got: Vec<(String, String, Vec<String>)> = slices
                .iter()
                .map(|s| {
                    (
                        s.metadata.name.clone().unwrap_or_default(),
                        s.address_type.clone(),
                        s.endpoints.iter().map(|e| e.addresses[0].clone()).collect(),
                    )
                })
                .collect();
            let want: Vec<(String, String, Vec<String>)> = want
                .iter()
                .map(|(n, f, a)| {
                    (
                        n.to_string(),
                        f.to_string(),
                        a.iter().map(|s| s.to_string()).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{live:?}");
        }
    }

    #[test]
    fn lease_names_are_dns_labels() {
        for id in ["host_00ff", "UPPER case/and:odd", ""] {
            let name = lease_name(id);
            assert!(name.starts_with("apiserver-"));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert_eq!(name, lease_name(id));
        }
    }
}
