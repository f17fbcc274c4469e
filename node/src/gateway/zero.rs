//! Scale from zero (beyond Kubernetes): a request for a Service without ready endpoints is held
//! while the API server starts what stands behind it (`POST .../services/{name}/wake`: a
//! workload an HPA with `minReplicas: 0` has scaled to zero), and goes on as soon as the routing
//! table shows a ready endpoint.
//!
//! Invariants: one wake call per Service at a time, shared by every request held for it; at
//! most `MAX_HELD` requests held per Service (the next gets 503 at once); none held longer than
//! `HOLD_FOR` (then 503 saying so); a Service with nothing scaled to zero behind it answers 503
//! at once, as before (the refusal is remembered for a second).

use skiff_common::names::is_dns1123_subdomain;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use http::{Response, StatusCode};

use super::{text, Body, Gateway, Outstanding, Routes};

/// Requests held per Service.
pub const MAX_HELD: usize = 1024;
/// How long a refused wake is remembered.
const REFUSAL_KEPT: Duration = Duration::from_secs(1);
/// The longest a request is held.
pub const HOLD_FOR: Duration = Duration::from_secs(30);

/// A wake call in flight, shared by the requests held for one Service.
pub(super) type Waking = Shared<BoxFuture<'static, Result<(), String>>>;

/// (namespace, service).
type Key = (String, String);

fn has_ready(routes: &Routes, key: &Key) -> bool {
    routes
        .services
        .get(key)
        .is_some_and(|s| s.ports.iter().any(|p| p.endpoints.iter().any(|e| e.ready)))
}

impl Gateway {
    fn held_counter(&self, key: &Key) -> Arc<AtomicUsize> {
        match self.held.lock() {
            Ok(mut m) => m.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The wake call for `key`, started unless one is in flight.
    fn wake(self: &Arc<Self>, key: &Key) -> Waking {
        let Ok(mut m) = self.waking.lock() else {
            return futures::future::ready(Err("the gateway is shutting down".to_string()))
                .boxed()
                .shared();
        };
        if let Some(w) = m.get(key) {
            return w.clone();
        }
        let (gw, k) = (self.clone(), key.clone());
        let call = async move {
            let answer = match &gw.api {
                Some(api) if is_dns1123_subdomain(&k.0) && is_dns1123_subdomain(&k.1) => {
                    let path = format!("/api/v1/namespaces/{}/services/{}/wake", k.0, k.1);
                    match http::Request::post(path)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(b"{}".to_vec())
                    {
                        Ok(req) => match api.request_text(req).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(e)) => Err(e.message),
                            Err(e) => Err(format!("asking the API server to start it: {e}")),
                        },
                        Err(e) => Err(e.to_string()),
                    }
                }
                Some(_) => Err("not a Service name".to_string()),
                None => Err("nothing to start it".to_string()),
            };
            // A refusal is remembered for a second, so a Service with nothing to start behind
            // it costs the API server one call a second, not one per request.
            let forget = {
                let gw = gw.clone();
                move || {
                    if let Ok(mut m) = gw.waking.lock() {
                        m.remove(&k);
                    }
                }
            };
            if answer.is_ok() {
                forget();
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(REFUSAL_KEPT).await;
                    forget();
                });
            }
            answer
        }
        .boxed()
        .shared();
        m.insert(key.clone(), call.clone());
        call
    }

    /// Hold a request for Service `ns/name` until it has a ready endpoint (the routing table
    /// then), or the 503 that says why not.
    pub(super) async fn hold_for(
        self: &Arc<Self>,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Routes>, Response<Body>> {
        let key = (ns.to_string(), name.to_string());
        let count = self.held_counter(&key);
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_HELD {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service {ns}/{name} is starting from zero and holds {MAX_HELD} requests already"),
            ));
        }
        let _held = Outstanding(count);
        let mut changed = self.routes_changed.subscribe();
        let mut waking = Some(self.wake(&key));
        let deadline = tokio::time::Instant::now() + HOLD_FOR;
        loop {
            let routes = self.routes();
            if has_ready(&routes, &key) {
                return Ok(routes);
            }
            tokio::select! {
                answer = async {
                    match &waking {
                        Some(w) => w.clone().await,
                        None => futures::future::pending().await,
                    }
                }, if waking.is_some() => {
                    match answer {
                        Ok(()) => waking = None,
                        Err(why) => return Err(text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("service {ns}/{name} has no ready endpoints ({why})"),
                        )),
                    }
                }
                moved = changed.changed() => {
                    if moved.is_err() {
                        tokio::time::sleep_until(deadline).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("service {ns}/{name} was scaled to zero and had no ready endpoint within {} s", HOLD_FOR.as_secs()),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_go_into_the_wake_path() {
        for (name, ok) in [
            ("web", true),
            ("web-1.v2", true),
            ("", false),
            ("../pods", false),
            ("a/b", false),
            ("Web", false),
            ("a..b", false),
            (".a", false),
            ("a?b=c", false),
        ] {
            assert_eq!(is_dns1123_subdomain(name), ok, "{name}");
        }
    }
}
