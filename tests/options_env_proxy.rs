//! The proxy environment variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) apply when the
//! `proxy` option is absent. The environment is process-wide, so this binary holds one test
//! that sets and clears the variables itself, step by step; no other test shares its process.

mod support;

use opi_openai::ImageRequest;
use serde_json::{json, Value};
use support::proxy::ConnectProxy;
use support::server::images_handler;
use support::tls::TlsServer;
use support::{get_images_ex, parse, Action, Reply, TestServer};

const TOKEN: &str = "sk-test-env-proxy-SECRET-51d0";

fn call(url: &str, options: Value) -> Value {
    let req = ImageRequest {
        url,
        token: TOKEN,
        model: "dall-e-3",
        descr: "{'prompt':'a','n':1}",
        headers: "",
    };
    let result = get_images_ex(&req, &options.to_string());
    assert!(!result.contains(TOKEN));
    parse(&result)
}

fn set(name: &str, value: Option<&str>) {
    // Both spellings, so that a variable inherited from the machine cannot interfere.
    for n in [name.to_string(), name.to_ascii_lowercase()] {
        match value {
            Some(v) if n == name => std::env::set_var(&n, v),
            _ => std::env::remove_var(&n),
        }
    }
}

#[test]
fn proxy_environment_variables_apply_when_the_option_is_absent() {
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
        set(name, None);
    }
    let https = TlsServer::start(images_handler());
    let plain = TestServer::start(images_handler());
    let dir = tempfile::tempdir().unwrap();
    let ca = https.ca.write_ca(dir.path(), "root.pem");
    let ca = json!({"ca_file": ca.to_str().unwrap()});

    // HTTPS_PROXY carries an https call (TLS inside the tunnel, verified against ca_file).
    let proxy = ConnectProxy::start(None);
    set("HTTPS_PROXY", Some(&proxy.url()));
    let result = call(&https.url(), ca.clone());
    assert!(result["data"][0]["b64_json"].is_string(), "{result}");
    assert_eq!(proxy.tunnels(), 1);
    assert_eq!(proxy.requests()[0].target, https.addr.to_string());

    // ...but not a plain http call: that is HTTP_PROXY's.
    let result = call(&plain.url(), json!({}));
    assert!(result["data"].is_array(), "{result}");
    assert_eq!(proxy.tunnels(), 1, "an http URL does not use HTTPS_PROXY");
    let http_proxy = ConnectProxy::start(None);
    set("HTTP_PROXY", Some(&http_proxy.url()));
    let result = call(&plain.url(), json!({}));
    assert!(result["data"].is_array(), "{result}");
    assert_eq!(http_proxy.tunnels(), 1);
    set("HTTP_PROXY", None);

    // Credentials in the variable are sent.
    let guarded = ConnectProxy::start(Some(("envuser", "envpass")));
    set("HTTPS_PROXY", Some(&guarded.url_with("envuser", "envpass")));
    let result = call(&https.url(), ca.clone());
    assert!(result["data"].is_array(), "{result}");
    assert_eq!(guarded.tunnels(), 1);
    assert!(guarded.requests()[0]
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Basic "));

    // NO_PROXY exempts the host: the call goes direct. `proxy` above keeps a tunnel alive
    // from its first call, so a wrongly proxied call would send no new CONNECT: a fresh proxy
    // for each case, and the bytes it carried, are what show that nothing went through it.
    let exempt_proxy = ConnectProxy::start(None);
    set("HTTPS_PROXY", Some(&exempt_proxy.url()));
    set("NO_PROXY", Some("example.invalid, 127.0.0.1"));
    let served = https.requests().len();
    let result = call(&https.url(), ca.clone());
    assert!(result["data"].is_array(), "{result}");
    assert_eq!(
        https.requests().len(),
        served + 1,
        "the call reached the server"
    );
    assert_eq!(
        (exempt_proxy.requests().len(), exempt_proxy.bytes()),
        (0, 0),
        "NO_PROXY must bypass the proxy"
    );
    set("NO_PROXY", None);

    // Each redirect hop takes its own route: NO_PROXY applies to the host redirected to,
    // both ways (proxied -> direct, direct -> proxied).
    let target = TestServer::start_on("127.0.0.2:0", |_, _| {
        Action::Reply(Reply::json(200, r#"{"created":1,"data":[]}"#))
    });
    let target_url = target.url();
    let first = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(307, "").header("location", &target_url))
    });
    let hop_proxy = ConnectProxy::start(None);
    set("HTTP_PROXY", Some(&hop_proxy.url()));
    set("NO_PROXY", Some("127.0.0.2"));
    let result = call(&first.url(), json!({}));
    assert!(result["data"].is_array(), "{result}");
    let targets: Vec<String> = hop_proxy
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        targets,
        [first.addr.to_string()],
        "the second hop went through the proxy"
    );
    assert_eq!(target.requests().len(), 1);
    let back_proxy = ConnectProxy::start(None);
    set("HTTP_PROXY", Some(&back_proxy.url()));
    set("NO_PROXY", Some(&first.addr.to_string()));
    let result = call(&first.url(), json!({}));
    assert!(result["data"].is_array(), "{result}");
    let targets: Vec<String> = back_proxy
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        targets,
        [target.addr.to_string()],
        "only the second hop is proxied"
    );
    assert_eq!(first.requests().len(), 2);
    set("HTTP_PROXY", None);
    set("NO_PROXY", None);

    // The option wins over the environment: "" is a direct call, a URL is that proxy.
    let env_proxy = ConnectProxy::start(None);
    set("HTTPS_PROXY", Some(&env_proxy.url()));
    let mut direct = ca.clone();
    direct["proxy"] = json!("");
    let result = call(&https.url(), direct);
    assert!(result["data"].is_array(), "{result}");
    assert_eq!(
        (env_proxy.requests().len(), env_proxy.bytes()),
        (0, 0),
        "proxy \"\" must not fall back to the environment"
    );
    let before = env_proxy.requests().len();
    let other = ConnectProxy::start(None);
    let mut chosen = ca.clone();
    chosen["proxy"] = json!(other.url());
    assert!(call(&https.url(), chosen)["data"].is_array());
    assert_eq!((other.tunnels(), env_proxy.requests().len()), (1, before));
    assert!(other.bytes() > 0);

    // A variable that is not a proxy URL is an error, not a silent direct call.
    set("HTTPS_PROXY", Some("ftp://127.0.0.1:1"));
    let result = call(&https.url(), ca);
    assert_eq!(result["error"]["code"], "invalid_argument", "{result}");
    assert!(result["error"]["message"]
        .as_str()
        .unwrap()
        .contains("HTTPS_PROXY"));
    set("HTTPS_PROXY", None);
}
