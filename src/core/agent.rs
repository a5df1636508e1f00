//! Which agent carries a call: the route (proxy or direct) and the TLS trust it needs.
//!
//! ureq fixes the proxy and the TLS configuration per agent, so each combination gets its own
//! agent. The default one (no proxy, the platform's verifier) is built once per process; the
//! others are kept in a map keyed by (proxy, ca_file, tls_verify). The map's lock is held only
//! to look up or insert a clone, never while connecting.

use super::error::Error;
use super::options::{ca_file_version, load_ca_file, redact_proxy, FileVersion, Options};
use super::tls::{TlsSettings, Trust};
use super::transport::build_agent;
use rustls::pki_types::CertificateDer;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use ureq::tls::{RootCerts, TlsConfig};

/// More distinct settings than this in one process means something builds options per call
/// with changing values; the map is then emptied rather than grown without bound.
const MAX_AGENTS: usize = 64;

/// Where a call to a URL goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The proxy URL, or `None` for a direct connection.
    pub proxy: Option<String>,
    /// What decided it: `options`, the environment variable's name, or `NO_PROXY`.
    pub source: &'static str,
}

impl Route {
    /// A line for `--debug` and the log when a proxy is used (password hidden).
    pub fn describe(&self) -> Option<String> {
        let proxy = self.proxy.as_deref()?;
        Some(format!(
            "proxy {} (from {})",
            redact_proxy(proxy),
            self.source
        ))
    }
}

/// The route for `url`: the `proxy` option when given (`""` meaning direct), else the
/// environment read now, as curl reads it: `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for
/// http ones, `ALL_PROXY` for both (each also in lower case), unless `NO_PROXY` matches.
pub(crate) fn route(url: &str, options: &Options) -> Result<Route, Error> {
    match options.proxy.as_deref() {
        Some("") => Ok(Route {
            proxy: None,
            source: "options",
        }),
        Some(proxy) => Ok(Route {
            proxy: Some(proxy.to_string()),
            source: "options",
        }),
        None => env_route(url, &|name| std::env::var(name).ok()),
    }
}

/// [`route`]'s environment half, with the environment passed in (for unit tests).
fn env_route(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Route, Error> {
    let direct = |source| {
        Ok(Route {
            proxy: None,
            source,
        })
    };
    // The scheme from the text: most calls have no proxy variable set, and need no parse.
    let https = url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
    // Lower case first, as curl does; HTTP_PROXY is honoured in capitals too (curl refuses it
    // only to guard CGI scripts, where a request header can set it; not our situation).
    let names: [&'static str; 4] = if https {
        ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let Some((name, value)) = names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
    else {
        return direct("environment");
    };
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return direct("environment");
    };
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let no_proxy = env("no_proxy")
        .or_else(|| env("NO_PROXY"))
        .unwrap_or_default();
    if no_proxy_matches(&no_proxy, host, port) {
        return direct("NO_PROXY");
    }
    let value = value.trim().to_string();
    if ureq::Proxy::new(&value).is_err() {
        return Err(Error::invalid(
            "options",
            format!(
                "the {name} environment variable is not a valid proxy URL: {}",
                redact_proxy(&value)
            ),
        ));
    }
    Ok(Route {
        proxy: Some(value),
        source: name,
    })
}

/// Whether `host:port` is exempt from the proxy by a `NO_PROXY` list, with curl's rules:
/// entries separated by commas or spaces; `*` matches all; `example.com` (or `.example.com`,
/// `*.example.com`) matches the domain and its subdomains; `host:port` only that port; an IP
/// only itself; `10.0.0.0/8` a network. (ureq's own matcher treats `example.com` as the exact
/// host only, which differs from what users of curl and the SDKs expect.)
fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.to_ascii_lowercase();
            if let Some((net, bits)) = entry.split_once('/') {
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_network(ip, net, bits),
                    _ => false,
                };
            }
            let (name, entry_port) = split_port(&entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            match (ip, name.parse::<IpAddr>()) {
                (Some(ip), Ok(entry_ip)) => ip == entry_ip,
                (Some(_), Err(_)) | (None, Ok(_)) => false,
                (None, Err(_)) => host == name || host.ends_with(&format!(".{name}")),
            }
        })
}

/// Splits `host:port` and `[v6]:port`; a bare IPv6 address has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, tail)) => (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.split_once(':') {
        Some((name, port)) if !port.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What makes two calls need different agents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct AgentKey {
    proxy: Option<String>,
    ca_file: Option<PathBuf>,
    /// The version of `ca_file` (a replaced file gets an agent with its new roots).
    ca_version: Option<FileVersion>,
    /// Stored inverted so that the derived default (all empty) is the default agent's key.
    no_verify: bool,
}

/// The agent for a call to `url` with `options` (a cheap clone of a shared one).
pub(crate) fn for_url(url: &str, options: &Options) -> Result<ureq::Agent, Error> {
    for_route(&route(url, options)?, options)
}

/// The agent for a call taking `route` with `options`, when the route is already known.
pub(crate) fn for_route(route: &Route, options: &Options) -> Result<ureq::Agent, Error> {
    // Without verification there is nothing to trust: one agent serves every ca_file.
    let ca_file = options.ca_file.as_ref().filter(|_| options.tls_verify);
    let key = AgentKey {
        proxy: route.proxy.clone(),
        ca_version: ca_file.map(|path| ca_file_version(path)).transpose()?,
        ca_file: ca_file.cloned(),
        no_verify: !options.tls_verify,
    };
    if key == AgentKey::default() {
        let mut default = DEFAULT.lock().unwrap_or_else(|e| e.into_inner());
        return Ok(default
            .get_or_insert_with(|| {
                build_agent(
                    None,
                    platform_tls(),
                    Some(Arc::new(TlsSettings::new(Trust::Platform))),
                )
            })
            .clone());
    }
    if let Some(agent) = AGENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key))
    {
        return Ok(agent.clone());
    }
    // Built outside the lock: loading the system's roots reads files.
    let agent = build(&key)?;
    let mut agents = AGENTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = agents.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_AGENTS {
        map.clear();
    }
    Ok(map.entry(key).or_insert(agent).clone())
}

// Process-wide, and droppable (not `OnceLock`): [`release`] empties them when the library is
// unloaded. A call in flight holds its own clone of its agent, so it is not disturbed.
/// The default agent (no proxy, the platform's verifier).
static DEFAULT: Mutex<Option<ureq::Agent>> = Mutex::new(None);
/// The other agents, by what makes them differ.
static AGENTS: Mutex<Option<HashMap<AgentKey, ureq::Agent>>> = Mutex::new(None);

/// Drops the cached agents (their idle connections, buffers and name caches).
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
    allow(dead_code)
)]
pub(crate) fn release() {
    let default = DEFAULT.lock().unwrap_or_else(|e| e.into_inner()).take();
    let agents = AGENTS.lock().unwrap_or_else(|e| e.into_inner()).take();
    // Dropped outside the locks: closing connections makes system calls.
    drop(default);
    drop(agents);
}

fn platform_tls() -> TlsConfig {
    TlsConfig::builder()
        .root_certs(RootCerts::PlatformVerifier)
        .build()
}

fn build(key: &AgentKey) -> Result<ureq::Agent, Error> {
    let proxy = match &key.proxy {
        Some(url) => Some(ureq::Proxy::new(url).map_err(|_| {
            Error::invalid(
                "options",
                format!(
                    "options: proxy {} is not a valid proxy URL",
                    redact_proxy(url)
                ),
            )
        })?),
        None => None,
    };
    let file = match (&key.ca_file, key.no_verify) {
        (Some(path), false) => Some(load_ca_file(path)?),
        _ => None,
    };
    // Direct connections do TLS on our socket transport, with the trust built lazily (see
    // `super::tls`); through a proxy, ureq's TLS layer does it, configured here.
    let trust = match &file {
        _ if key.no_verify => Trust::Off,
        Some(certs) => Trust::CaFile(
            certs
                .iter()
                .map(|c| CertificateDer::from(c.der().to_vec()))
                .collect(),
        ),
        None => Trust::Platform,
    };
    let tls = match (key.no_verify, file, &proxy) {
        (true, _, _) => TlsConfig::builder().disable_verification(true).build(),
        (false, Some(certs), Some(_)) => TlsConfig::builder()
            .root_certs(system_roots_and(certs))
            .build(),
        // Unused behind our own TLS; were it used, it would trust the file alone (narrower).
        (false, Some(certs), None) => TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(certs)))
            .build(),
        (false, None, _) => platform_tls(),
    };
    let direct_tls = proxy.is_none().then(|| Arc::new(TlsSettings::new(trust)));
    Ok(build_agent(proxy, tls, direct_tls))
}

/// The operating system's trusted roots plus `extra`. ureq cannot add a root to the platform
/// verifier, so the system store is read (rustls-native-certs: the Windows and macOS stores,
/// the usual bundle files on Linux, `SSL_CERT_FILE`/`SSL_CERT_DIR`) and trusted as a list.
fn system_roots_and(extra: Vec<ureq::tls::Certificate<'static>>) -> RootCerts {
    // Unreadable system certificates are skipped: the file's roots are what this call needs.
    let system = rustls_native_certs::load_native_certs().certs;
    let mut all: Vec<_> = system
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    all.extend(extra);
    RootCerts::Specific(Arc::new(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_proxy_follows_the_target_scheme() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("HTTP_PROXY", "http://plain:2"),
        ]);
        assert_eq!(
            env_route("https://a.example/x", &env)
                .unwrap()
                .proxy
                .as_deref(),
            Some("http://secure:1")
        );
        assert_eq!(
            env_route("http://a.example/x", &env)
                .unwrap()
                .proxy
                .as_deref(),
            Some("http://plain:2")
        );
        let env = env_of(&[("ALL_PROXY", "socks5://s:3")]);
        let route = env_route("https://a.example/x", &env).unwrap();
        assert_eq!(
            (route.proxy.as_deref(), route.source),
            (Some("socks5://s:3"), "ALL_PROXY")
        );
        assert_eq!(
            env_route("https://a.example/x", &env_of(&[]))
                .unwrap()
                .proxy,
            None
        );
    }

    #[test]
    fn no_proxy_exempts_hosts() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "internal.corp, 10.0.0.0/8,[::1]:8443"),
        ]);
        let via = |url| env_route(url, &env).unwrap().proxy;
        assert_eq!(via("https://internal.corp/"), None);
        assert_eq!(via("https://api.internal.corp/"), None);
        assert_eq!(via("https://10.2.3.4/"), None);
        assert_eq!(via("https://[::1]:8443/"), None);
        assert!(via("https://[::1]:9443/").is_some());
        assert!(via("https://notinternal.corp/").is_some());
        assert!(via("https://11.0.0.1/").is_some());
        assert!(no_proxy_matches("*", "anything", 1));
        assert!(no_proxy_matches("localhost:8080", "LOCALHOST", 8080));
        assert!(!no_proxy_matches("localhost:8080", "localhost", 80));
        assert!(no_proxy_matches(".example.com", "example.com", 80));
    }

    #[test]
    fn bad_env_proxy_is_an_error_not_a_silent_direct_call() {
        let env = env_of(&[("HTTPS_PROXY", "ftp://x:1")]);
        let err = env_route("https://a.example/", &env).unwrap_err();
        assert!(err.to_string().contains("HTTPS_PROXY"), "{err}");
    }
}
