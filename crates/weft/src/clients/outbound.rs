//! The outbound guard (against server-side request forgery): which hosts and addresses weft's
//! HTTP client may connect to. A URL built from message data (`{{ .callback_url }}`) must not
//! reach the cloud metadata service or an internal admin port.
//!
//! The check runs when a connection is made, on the addresses the name resolved to, so a name
//! that resolves to a denied address is refused however it is spelt (and weft connects to the
//! address it checked, so a second lookup cannot give another). Cloud metadata and host
//! service addresses (link-local 169.254.0.0/16 and fe80::/10, fd00:ec2::/32,
//! 100.100.100.200, 168.63.129.16, 192.0.0.192) are denied unless `allow_metadata: true`;
//! "this host" (0.0.0.0/8, `::`) always is, and so is weft's own admin endpoint (its address
//! and port in any spelling; every address on its port when it listens on all of them), so a
//! URL from a message cannot read or pause flows through the admin API. An IPv6 form of an IPv4 address (mapped,
//! compatible, NAT64, 6to4) is checked as that address too. With an `allow` list, only what it
//! names is reached; `deny` wins over `allow`. Entries are host names (`api.example.com`),
//! wildcards (`*.example.com`) or addresses and CIDR blocks (`10.0.0.0/8`, `::1`). Behind a
//! `client.proxy` the proxy resolves names, so only host names and literal addresses (in every
//! spelling a resolver takes, `0xa9fea9fe` too) are checked there.
//!
//! ```yaml
//! outbound:
//!   deny: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 127.0.0.0/8, "::1"]
//!   allow: ["*.example.com", api.partner.net, 203.0.113.0/24]
//! ```
//!
//! It guards every HTTP client weft makes (outputs, processors, polls, token and key-set
//! fetches); database and broker connections go to addresses the config names, not messages.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::Uri;
use ipnet::IpNet;
use serde::Deserialize;

use crate::config::BuildError;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Only these hosts, wildcards, addresses and CIDR blocks may be reached (default: any).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These may never be reached; wins over `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Let the cloud metadata addresses be reached (denied by default).
    #[serde(default)]
    pub allow_metadata: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Host(String),
    /// `*.example.com`: the suffix `.example.com`.
    Suffix(String),
    Net(IpNet),
}

/// The built rules.
#[derive(Debug, Default)]
pub struct Outbound {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    allow_metadata: bool,
}

/// Cloud metadata and host services: link-local (AWS, GCP, Azure, ECS and EKS at 169.254.x,
/// AWS over IPv6 in fd00:ec2::/32), Alibaba, Azure's WireServer, Oracle Cloud.
static METADATA: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
    [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::/32",
        "100.100.100.200/32",
        "168.63.129.16/32",
        "192.0.0.192/32",
    ]
    .iter()
    .map(|a| a.parse().expect("a valid block"))
    .collect()
});

/// "This host": connecting to 0.0.0.0 or `::` reaches local listeners, so it is never allowed.
fn unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// The address and the IPv4 address it carries, if any: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms all reach
/// an IPv4 host, so rules about that host apply to them too.
fn forms(ip: IpAddr) -> Vec<IpAddr> {
    let ip = ip.to_canonical();
    let mut all = vec![ip];
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        let o = v6.octets();
        let tail = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        let compatible =
            s[..6].iter().all(|x| *x == 0) && !v6.is_loopback() && !v6.is_unspecified();
        let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
        if compatible || nat64 {
            all.push(IpAddr::V4(tail));
        }
        if s[0] == 0x2002 {
            all.push(IpAddr::V4(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5])));
        }
    }
    all
}

/// A host written as an address, including the spellings `inet_aton` takes and a proxy's
/// resolver may too: `2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `169.254.43518`.
pub fn literal_address(host: &str) -> Option<IpAddr> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = host.strip_suffix('.').unwrap_or(host).split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(4);
    for part in &parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or(part.strip_prefix("0X"))
        {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if (digits.is_empty() && radix != 16) || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        numbers
            .push(u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, radix).ok()?);
    }
    // The last part fills the bytes the others leave.
    let (last, head) = numbers.split_last()?;
    if head.iter().any(|n| *n > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 32 && *last >= 1 << room {
        return None;
    }
    let mut value: u32 = *last;
    for (i, n) in head.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    Some(IpAddr::V4(std::net::Ipv4Addr::from(value)))
}

fn rule(text: &str) -> Result<Rule, String> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Rule::Net(canonical(net.trunc())));
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(Rule::Net(canonical(IpNet::from(ip))));
    }
    let host = text.strip_prefix("*.");
    let name = host.unwrap_or(&text);
    let valid = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(format!(
            "`{text}` is not a host name, `*.domain`, address or CIDR block"
        ));
    }
    Ok(match host {
        Some(suffix) => Rule::Suffix(format!(".{suffix}")),
        None => Rule::Host(text),
    })
}

/// An IPv4-mapped block (`::ffff:10.0.0.0/104`) as the IPv4 block it means, since addresses
/// are compared in their IPv4 form.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// Whether a URL's host is spelt as a name or an address can be: letters, digits, `-`, `_`,
/// `.`, and `:` inside brackets. Anything else (`%`-escapes a proxy might decode) is refused.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'[' | b']' | b':')
        })
}

impl OutboundConfig {
    pub fn build(&self) -> Result<Outbound, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut list = |field: &str, entries: &[String]| {
            let mut rules = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                match rule(e) {
                    Ok(r) => rules.push(r),
                    Err(m) => errors.push(BuildError::new(&format!("{field}.{i}"), m)),
                }
            }
            rules
        };
        let allow = list("allow", &self.allow);
        let deny = list("deny", &self.deny);
        if errors.is_empty() {
            Ok(Outbound {
                allow,
                deny,
                allow_metadata: self.allow_metadata,
            })
        } else {
            Err(errors)
        }
    }
}

impl Rule {
    fn matches(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match self {
            Rule::Host(h) => h == host,
            Rule::Suffix(s) => host.ends_with(s.as_str()),
            Rule::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
        }
    }
}

impl Outbound {
    /// Whether `host` may be reached at `ip` (`None`: not known here, behind a proxy).
    pub fn permits(&self, host: &str, ip: Option<IpAddr>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // Every form the address takes (`::ffff:169.254.169.254` is 169.254.169.254).
        let forms = ip.map(forms).unwrap_or_default();
        if forms.iter().any(|ip| unspecified(*ip)) {
            return false;
        }
        let denied = |ip: Option<IpAddr>| self.deny.iter().any(|r| r.matches(&host, ip));
        if denied(None) || forms.iter().any(|ip| denied(Some(*ip))) {
            return false;
        }
        if !self.allow_metadata
            && forms
                .iter()
                .any(|ip| METADATA.iter().any(|n| n.contains(ip)))
        {
            return false;
        }
        self.allow.is_empty()
            || self.allow.iter().any(|r| {
                r.matches(&host, None)
                    || forms.first().is_some_and(|ip| r.matches(&host, Some(*ip)))
            })
    }
}

/// weft's own admin endpoint, denied whatever the rules say (one per process).
static OWN: RwLock<Option<SocketAddr>> = RwLock::new(None);

/// Denies `address`, where weft's admin endpoint listens, to every client from now on.
pub fn deny_own(address: SocketAddr) {
    *OWN.write().unwrap_or_else(|e| e.into_inner()) = Some(address);
}

/// Whether connecting to `target` reaches weft's own admin endpoint.
fn is_own(target: SocketAddr) -> bool {
    let Some(own) = *OWN.read().unwrap_or_else(|e| e.into_inner()) else {
        return false;
    };
    if target.port() != own.port() {
        return false;
    }
    // Listening on every address: each of the host's addresses reaches it, and which those are
    // is not known here.
    own.ip().is_unspecified() || {
        let mine = forms(own.ip());
        forms(target.ip()).iter().any(|ip| mine.contains(ip))
    }
}

/// Whether `host` (a name, not checked by address: behind a proxy) names this machine on the
/// admin endpoint's port.
fn names_own(host: &str, port: u16) -> bool {
    let own = *OWN.read().unwrap_or_else(|e| e.into_inner());
    own.is_some_and(|own| {
        own.port() == port
            && (own.ip().is_loopback() || own.ip().is_unspecified())
            && matches!(
                host.trim_end_matches('.').to_ascii_lowercase().as_str(),
                "localhost" | "localhost.localdomain"
            )
    })
}

/// The rules in force, shared by every client; replaced when a config is loaded.
#[derive(Clone, Default)]
pub struct Guard(Arc<RwLock<Arc<Outbound>>>);

impl Guard {
    pub fn set(&self, rules: Outbound) {
        *self.0.write().expect("guard lock") = Arc::new(rules);
    }

    fn current(&self) -> Arc<Outbound> {
        self.0.read().expect("guard lock").clone()
    }
}

/// A connection the guard refused; found in a client error's sources.
#[derive(Debug)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the outbound guard refused {}", self.0)
    }
}

impl std::error::Error for Denied {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector that checks the guard first. `resolve`: look the name up here and connect to an
/// address that passed (direct connections); otherwise check the name and literal addresses
/// only (connections through a proxy, which resolves names itself).
#[derive(Clone)]
pub struct Guarded<C> {
    inner: C,
    guard: Guard,
    resolve: bool,
}

impl<C> Guarded<C> {
    pub fn new(inner: C, guard: Guard, resolve: bool) -> Guarded<C> {
        Guarded {
            inner,
            guard,
            resolve,
        }
    }
}

impl<C> tower_service::Service<Uri> for Guarded<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let rules = self.guard.current();
        let mut inner = self.inner.clone();
        let resolve = self.resolve;
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            if !plain_host(&host) {
                return Err(Denied(format!("`{host}` (not a plain host name)")).into());
            }
            let bare = host.trim_matches(['[', ']']);
            let literal = literal_address(bare);
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let own = || Denied(format!("`{host}:{port}` (weft's own admin endpoint)"));
            if literal.is_some_and(|ip| is_own(SocketAddr::new(ip, port))) || names_own(bare, port)
            {
                return Err(own().into());
            }
            if !resolve {
                if !rules.permits(bare, literal) {
                    return Err(Denied(format!("`{host}`")).into());
                }
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                return inner.call(uri).await.map_err(Into::into);
            }
            // An address is connected to as read here, never handed to another parser.
            let addresses: Vec<SocketAddr> = match literal {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                None => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|e| format!("could not resolve `{host}`: {e}"))?
                    .collect(),
            };
            if addresses.iter().any(|a| is_own(*a)) {
                return Err(own().into());
            }
            let permitted: Vec<SocketAddr> = addresses
                .iter()
                .copied()
                .filter(|a| rules.permits(bare, Some(a.ip())))
                .collect();
            if permitted.is_empty() {
                let shown: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
                return Err(Denied(format!("`{host}` ({})", shown.join(", "))).into());
            }
            // Connect to the addresses checked, in order, rather than let the connector look
            // the name up again.
            let mut last: Option<BoxError> = None;
            for address in permitted {
                // A scoped IPv6 address (`fe80::1%2`) has no URI form: not one to connect to.
                let Ok(target) = format!("http://{address}").parse::<Uri>() else {
                    continue;
                };
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                match inner.call(target).await {
                    Ok(connection) => return Ok(connection),
                    Err(e) => last = Some(e.into()),
                }
            }
            Err(last.unwrap_or_else(|| "no address to connect to".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(allow: &[&str], deny: &[&str]) -> Outbound {
        OutboundConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            allow_metadata: false,
        }
        .build()
        .unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn metadata_is_denied_by_default_in_every_spelling() {
        let open = Outbound::default();
        assert!(open.permits("api.example.com", ip("93.184.216.34")));
        assert!(!open.permits("169.254.169.254", ip("169.254.169.254")));
        assert!(!open.permits("evil.example", ip("::ffff:169.254.169.254")));
        assert!(!open.permits("x", ip("fd00:ec2::254")));
        let allowed = OutboundConfig {
            allow_metadata: true,
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(allowed.permits("x", ip("169.254.169.254")));
    }

    #[test]
    fn this_host_and_transition_forms_are_caught() {
        let rules = outbound(&[], &["10.0.0.0/8", "127.0.0.0/8"]);
        for denied in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "fe80::1",
            "169.254.170.23",
            "fd00:ec2::23",
            "168.63.129.16",
        ] {
            assert!(!rules.permits("x", ip(denied)), "{denied}");
        }
        assert!(rules.permits("x", ip("2001:db8::1")));
        let mapped = outbound(&[], &["::ffff:10.0.0.0/104"]);
        assert!(!mapped.permits("x", ip("10.1.2.3")));
        assert!(!plain_host("%31%36%39.254.169.254"));
        assert!(plain_host("[::1]") && plain_host("api-1.example_x.com"));
    }

    #[test]
    fn numeric_host_spellings_are_addresses() {
        let metadata = ip("169.254.169.254");
        for spelling in [
            "169.254.169.254",
            "2852039166",
            "0xa9fea9fe",
            "0251.0376.0251.0376",
            "169.254.43518",
            "0xA9.0xFE.0xA9.0xFE",
        ] {
            assert_eq!(literal_address(spelling), metadata, "{spelling}");
        }
        for name in [
            "example.com",
            "1.2.3.4.5",
            "256.1.1.1",
            "08.1.1.1",
            "+10.+0.+0.+5",
            "1.2.3.4..",
            "1e5",
            "x1",
        ] {
            assert_eq!(literal_address(name), None, "{name}");
        }
        assert_eq!(literal_address("[::1]"), ip("::1"));
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let rules = outbound(
            &["*.example.com", "203.0.113.0/24"],
            &["internal.example.com", "10.0.0.0/8"],
        );
        assert!(rules.permits("api.example.com", ip("93.184.216.34")));
        assert!(rules.permits("API.Example.com.", ip("93.184.216.34")));
        assert!(!rules.permits("example.com.evil.net", ip("93.184.216.34")));
        assert!(!rules.permits("internal.example.com", ip("93.184.216.34")));
        assert!(!rules.permits("api.example.com", ip("10.1.2.3")));
        assert!(rules.permits("anything", ip("203.0.113.9")));
        assert!(!rules.permits("anything", ip("198.51.100.1")));
        // Behind a proxy the address is unknown: names decide.
        assert!(rules.permits("api.example.com", None));
        assert!(!rules.permits("other.net", None));
    }

    #[test]
    fn bad_entries_name_their_field() {
        let errors = OutboundConfig {
            allow: vec!["ok.example".into(), "not a host".into()],
            deny: vec!["10.0.0.0/33".into()],
            allow_metadata: false,
        }
        .build()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["allow.1", "deny.0"]);
    }
}
