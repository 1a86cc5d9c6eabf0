//! `ports:` and `expose:` entries, short and long syntax, ranges expanded.

use std::net::IpAddr;

use super::raw;
use super::spec::{Port, Protocol};

const FORMS: &str = "use forms like `8080:80`, `127.0.0.1:8080:80/udp` or `80`";

/// `[HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]`, where ports may be ranges of equal length.
pub(crate) fn parse_short(entry: &str) -> Result<Vec<Port>, String> {
    let not_a_mapping = || format!("`{entry}` is not a port mapping ({FORMS})");
    let (spec, protocol) = match entry.rsplit_once('/') {
        Some((spec, proto)) => (spec, protocol(proto)?),
        None => (entry, Protocol::Tcp),
    };
    // The container port is last and the host port before it; whatever comes first is the
    // host IP, which may itself contain `:` (IPv6, bracketed or not).
    let mut parts = spec.rsplitn(3, ':');
    let target = parts.next().ok_or_else(not_a_mapping)?;
    let published = parts.next();
    let host_ip = match parts.next() {
        Some(ip) => Some(host_ip(ip)?),
        None => None,
    };
    let targets = range(target).map_err(|_| not_a_mapping())?;
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(range(p).map_err(|_| not_a_mapping())?),
    };
    match published {
        None => Ok(targets
            .map(|target| Port {
                host_ip: host_ip.clone(),
                published: None,
                published_end: None,
                target,
                protocol,
            })
            .collect()),
        // A host range for one container port: any free port of the range.
        Some(published) if targets.len() == 1 && published.len() > 1 => Ok(vec![Port {
            host_ip,
            published: Some(*published.start()),
            published_end: Some(*published.end()),
            target: *targets.start(),
            protocol,
        }]),
        Some(published) => {
            if published.len() != targets.len() {
                return Err(format!(
                    "`{entry}` maps {} host ports to {} container ports; give one host port per container port, or a range of host ports for a single container port",
                    published.len(),
                    targets.len()
                ));
            }
            Ok(published
                .zip(targets)
                .map(|(p, target)| Port {
                    host_ip: host_ip.clone(),
                    published: Some(p),
                    published_end: None,
                    target,
                    protocol,
                })
                .collect())
        }
    }
}

/// `{target, published, host_ip, protocol}`.
pub(crate) fn parse_long(long: &raw::Port) -> Result<Port, String> {
    let target = check(long.target.0)?;
    let (published, published_end) = match &long.published {
        None => (None, None),
        Some(raw::Scalar(p)) if p.is_empty() => (None, None),
        Some(raw::Scalar(p)) => {
            let ports = range(p).map_err(|_| {
                format!(
                    "`published: {p}` is not a port number or a range (like `8080` or `6005-6015`)"
                )
            })?;
            let end = (ports.end() != ports.start()).then_some(*ports.end());
            (Some(*ports.start()), end)
        }
    };
    let host_ip = match &long.host_ip {
        Some(ip) => Some(host_ip(ip)?),
        None => None,
    };
    let protocol = match &long.protocol {
        Some(p) => protocol(p)?,
        None => Protocol::Tcp,
    };
    Ok(Port {
        host_ip,
        published,
        published_end,
        target,
        protocol,
    })
}

/// `80`, `80/udp` or `8000-8010` → `80/tcp`, … one per port.
pub(crate) fn parse_expose(entry: &str) -> Result<Vec<String>, String> {
    let (spec, protocol) = match entry.rsplit_once('/') {
        Some((spec, proto)) => (spec, protocol(proto)?),
        None => (entry, Protocol::Tcp),
    };
    let ports = range(spec).map_err(|_| {
        format!("`{entry}` is not a port to expose (use forms like `80`, `80/udp` or `8000-8010`)")
    })?;
    Ok(ports
        .map(|p| format!("{p}/{}", protocol.as_str()))
        .collect())
}

fn protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!(
            "protocol `{p}` is not supported (use `tcp` or `udp`)"
        )),
    }
}

fn host_ip(ip: &str) -> Result<String, String> {
    let bare = ip
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(ip);
    bare.parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("`{ip}` is not an IP address"))
}

/// `80` or `8000-8010` as an inclusive range of valid ports.
fn range(s: &str) -> Result<std::ops::RangeInclusive<u16>, ()> {
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (lo, hi),
        None => (s, s),
    };
    let lo = lo.trim().parse::<u16>().map_err(|_| ())?;
    let hi = hi.trim().parse::<u16>().map_err(|_| ())?;
    if lo == 0 || hi < lo {
        return Err(());
    }
    Ok(lo..=hi)
}

fn check(port: u16) -> Result<u16, String> {
    if port == 0 {
        Err("port 0 is not a port (use 1 to 65535)".to_owned())
    } else {
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: Option<&str>, published: Option<u16>, target: u16, protocol: Protocol) -> Port {
        Port {
            host_ip: ip.map(str::to_owned),
            published,
            published_end: None,
            target,
            protocol,
        }
    }

    #[test]
    fn short_forms() {
        use Protocol::*;
        assert_eq!(parse_short("80").unwrap(), [port(None, None, 80, Tcp)]);
        assert_eq!(
            parse_short("8080:80").unwrap(),
            [port(None, Some(8080), 80, Tcp)]
        );
        assert_eq!(
            parse_short("127.0.0.1:8080:80/udp").unwrap(),
            [port(Some("127.0.0.1"), Some(8080), 80, Udp)]
        );
        assert_eq!(
            parse_short("127.0.0.1::80").unwrap(),
            [port(Some("127.0.0.1"), None, 80, Tcp)]
        );
        assert_eq!(
            parse_short("[::1]:8080:80").unwrap(),
            [port(Some("::1"), Some(8080), 80, Tcp)]
        );
        assert_eq!(
            parse_short("8000-8001:80-81").unwrap(),
            [
                port(None, Some(8000), 80, Tcp),
                port(None, Some(8001), 81, Tcp)
            ]
        );
        assert_eq!(parse_short("80-81").unwrap().len(), 2);
        // Any free port of the range, for the one container port.
        assert_eq!(
            parse_short("6005-6015:80").unwrap(),
            [Port {
                published_end: Some(6015),
                ..port(None, Some(6005), 80, Tcp)
            }]
        );
    }

    #[test]
    fn short_errors() {
        for bad in [
            "",
            "abc",
            "80:",
            "0",
            "70000",
            "8000-8002:80-81",
            "80/sctp",
            "x:80:80",
            "81-80",
        ] {
            assert!(parse_short(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expose_forms() {
        assert_eq!(parse_expose("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_expose("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(parse_expose("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(parse_expose("x").is_err());
    }
}
