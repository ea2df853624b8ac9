//! The SSRF guard: which addresses a webhook may not reach, a DNS resolver that enforces it
//! on the addresses actually connected to, and the check of IP-literal URLs (which the HTTP
//! client connects to without asking the resolver).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Where a refusal points the operator.
const SETTING: &str = "(webhooks.allow_private_targets = false)";

/// Whether a webhook may not be sent to `ip`: loopback, private (10/8, 172.16/12,
/// 192.168/16), shared CGNAT (100.64/10), link-local (169.254/16, fe80::/10), multicast,
/// unspecified, broadcast, reserved (240/4), documentation and benchmarking ranges, IETF
/// protocol assignments (192.0.0/24), IPv6 unique-local (fc00::/7) and site-local
/// (fec0::/10). IPv6 addresses that embed an IPv4 one (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged by that IPv4 address.
///
/// The dispatcher refuses such targets unless `webhooks.allow_private_targets` is set; the
/// server may also use this to refuse an obviously private URL when an endpoint is created.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    forbidden_kind(ip).is_some()
}

/// What kind of forbidden address `ip` is (`"a loopback address"`), or `None` when allowed.
pub(crate) fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        _ if ip.is_broadcast() => "a broadcast address",
        (0, _, _) => "an unspecified address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (169, 254, _) => "a link-local address",
        (192, 0, 0) => "an IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    };
    Some(kind)
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Addresses that carry an IPv4 address in their low 32 bits reach that address (mapped,
    // compatible) or are translated to it (NAT64 well-known prefix): judge the IPv4 one.
    let embedded = || Ipv4Addr::from(((u32::from(seg[6])) << 16) | u32::from(seg[7]));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_kind(embedded());
    }
    let kind = match seg[0] {
        s if s & 0xfe00 == 0xfc00 => "a unique-local address",
        s if s & 0xffc0 == 0xfe80 => "a link-local address",
        s if s & 0xffc0 == 0xfec0 => "a site-local address",
        s if s & 0xff00 == 0xff00 => "a multicast address",
        0x2001 if seg[1] == 0x0db8 => "a documentation address",
        _ => return None,
    };
    Some(kind)
}

/// A target the guard refused; its text is what the attempt records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Refuses a URL whose host is a forbidden IP literal. Host names pass: the resolver checks
/// what they resolve to.
///
/// # Errors
/// [`Refused`] naming the address and its kind.
pub(crate) fn check_literal(url: &Url) -> Result<(), Refused> {
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    // The URL parser has already normalised IPv4 spellings (`2130706433`, `0x7f.1`) to
    // dotted quads, and writes IPv6 literals in brackets.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = bare.parse::<IpAddr>() else {
        return Ok(());
    };
    match forbidden_kind(ip) {
        Some(kind) => Err(Refused(format!("refused: {ip} is {kind} {SETTING}"))),
        None => Ok(()),
    }
}

/// The resolver used when private targets are not allowed: the system resolver, minus the
/// forbidden addresses. A name with only forbidden addresses fails with [`Refused`], so the
/// client never connects to them, whatever the DNS answered at creation time.
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|a| forbidden_kind(a.ip()).is_none());
            if allowed.is_empty() {
                if refused.is_empty() {
                    return Err(format!("{host} resolved to no address").into());
                }
                let list = refused
                    .iter()
                    .map(|a| {
                        let ip = a.ip();
                        format!("{ip} ({})", forbidden_kind(ip).unwrap_or("forbidden"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(Refused(format!(
                    "refused: {host} resolves only to forbidden addresses: {list} {SETTING}"
                ))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_v4() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_forbidden_ip(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn allowed_v4() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
        ] {
            assert!(!is_forbidden_ip(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn forbidden_v6() {
        for s in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::192.168.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden_ip(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn allowed_v6() {
        for s in [
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "fbff::1",
            "fe00::1",
        ] {
            assert!(!is_forbidden_ip(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn literal_urls() {
        let check = |u: &str| check_literal(&Url::parse(u).unwrap());
        for u in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]:9/",
            "https://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let e = check(u).unwrap_err();
            assert!(e.to_string().starts_with("refused: "), "{u}: {e}");
            assert!(e.to_string().ends_with(SETTING), "{u}: {e}");
        }
        assert_eq!(
            check("http://127.0.0.1/").unwrap_err().to_string(),
            "refused: 127.0.0.1 is a loopback address (webhooks.allow_private_targets = false)"
        );
        for u in [
            "http://8.8.8.8/",
            "http://[2001:4860:4860::8888]/",
            "http://localhost/",
            "http://example.com/",
        ] {
            assert!(check(u).is_ok(), "{u}");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_localhost() {
        let name: Name = "localhost".parse().unwrap();
        let err = match GuardedResolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        let refused = err.downcast_ref::<Refused>().expect("a Refused error");
        assert!(
            refused
                .to_string()
                .starts_with("refused: localhost resolves only to forbidden addresses: "),
            "{refused}"
        );
    }
}
