//! Network rules shared by the config checks, the server's guards and the
//! CLI: what counts as loopback, and which upstream URLs are acceptable.

use std::net::IpAddr;

use url::Url;

/// True when `ip` is a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Upstream URLs must be https, or plain http to a loopback host only.
pub fn check_upstream_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(url) => Ok(()),
        "http" => Err(format!(
            "plain http is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost), not {:?}; use https",
            url.host_str().unwrap_or("")
        )),
        s => Err(format!("unsupported URL scheme {s:?}; use https")),
    }
}

/// A URL whose host is a loopback address or `localhost`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rules() {
        assert!(is_loopback("127.0.0.2".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
        let ok = |u: &str| check_upstream_url(&Url::parse(u).unwrap());
        assert!(ok("https://idp.example.com").is_ok());
        assert!(
            ok("http://127.0.0.1:1").is_ok()
                && ok("http://localhost").is_ok()
                && ok("http://[::1]").is_ok()
        );
        assert!(ok("http://idp.example.com").is_err());
        assert!(ok("ftp://x").is_err());
    }
}
