//! Leader election through Leases in `kube-system`, as client-go's leaderelection does for
//! kube-scheduler and kube-controller-manager: with several API servers on one etcd, the
//! scheduler and the controllers run on one server at a time.
//!
//! A candidate takes the Lease when it is free, its own, or expired; expiry is judged by *local*
//! observation (the record unchanged for `LEASE_DURATION` since this process first saw it), so
//! no clock difference between servers matters. The holder renews every `RETRY_PERIOD`; when it
//! has not renewed for `RENEW_DEADLINE` it stops its work before anyone else may take the Lease
//! (`RENEW_DEADLINE` < `LEASE_DURATION`), so no two servers act at once. On shutdown the holder
//! gives the Lease up at once. The identity is stable per data dir, so a restarted server takes
//! its own Lease back without waiting.
//! [`decide`] is pure and table-tested.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

/// kube-scheduler's and kube-controller-manager's `--leader-elect-lease-duration`.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// `--leader-elect-renew-deadline`.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// `--leader-elect-retry-period`.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Where the Leases live.
pub const NAMESPACE: &str = "kube-system";

/// What a candidate may do with the Lease it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create it (there is none).
    Create,
    /// Take it (free, ours, or expired).
    Take,
    /// Someone else holds it.
    Wait,
}

/// The candidate `me` sees `holder` (None: no Lease), unchanged for `unchanged` (by its own
/// clock). Pure.
pub fn decide(me: &str, holder: Option<&str>, exists: bool, unchanged: Duration) -> Decision {
    match (exists, holder) {
        (false, _) => Decision::Create,
        (true, None) | (true, Some("")) => Decision::Take,
        (true, Some(h)) if h == me => Decision::Take,
        (true, Some(_)) if unchanged >= LEASE_DURATION => Decision::Take,
        _ => Decision::Wait,
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One candidate for one Lease.
struct Candidate {
    api: Api<Lease>,
    name: String,
    me: String,
    /// The Lease record last seen (its resourceVersion) and when it was first seen so.
    observed: Option<(String, Instant)>,
}

impl Candidate {
    /// Try once to hold the Lease; true when this candidate holds it now.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "reading the leader Lease");
                return false;
            }
        };
        let rv = current
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .unwrap_or_default();
        let unchanged = match &self.observed {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                self.observed = Some((rv.clone(), Instant::now()));
                Duration::ZERO
            }
        };
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone());
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        match decide(&self.me, holder.as_deref(), current.is_some(), unchanged) {
            Decision::Wait => false,
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(NAMESPACE.into()),
                        ..Default::default()
                    },
                    spec: Some(spec(0, None)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .is_ok()
            }
            Decision::Take => {
                let Some(mut lease) = current else {
                    return false;
                };
                let old = lease.spec.clone().unwrap_or_default();
                let ours = old.holder_identity.as_deref() == Some(self.me.as_str());
                let transitions = old.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 };
                lease.spec = Some(spec(
                    transitions,
                    if ours { old.acquire_time } else { None },
                ));
                // The resourceVersion read is the precondition: of two candidates, one wins.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(l) => {
                        self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                        true
                    }
                    Err(e) => {
                        tracing::debug!(lease = %self.name, error = %e, "taking the leader Lease");
                        false
                    }
                }
            }
        }
    }

    /// Give the Lease up (on shutdown), so another server takes over at once.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}

/// Run `work` while `me` holds the Lease `name` (through `client`), stopping it when the Lease
/// is lost and contending again, until `stop`.
pub async fn run_elected<F, Fut>(
    client: kube::Client,
    name: &str,
    me: &str,
    stop: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut c = Candidate {
        api: Api::namespaced(client, NAMESPACE),
        name: name.to_string(),
        me: me.to_string(),
        observed: None,
    };
    loop {
        // Contend.
        loop {
            if c.try_acquire_or_renew().await {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = stop.cancelled() => return,
            }
        }
        tracing::info!(lease = %name, identity = %me, "became the leader");
        let working = stop.child_token();
        let task = tokio::spawn(work(working.clone()));
        let mut renewed = Instant::now();
        // Lead: renew until the deadline passes without a renewal, or shutdown.
        let lost = loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = stop.cancelled() => break false,
            }
            if c.try_acquire_or_renew().await {
                renewed = Instant::now();
            } else if renewed.elapsed() >= RENEW_DEADLINE {
                break true;
            }
        };
        working.cancel();
        let _ = task.await;
        if !lost {
            c.release().await;
            return;
        }
        tracing::warn!(lease = %name, identity = %me, "lost the leader Lease; stopped, contending again");
    }
}

/// This server's identity for leader election: `<host>_<random>`, kept in `DATA/server-id` so
/// a restarted server is the same candidate.
pub fn identity(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_string();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "skiff".into());
    let id = format!("{host}_{:016x}", rand::random::<u64>());
    if let Err(e) = std::fs::write(&path, &id) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the server's identity");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_decisions() {
        let s = Duration::from_secs;
        let cases = [
            (None, false, s(0), Decision::Create),
            (None, true, s(0), Decision::Take),
            (Some(""), true, s(0), Decision::Take),
            (Some("me"), true, s(0), Decision::Take),
            (Some("other"), true, s(3), Decision::Wait),
            (Some("other"), true, s(14), Decision::Wait),
            (Some("other"), true, s(15), Decision::Take),
        ];
        for (holder, exists, unchanged, want) in cases {
            assert_eq!(
                decide("me", holder, exists, unchanged),
                want,
                "{holder:?} {exists} {unchanged:?}"
            );
        }
        assert!(RENEW_DEADLINE < LEASE_DURATION);
    }
}
