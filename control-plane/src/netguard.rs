//! Outbound requests on a caller's behalf — sources fetched by URL, webhooks, a caller's S3
//! endpoint — go only to public addresses over https, unless the operator's allow-list
//! (`KILN_URL_ALLOWLIST`: CIDRs, IP addresses or host names) names the destination; an
//! allow-listed destination may also use plain http (internal services often have no TLS).
//!
//! The check happens where it cannot be bypassed: the HTTP client resolves names through
//! [`GuardedResolver`], which drops non-public addresses before connecting (so a name that
//! resolves to 10.0.0.5, or re-resolves to it later, never gets a connection), IP literals
//! are checked before any request, and every redirect hop is checked again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;

/// Addresses that are never "public": loopback, private, link-local, CGNAT, multicast,
/// documentation and other special-purpose ranges (IANA registries), v4 and v6.
const SPECIAL: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Whether `ip` is an ordinary public unicast address. v4-mapped, NAT64 and 6to4 v6 addresses
/// are judged by the v4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if s[0] == 0x2002 {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else {
                ip
            }
        }
        v4 => v4,
    };
    !SPECIAL
        .iter()
        .map(|n| n.parse::<IpNet>().expect("literal network"))
        .any(|n| n.contains(&ip))
}

/// Where outbound requests may go.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl UrlPolicy {
    /// Parse a comma-separated allow-list of CIDRs, IP addresses and host names.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut p = Self::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                p.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                p.nets.push(IpNet::from(ip));
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                p.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "KILN_URL_ALLOWLIST entry {item:?} is not a CIDR, address or host name"
                ));
            }
        }
        Ok(p)
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    fn ip_listed(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether a connection to `ip` (reached through host name `host`) is allowed.
    pub fn ip_allowed(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.ip_listed(ip) || self.host_listed(host)
    }

    /// Check a URL before anything is sent: https (or http to an allow-listed destination),
    /// no credentials in it, and an IP-literal host must be allowed. Host names are checked
    /// again at connection time by the resolver.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("URL {raw:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with credentials in them are not accepted".into());
        }
        let literal = host.parse::<IpAddr>().ok();
        let listed = self.host_listed(&host) || literal.is_some_and(|ip| self.ip_listed(ip));
        match url.scheme() {
            "https" => {}
            "http" if listed => {}
            s => {
                return Err(format!(
                    "only https URLs are accepted (got {s}://); plain http only to destinations in KILN_URL_ALLOWLIST"
                ))
            }
        }
        if let Some(ip) = literal {
            if !self.ip_allowed(&host, ip) {
                return Err(format!(
                    "{ip} is not a public address; Kiln does not send requests into private networks unless KILN_URL_ALLOWLIST allows it"
                ));
            }
        }
        Ok(url)
    }

    /// An HTTP client that connects only where this policy allows, follows at most 5
    /// redirects (each checked), uses no proxy from the environment, and gives up after
    /// `timeout`.
    pub fn client(self: &Arc<Self>, timeout: Duration) -> reqwest::Client {
        let redirects = {
            let policy = self.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if let Err(e) = policy.check(attempt.url().as_str()) {
                    attempt.error(e)
                } else {
                    attempt.follow()
                }
            })
        };
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(self.clone())))
            .redirect(redirects)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .user_agent(concat!("Kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client configuration")
    }

    /// Resolve `host` now and refuse it if any address it has is not allowed (for clients
    /// Kiln cannot give its resolver, such as the S3 client).
    pub async fn check_host_now(&self, host: &str, port: u16) -> Result<(), String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        match addrs.iter().find(|a| !self.ip_allowed(host, a.ip())) {
            Some(a) => Err(format!(
                "{host} resolves to {}, which is not a public address",
                a.ip()
            )),
            None => Ok(()),
        }
    }
}

/// Name resolution that drops every address the policy does not allow.
struct GuardedResolver(Arc<UrlPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.ip_allowed(&host, a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address; Kiln does not send requests into private networks unless KILN_URL_ALLOWLIST allows it"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_special_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn url_checks() {
        let p = UrlPolicy::default();
        assert!(p.check("https://example.com/a.mp4").is_ok());
        assert!(p.check("https://8.8.8.8/x").is_ok());
        for bad in [
            "http://example.com/a.mp4",
            "ftp://example.com/a",
            "file:///etc/passwd",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://user:pw@example.com/",
            "https://10.0.0.1:8443/",
            "not a url",
        ] {
            assert!(p.check(bad).is_err(), "{bad}");
        }
        let p = UrlPolicy::parse("127.0.0.0/8, minio.internal,10.0.0.7").unwrap();
        assert!(p.check("http://127.0.0.1:9000/x").is_ok());
        assert!(p.check("http://minio.internal:9000/x").is_ok());
        assert!(p.check("https://10.0.0.7/").is_ok());
        assert!(p.check("https://10.0.0.8/").is_err());
        assert!(UrlPolicy::parse("not/a/cidr").is_err());
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        let p = Arc::new(UrlPolicy::default());
        let client = p.client(Duration::from_secs(5));
        // `localhost` passes the URL check (a name) but resolves only to loopback.
        let err = client.get("https://localhost:1/").send().await.unwrap_err();
        let chain = format!("{err:?}");
        assert!(chain.contains("no public address"), "{chain}");
        assert!(p.check_host_now("localhost", 443).await.is_err());
    }
}
