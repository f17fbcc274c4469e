//! Where a pod's outbound HTTP may go: `Outbound` is the policy object of one run or request.
//! In-cluster names (Services, pods) go through the node's gateway in process; hosts the pod's
//! allow-list (`skiff.dev/allowed-outbound-hosts`, `HostPattern`) names go out; the rest is
//! denied with an event. What allowed names resolve to is checked after resolution, so that no
//! pattern (`*` included) and no DNS answer leads a guest to the node itself or the control
//! plane: loopback, unspecified, link-local (cloud metadata services) and multicast addresses,
//! and the node's and API server's own addresses, are refused. Plain HTTP then connects to the
//! address that was checked (no second resolution to rebind). NetworkPolicy egress rules apply
//! on top: to in-cluster calls in the gateway, to outside calls here, on the checked address.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiHttpHooks;

use crate::gateway::{classify_host, split_host_port, Caller, Gateway, HostTarget, Origin};
use crate::netpolicy::PodInfo;
use crate::runtime::OutboundResult;

/// Pod annotation: hosts outbound HTTP may reach (comma separated: `host`, `host:port`,
/// `*.example.com`, `*`).
pub const ALLOWED_OUTBOUND_ANNOTATION: &str = "skiff.dev/allowed-outbound-hosts";

/// Is `ip` one that a pod must never reach by outbound HTTP? `own` holds the node's and the
/// control plane's addresses. Pure.
pub fn is_protected(ip: IpAddr, own: &[IpAddr]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                // 0.0.0.0/8 reaches this host on Linux.
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    special || own.contains(&ip)
}

/// Resolve `host:port` and return the first address a pod may reach, or why none may be
/// reached. `own`: the node's and control plane's addresses (`None`: the admin lets this pod
/// reach them for this host).
pub async fn destination(
    host: &str,
    port: u16,
    own: Option<&[IpAddr]>,
) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    // Any protected answer refuses the name outright: a name that resolves to both a public
    // and a protected address is one a rebinding attack would use.
    if let Some(bad) = own.and_then(|own| addrs.iter().find(|a| is_protected(a.ip(), own))) {
        return Err(format!(
            "outbound HTTP to {host}:{port} denied: it resolves to {}, an address of the node or the control plane",
            bad.ip()
        ));
    }
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("resolving {host}: no address"))
}

/// A host pattern of `skiff.dev/allowed-outbound-hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parse the annotation's comma-separated list.
    pub fn parse_list(list: &str) -> Vec<HostPattern> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s
                    .strip_prefix("http://")
                    .or_else(|| s.strip_prefix("https://"))
                    .unwrap_or(s);
                let (h, p) = split_host_port(s);
                HostPattern {
                    host: h.to_ascii_lowercase(),
                    port: p,
                }
            })
            .collect()
    }

    /// Does this pattern name `host:port` itself (no wildcard)?
    pub fn names_exactly(&self, host: &str, port: u16) -> bool {
        !self.host.contains('*') && self.host == host && self.port.is_none_or(|p| p == port)
    }

    /// Does this pattern allow `host:port`?
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.host == "*" {
            return true;
        }
        match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|h| h.ends_with('.') && h.len() > 1),
            None => self.host == host,
        }
    }
}

/// Outbound HTTP of one pod: in-cluster names go through the gateway, allowed hosts go out,
/// the rest is denied (the guest gets `HTTP-request-denied`, the pod an event).
pub struct Outbound {
    gateway: Weak<Gateway>,
    caller: Arc<Caller>,
    allowed: Arc<Vec<HostPattern>>,
}

/// Event reason of an outbound call to a host the pod does not allow.
pub const DENIED_REASON: &str = "OutboundDenied";

impl Outbound {
    /// A policy factory for `pod` allowing `allowed`; denials (event reason, message) are sent
    /// to `denied`.
    pub fn factory(
        gateway: &Arc<Gateway>,
        pod: PodInfo,
        allowed: Vec<HostPattern>,
        denied: tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
    ) -> crate::runtime::OutboundFactory {
        let gateway = Arc::downgrade(gateway);
        let caller = Arc::new(Caller { pod, denied });
        let allowed = Arc::new(allowed);
        Arc::new(move || {
            Box::new(Outbound {
                gateway: gateway.clone(),
                caller: caller.clone(),
                allowed: allowed.clone(),
            })
        })
    }
}

impl WasiHttpHooks for Outbound {
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        Some(http::uri::Scheme::HTTP)
    }

    fn send_request(
        &mut self,
        mut request: Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn std::future::Future<Output = OutboundResult> + Send> {
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let gateway = self.gateway.upgrade();
        let in_cluster = gateway.as_ref().and_then(|g| {
            let routes = g.routes();
            let exists = |ns: &str, n: &str| {
                routes
                    .services
                    .contains_key(&(ns.to_string(), n.to_string()))
            };
            match classify_host(&host, &self.caller.pod.namespace, &exists) {
                HostTarget::Service { namespace, name } => Some(format!("{name}.{namespace}.svc")),
                HostTarget::Pod { namespace, name } => Some(format!("{name}.{namespace}.pod")),
                HostTarget::Other(_) => None,
            }
        });
        if let (Some(gw), Some(qualified), false) = (gateway.clone(), in_cluster, https) {
            let caller = self.caller.clone();
            let authority = format!("{qualified}:{port}");
            if let Ok(v) = HeaderValue::from_str(&authority) {
                request.headers_mut().insert(http::header::HOST, v);
            }
            return Box::new(async move {
                let resp = gw
                    .route(
                        request,
                        IpAddr::from([127, 0, 0, 1]),
                        None,
                        Origin::Pod(caller),
                    )
                    .await;
                let io: Box<
                    dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send,
                > = Box::new(async { Ok(()) });
                Ok((resp, io))
            });
        }
        if self.allowed.iter().any(|p| p.allows(&host, port)) {
            // The node's own addresses only for a host the pod names exactly and the admin
            // allows (`--allow-local-outbound`); never through a wildcard.
            let named = self.allowed.iter().any(|p| p.names_exactly(&host, port));
            let own = match &gateway {
                Some(g) if named && g.local_allowed.contains(&host) => None,
                Some(g) => Some(g.protected.clone()),
                None => Some(Arc::default()),
            };
            let caller = self.caller.clone();
            return Box::new(async move {
                // What the name resolves to must not be the node or the control plane, whatever
                // the pattern allowed; plain HTTP then connects to the address checked.
                let addr = match crate::egress::destination(
                    &host,
                    port,
                    own.as_deref().map(Vec::as_slice),
                )
                .await
                {
                    Ok(a) => a,
                    Err(msg) => {
                        let _ = caller.denied.send((DENIED_REASON, msg));
                        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                    }
                };
                // NetworkPolicy egress rules, on the address that will be connected to.
                if let Some(gw) = &gateway {
                    if let Err(d) = gw.check_outside(&caller.pod, addr.ip(), port) {
                        let _ = caller
                            .denied
                            .send((crate::gateway::DENIED_REASON, d.message));
                        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                    }
                }
                if !https {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    if let Ok(uri) = format!("http://{addr}{path}").parse::<http::Uri>() {
                        *request.uri_mut() = uri;
                    }
                }
                let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                let io: Box<
                    dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send,
                > = Box::new(io);
                Ok((resp.map(|b| b.boxed_unsync()), io))
            });
        }
        let _ = self.caller.denied.send((DENIED_REASON, format!(
            "outbound HTTP to {host}:{port} denied: not a Service of the cluster and not in the pod's {ALLOWED_OUTBOUND_ANNOTATION} annotation"
        )));
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_table() {
        let own: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap()];
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.5.6.7", true),
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("::1", true),
            ("::", true),
            ("::ffff:127.0.0.1", true),
            ("169.254.169.254", true),
            ("fe80::1", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("192.168.1.10", true),
            ("::ffff:192.168.1.10", true),
            ("192.168.1.11", false),
            ("10.0.0.1", false),
            ("93.184.216.34", false),
            ("2001:db8::1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(is_protected(ip.parse().unwrap(), &own), *want, "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_the_node_are_refused() {
        for host in ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"] {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let err = destination(host, 6443, Some(&[])).await.unwrap_err();
            assert!(err.contains("denied"), "{host}: {err}");
            assert!(destination(host, 6443, None).await.is_ok(), "{host}");
        }
    }

    #[test]
    fn outbound_host_patterns() {
        let p =
            HostPattern::parse_list("api.example.com, *.github.io, localhost:8080 ,https://x.org");
        let allowed = |h: &str, port: u16| p.iter().any(|p| p.allows(h, port));
        let cases = [
            ("api.example.com", 443, true),
            ("api.example.com", 80, true),
            ("example.com", 443, false),
            ("x.github.io", 443, true),
            ("github.io", 443, false),
            ("localhost", 8080, true),
            ("localhost", 80, false),
            ("x.org", 443, true),
            ("evil.com", 80, false),
        ];
        for (h, port, want) in cases {
            assert_eq!(allowed(h, port), want, "{h}:{port}");
        }
        assert!(HostPattern::parse_list("*")[0].allows("anything", 1));
        assert!(HostPattern::parse_list("").is_empty());
    }
}
