//! Where a pod's outbound HTTP may connect. A pod's allow-list (`skiff.dev/allowed-outbound-hosts`)
//! names hosts; what those names resolve to is checked here, after resolution, so that no
//! pattern (`*` included) and no DNS answer leads a guest to the node itself or the control
//! plane: loopback, unspecified, link-local (cloud metadata services) and multicast addresses,
//! and the node's and API server's own addresses, are refused. Plain HTTP then connects to the
//! address that was checked (no second resolution to rebind).

use std::net::{IpAddr, SocketAddr};

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
}
