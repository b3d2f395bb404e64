//! HTTP for the hub: timeouts and proxies read from the environment as huggingface_hub reads
//! them, and redirects followed by hand so the token never leaves the hub's origin.
//!
//! - `HF_HUB_ETAG_TIMEOUT` (default 10 s) bounds the metadata requests: the repo listing and
//!   the `HEAD` on a file's `resolve` URL. `HF_HUB_DOWNLOAD_TIMEOUT` (default 10 s) bounds
//!   connecting and each read of a download, as in huggingface_hub; a download may take as long
//!   as it needs while bytes keep coming.
//! - Proxies: `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for http
//!   ones, `all_proxy`/`ALL_PROXY` for either (the lowercase name wins, as in Python's urllib).
//!   `no_proxy`/`NO_PROXY` lists hosts reached directly, with the rules of httpx (which
//!   huggingface_hub uses) and curl: `*` for all, `example.com` for it and its subdomains,
//!   `.example.com` for subdomains only, IP addresses and CIDR ranges, an optional `:port`.
//!   ureq's own proxy support takes one proxy for every URL and knows no `NO_PROXY`, so the
//!   proxy is chosen here per URL and each hop of a redirect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::HubError;

pub(crate) const ETAG_TIMEOUT_VAR: &str = "HF_HUB_ETAG_TIMEOUT";
pub(crate) const DOWNLOAD_TIMEOUT_VAR: &str = "HF_HUB_DOWNLOAD_TIMEOUT";
/// huggingface_hub's default for both timeouts (`constants.py`).
const DEFAULT_TIMEOUT_S: f64 = 10.0;
const MAX_REDIRECTS: usize = 10;

/// What a request is for; decides its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    /// The listing and file metadata (`HF_HUB_ETAG_TIMEOUT`).
    Metadata,
    /// File content (`HF_HUB_DOWNLOAD_TIMEOUT`).
    Download,
}

impl Purpose {
    pub fn variable(self) -> &'static str {
        match self {
            Purpose::Metadata => ETAG_TIMEOUT_VAR,
            Purpose::Download => DOWNLOAD_TIMEOUT_VAR,
        }
    }
}

/// Which redirects a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Every redirect (the token is dropped once the origin changes).
    All,
    /// Only those within the same origin; a redirect elsewhere (the CDN) is the answer, as
    /// huggingface_hub's `get_hf_file_metadata` reads the file's headers from it.
    SameOrigin,
}

/// One request.
pub(crate) struct Call<'a> {
    pub method: &'static str,
    pub url: &'a str,
    pub token: Option<&'a str>,
    /// `Range: bytes=<start>-`.
    pub range_from: Option<u64>,
    pub purpose: Purpose,
    pub follow: Follow,
}

/// A request that failed, with what the error message needs.
pub(crate) struct Failure {
    pub error: Box<ureq::Error>,
    /// The URL of the hop that failed.
    pub url: String,
    /// The proxy it went through, if any.
    pub proxy: Option<ProxySetting>,
    /// Set when the failure is a timeout: the limit and the variable that sets it.
    pub timeout: Option<(Duration, &'static str)>,
}

/// A proxy from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxySetting {
    pub url: String,
    /// The variable it came from.
    pub variable: &'static str,
}

impl ProxySetting {
    /// The proxy URL without credentials, for messages.
    pub fn shown(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => match self.url.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => self.url.clone(),
            },
        }
    }
}

/// The HTTP client of one hub session.
pub(crate) struct Client {
    timeouts: HashMap<Purpose, Duration>,
    proxies: ProxyEnv,
    /// One agent per (purpose, proxy), so connections are reused.
    agents: Mutex<HashMap<(Purpose, Option<String>), ureq::Agent>>,
}

impl Client {
    /// From the environment; a timeout or proxy variable that cannot be used is an error
    /// naming it.
    pub fn from_env() -> Result<Client, HubError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Client, HubError> {
        let mut timeouts = HashMap::new();
        for purpose in [Purpose::Metadata, Purpose::Download] {
            let variable = purpose.variable();
            timeouts.insert(purpose, timeout(variable, lookup(variable))?);
        }
        let proxies = ProxyEnv::from_lookup(&lookup);
        for proxy in [&proxies.https, &proxies.http, &proxies.all]
            .into_iter()
            .flatten()
        {
            let scheme = proxy.url.split_once("://").map(|(s, _)| s);
            let usable = matches!(scheme, None | Some("http" | "HTTP"))
                && ureq::Proxy::new(&proxy.url).is_ok();
            if !usable {
                return Err(HubError::BadSetting {
                    variable: proxy.variable.into(),
                    value: proxy.shown(),
                    expected:
                        "an http:// proxy URL such as http://proxy.example:3128 (mtsum \
                               speaks to http proxies, which tunnel https; not socks or https ones)"
                            .into(),
                });
            }
        }
        Ok(Client {
            timeouts,
            proxies,
            agents: Mutex::new(HashMap::new()),
        })
    }

    pub fn timeout(&self, purpose: Purpose) -> Duration {
        self.timeouts[&purpose]
    }

    /// Sends the request, following redirects as `call.follow` says. A 3xx answer comes back
    /// only when it leads to another origin under `Follow::SameOrigin`; 4xx and 5xx answers are
    /// errors (`ureq::Error::Status`).
    pub fn send(&self, call: &Call) -> Result<ureq::Response, Failure> {
        let mut url = call.url.to_string();
        let mut token = call.token;
        for _ in 0..MAX_REDIRECTS {
            let parsed = url::Url::parse(&url).map_err(|e| self.failure(&url, None, bad(e)))?;
            let proxy = self.proxies.for_url(&parsed).cloned();
            let agent = self.agent(call.purpose, proxy.as_ref());
            let mut request = agent.request(call.method, &url);
            if call.method == "HEAD" || call.purpose == Purpose::Download {
                // The real size and byte offsets: no transparent compression.
                request = request.set("Accept-Encoding", "identity");
            }
            if let Some(start) = call.range_from {
                request = request.set("Range", &format!("bytes={start}-"));
            }
            if let Some(token) = token {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            let response = match request.call() {
                Ok(response) => response,
                Err(e) => {
                    let timed_out = is_timeout(&e);
                    let mut failure = self.failure(&url, proxy, Box::new(e));
                    if timed_out {
                        failure.timeout =
                            Some((self.timeout(call.purpose), call.purpose.variable()));
                    }
                    return Err(failure);
                }
            };
            if !(300..400).contains(&response.status()) {
                return Ok(response);
            }
            let next = response
                .header("Location")
                .and_then(|location| parsed.join(location).ok())
                .ok_or_else(|| {
                    self.failure(
                        &url,
                        None,
                        bad(format!("a redirect from {url} has no usable Location")),
                    )
                })?;
            let same = same_origin(&parsed, &next);
            if !same {
                if call.follow == Follow::SameOrigin {
                    return Ok(response);
                }
                token = None;
            }
            url = next.to_string();
        }
        Err(self.failure(
            &url,
            None,
            bad(format!("more than {MAX_REDIRECTS} redirects")),
        ))
    }

    fn failure(&self, url: &str, proxy: Option<ProxySetting>, error: Box<ureq::Error>) -> Failure {
        Failure {
            error,
            url: url.to_string(),
            proxy,
            timeout: None,
        }
    }

    fn agent(&self, purpose: Purpose, proxy: Option<&ProxySetting>) -> ureq::Agent {
        let key = (purpose, proxy.map(|p| p.url.clone()));
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .entry(key)
            .or_insert_with(|| {
                let limit = self.timeout(purpose);
                let mut builder = ureq::AgentBuilder::new()
                    .redirects(0)
                    .try_proxy_from_env(false)
                    .timeout_connect(limit)
                    .timeout_read(limit)
                    .timeout_write(limit)
                    .user_agent(concat!("mtsum/", env!("CARGO_PKG_VERSION")));
                // Checked in `from_lookup`.
                if let Some(proxy) = proxy.and_then(|p| ureq::Proxy::new(&p.url).ok()) {
                    builder = builder.proxy(proxy);
                }
                builder.build()
            })
            .clone()
    }
}

fn bad(reason: impl std::fmt::Display) -> Box<ureq::Error> {
    Box::new(ureq::Error::from(std::io::Error::other(reason.to_string())))
}

/// A timeout variable: seconds, fractions allowed; unset or empty means huggingface_hub's 10.
fn timeout(variable: &str, value: Option<String>) -> Result<Duration, HubError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(Duration::from_secs_f64(DEFAULT_TIMEOUT_S));
    };
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(HubError::BadSetting {
            variable: variable.into(),
            value,
            expected: "a number of seconds greater than 0 (default 10)".into(),
        }),
    }
}

/// Whether an error (or one of its causes) is a socket timeout.
pub(crate) fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if is_timeout_io(io) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// A read or connect that ran out of time (WouldBlock is what a socket read timeout gives on
/// Unix).
pub(crate) fn is_timeout_io(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || err
        .get_ref()
        .is_some_and(|inner| inner.source().is_some_and(is_timeout))
}

/// Same scheme, host and port (huggingface_hub sends the token to nothing else).
pub(crate) fn same_origin(from: &url::Url, to: &url::Url) -> bool {
    from.scheme() == to.scheme()
        && from.host_str() == to.host_str()
        && from.port_or_known_default() == to.port_or_known_default()
}

/// The proxy variables.
#[derive(Debug, Default)]
struct ProxyEnv {
    http: Option<ProxySetting>,
    https: Option<ProxySetting>,
    all: Option<ProxySetting>,
    no_proxy: NoProxy,
}

impl ProxyEnv {
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> ProxyEnv {
        let get = |names: [&'static str; 2]| {
            names.into_iter().find_map(|variable| {
                let url = lookup(variable)?.trim().to_string();
                (!url.is_empty()).then_some(ProxySetting { url, variable })
            })
        };
        let no_proxy = ["no_proxy", "NO_PROXY"]
            .into_iter()
            .find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()))
            .map(|v| NoProxy::parse(&v))
            .unwrap_or_default();
        ProxyEnv {
            http: get(["http_proxy", "HTTP_PROXY"]),
            https: get(["https_proxy", "HTTPS_PROXY"]),
            all: get(["all_proxy", "ALL_PROXY"]),
            no_proxy,
        }
    }

    /// The proxy for a URL: none when NO_PROXY names its host, else the scheme's own, else
    /// ALL_PROXY.
    fn for_url(&self, url: &url::Url) -> Option<&ProxySetting> {
        if self.no_proxy.matches(url) {
            return None;
        }
        let own = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        };
        own.or(self.all.as_ref())
    }
}

/// The hosts `NO_PROXY` lists.
#[derive(Debug, Default)]
struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug)]
struct NoProxyEntry {
    scheme: Option<String>,
    host: NoProxyHost,
    port: Option<u16>,
}

#[derive(Debug)]
enum NoProxyHost {
    /// An address or range (`127.0.0.1`, `10.0.0.0/8`, `::1`).
    Net(IpAddr, u8),
    /// A name: itself and its subdomains, or (with a leading dot) subdomains only.
    Domain { name: String, subdomains_only: bool },
}

impl NoProxy {
    fn parse(value: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for entry in value
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                out.everything = true;
            } else if let Some(parsed) = NoProxyEntry::parse(entry) {
                out.entries.push(parsed);
            }
        }
        out
    }

    fn matches(&self, url: &url::Url) -> bool {
        self.everything || self.entries.iter().any(|e| e.matches(url))
    }
}

impl NoProxyEntry {
    fn parse(entry: &str) -> Option<NoProxyEntry> {
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, entry),
        };
        let rest = rest.trim_end_matches('/');
        // `[::1]:8080`, `[::1]`
        if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            };
            let ip: IpAddr = addr.parse().ok()?;
            return Some(NoProxyEntry {
                scheme,
                host: NoProxyHost::Net(ip, full_prefix(ip)),
                port,
            });
        }
        // `::1`, `127.0.0.1`
        if let Ok(ip) = rest.parse::<IpAddr>() {
            return Some(NoProxyEntry {
                scheme,
                host: NoProxyHost::Net(ip, full_prefix(ip)),
                port: None,
            });
        }
        // `10.0.0.0/8`, `fd00::/8`
        if let Some((addr, bits)) = rest.split_once('/') {
            let ip: IpAddr = addr.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            return (bits <= full_prefix(ip)).then_some(NoProxyEntry {
                scheme,
                host: NoProxyHost::Net(ip, bits),
                port: None,
            });
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (rest, None),
        };
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            NoProxyHost::Net(ip, full_prefix(ip))
        } else {
            let lower = host.to_ascii_lowercase();
            let (name, subdomains_only) =
                match lower.strip_prefix("*.").or_else(|| lower.strip_prefix('.')) {
                    Some(name) => (name.to_string(), true),
                    None => (lower.trim_start_matches('*').to_string(), false),
                };
            if name.is_empty() {
                return None;
            }
            NoProxyHost::Domain {
                name,
                subdomains_only,
            }
        };
        Some(NoProxyEntry { scheme, host, port })
    }

    fn matches(&self, url: &url::Url) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != url.scheme()) {
            return false;
        }
        if self.port.is_some() && self.port != url.port_or_known_default() {
            return false;
        }
        match (&self.host, url.host()) {
            (NoProxyHost::Net(net, bits), Some(url::Host::Ipv4(ip))) => {
                in_net(IpAddr::V4(ip), *net, *bits)
            }
            (NoProxyHost::Net(net, bits), Some(url::Host::Ipv6(ip))) => {
                in_net(IpAddr::V6(ip), *net, *bits)
            }
            (
                NoProxyHost::Domain {
                    name,
                    subdomains_only,
                },
                Some(url::Host::Domain(host)),
            ) => {
                let host = host.to_ascii_lowercase();
                let host = host.trim_end_matches('.');
                (!subdomains_only && host == name) || host.ends_with(&format!(".{name}"))
            }
            _ => false,
        }
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(&move |name| map.get(name).cloned())
    }

    fn via(env: &ProxyEnv, url: &str) -> Option<&'static str> {
        env.for_url(&url::Url::parse(url).unwrap())
            .map(|p| p.variable)
    }

    #[test]
    fn the_token_stays_with_the_origin() {
        let hub = url::Url::parse("https://huggingface.co/org/m/resolve/main/x").unwrap();
        let same = url::Url::parse("https://huggingface.co:443/api/x").unwrap();
        assert!(same_origin(&hub, &same));
        for other in [
            "https://cdn-lfs.hf.co/x",
            "http://huggingface.co/x",
            "https://huggingface.co:8443/x",
        ] {
            assert!(
                !same_origin(&hub, &url::Url::parse(other).unwrap()),
                "{other}"
            );
        }
    }

    #[test]
    fn each_scheme_takes_its_own_proxy_then_all_proxy_and_lowercase_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
            ("ALL_PROXY", "http://all:1"),
        ]);
        assert_eq!(via(&e, "https://huggingface.co/x"), Some("https_proxy"));
        assert_eq!(via(&e, "http://mirror.local/x"), Some("ALL_PROXY"));
        assert_eq!(via(&env(&[]), "https://huggingface.co/x"), None);
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_addresses_ranges_and_ports() {
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("HTTP_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                "127.0.0.1, localhost,example.com,.internal.net,10.0.0.0/8,[::1],mirror.org:8080",
            ),
        ]);
        for direct in [
            "http://127.0.0.1:9999/x",
            "http://localhost:1234/x",
            "https://example.com/x",
            "https://cdn.example.com/x",
            "https://a.b.internal.net/x",
            "http://10.2.3.4/x",
            "http://[::1]:80/x",
            "http://mirror.org:8080/x",
        ] {
            assert_eq!(via(&e, direct), None, "{direct}");
        }
        for proxied in [
            "https://huggingface.co/x",
            "https://notexample.com/x",
            "https://internal.net/x",
            "http://11.0.0.1/x",
            "http://127.0.0.2/x",
            "http://mirror.org:8081/x",
        ] {
            assert!(via(&e, proxied).is_some(), "{proxied}");
        }
        let all = env(&[("ALL_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&all, "https://huggingface.co/x"), None);
    }

    #[test]
    fn timeouts_default_to_ten_seconds_and_bad_values_name_the_variable() {
        let client = Client::from_lookup(|_| None).unwrap();
        assert_eq!(client.timeout(Purpose::Metadata), Duration::from_secs(10));
        let client =
            Client::from_lookup(|name| (name == DOWNLOAD_TIMEOUT_VAR).then(|| "2.5".to_string()))
                .unwrap();
        assert_eq!(
            client.timeout(Purpose::Download),
            Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "ten"] {
            let err =
                Client::from_lookup(|name| (name == ETAG_TIMEOUT_VAR).then(|| bad.to_string()))
                    .err()
                    .unwrap()
                    .to_string();
            assert!(err.contains(ETAG_TIMEOUT_VAR) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_proxy_url_mtsum_cannot_use_is_named_without_its_password() {
        let err = Client::from_lookup(|name| {
            (name == "HTTPS_PROXY").then(|| "ftp://user:secret@proxy:21".to_string())
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("HTTPS_PROXY") && !err.contains("secret"),
            "{err}"
        );
    }
}
