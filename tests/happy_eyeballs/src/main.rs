//! `happy_eyeballs_probe SILENT SERVER`: makes `happy-eyeballs.test` resolve to the silent
//! address first and the server second, calls the server through that name (connect timeout
//! 30 s, no retries), and prints the milliseconds the call took, then its result.

use opi_openai::{get_images_ex, resolve_for_tests, ImageRequest};
use std::net::SocketAddr;
use std::time::Instant;

fn main() {
    let addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("an address"))
        .collect();
    assert_eq!(addrs.len(), 2, "usage: happy_eyeballs_probe SILENT SERVER");
    let host = "happy-eyeballs.test";
    assert!(resolve_for_tests(host, &addrs));
    let url = format!("http://{host}:{}/", addrs[1].port());
    let request = ImageRequest {
        url: &url,
        token: "",
        model: "dall-e-3",
        descr: "{'prompt':'Windows eyeballs','n':1}",
        headers: "",
    };
    let started = Instant::now();
    let result = get_images_ex(&request, r#"{"connect_timeout": 30, "retries": 0}"#);
    println!("{}", started.elapsed().as_millis());
    println!("{result}");
}
