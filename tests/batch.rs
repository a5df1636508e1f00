//! Batches (`get_images_batch`) against our test server on 127.0.0.1: concurrency, order, one
//! failing item, distinct save_dir names, cancellation.

mod support;

use opi_openai::{get_images_batch, Cancel, ImageRequest, Options};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::server::images_handler;
use support::{error_code, parse, Action, Reply, TestServer};

fn request(url: &str) -> ImageRequest<'_> {
    ImageRequest {
        url,
        token: "sk-batch-test-token",
        model: "gpt-image-1-mini",
        descr: "",
        headers: "",
    }
}

/// Eight descriptions in the three forms (object, JSON text, single-quoted text).
fn eight() -> String {
    let items: Vec<Value> = (0..8)
        .map(|i| match i % 3 {
            0 => serde_json::json!({"prompt": format!("p{i}")}),
            1 => Value::String(format!(r#"{{"prompt":"p{i}"}}"#)),
            _ => Value::String(format!("{{'prompt':'p{i}'}}")),
        })
        .collect();
    Value::Array(items).to_string()
}

#[test]
fn eight_calls_of_200_ms_with_parallel_4_take_about_two_rounds() {
    let handler = images_handler();
    let server = TestServer::start(move |req, i| match handler(req, i) {
        Action::Reply(reply) => Action::Reply(reply.delayed(Duration::from_millis(200))),
        other => other,
    });
    let url = server.url();
    let options = Options::parse(r#"{"parallel": 4}"#).unwrap();
    let started = Instant::now();
    let result = get_images_batch(&request(&url), &eight(), &options);
    let took = started.elapsed();
    eprintln!(
        "batch of 8 x 200 ms, parallel 4: {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    let json = parse(&result);
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r["data"][0]["revised_prompt"],
            format!("p{i}"),
            "order kept"
        );
    }
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "{took:?} (sequential would be 1600 ms)"
    );
    assert_eq!(server.requests().len(), 8);
}

#[test]
fn one_failing_item_leaves_the_others_intact() {
    let handler = images_handler();
    let server = TestServer::start(move |req, i| {
        if req.body_text().contains("\"bad\"") {
            Action::Reply(Reply::json(
                400,
                r#"{"error":{"message":"bad prompt","type":"invalid_request_error","param":null,"code":null}}"#,
            ))
        } else {
            handler(req, i)
        }
    });
    let url = server.url();
    let descrs = r#"[{"prompt":"a"}, {"prompt":"bad"}, 5, "not json", {"prompt":"e"}]"#;
    let result = get_images_batch(&request(&url), descrs, &Options::default());
    let json = parse(&result);
    let r = json["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0]["data"][0]["revised_prompt"], "a");
    assert_eq!(r[1]["error"]["message"], "bad prompt");
    assert_eq!(r[2]["error"]["code"], "invalid_argument");
    assert_eq!(r[2]["error"]["param"], "descrs");
    assert_eq!(r[3]["error"]["param"], "descr");
    assert_eq!(r[4]["data"][0]["revised_prompt"], "e");
    // Each item is exactly what a single call returns.
    let single = opi_openai::get_images_ex(
        &ImageRequest {
            descr: r#"{"prompt":"bad"}"#,
            ..request(&url)
        },
        "",
    );
    assert_eq!(r[1], parse(&single));
}

#[test]
fn save_dir_names_never_collide_across_items() {
    // The same `created` in every answer: the names would all be <created>_0.png and _1.png.
    let handler = images_handler();
    let server = TestServer::start(move |req, _| match handler(req, 0) {
        Action::Reply(reply) => Action::Reply(reply.delayed(Duration::from_millis(20))),
        other => other,
    });
    let dir = tempfile::tempdir().unwrap();
    let descrs = Value::Array(
        (0..12)
            .map(|i| serde_json::json!({"prompt": format!("p{i}"), "n": 2}))
            .collect(),
    )
    .to_string();
    let options = Options::parse(&format!(
        r#"{{"save_dir": {}, "parallel": 16}}"#,
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    ))
    .unwrap();
    let url = server.url();
    let result = get_images_batch(&request(&url), &descrs, &options);
    let json = parse(&result);
    let mut files: Vec<String> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["data"].as_array().unwrap().clone())
        .map(|d| d["file"].as_str().expect("file").to_string())
        .collect();
    assert_eq!(files.len(), 24);
    files.sort();
    files.dedup();
    assert_eq!(files.len(), 24, "distinct names");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 24);
}

#[test]
fn bad_descrs_and_parallel_are_named() {
    let result = get_images_batch(
        &request("http://127.0.0.1:9/"),
        "{'prompt':'x'}",
        &Options::default(),
    );
    assert_eq!(error_code(&result).as_deref(), Some("invalid_argument"));
    assert_eq!(parse(&result)["error"]["param"], "descrs");
    let empty = get_images_batch(&request("http://127.0.0.1:9/"), "[]", &Options::default());
    assert_eq!(empty, r#"{"results":[]}"#);
    for bad in [
        r#"{"parallel": 0}"#,
        r#"{"parallel": 17}"#,
        r#"{"parallel": "4"}"#,
    ] {
        let err = Options::parse(bad).unwrap_err();
        assert!(err.to_string().contains("parallel"), "{bad}: {err}");
    }
}

#[test]
fn a_cancelled_batch_cancels_the_items_not_yet_run() {
    let handler = images_handler();
    let server = TestServer::start(move |req, i| match handler(req, i) {
        Action::Reply(reply) => Action::Reply(reply.delayed(Duration::from_millis(150))),
        other => other,
    });
    let url = server.url();
    let options = Options::parse(r#"{"parallel": 1}"#).unwrap();
    let token = Cancel::new();
    let t = token.clone();
    let result = std::thread::scope(|s| {
        let worker =
            s.spawn(|| token.scope(|| get_images_batch(&request(&url), &eight(), &options)));
        std::thread::sleep(Duration::from_millis(220));
        t.cancel();
        worker.join().unwrap()
    });
    let json = parse(&result);
    let r = json["results"].as_array().unwrap();
    assert_eq!(r.len(), 8);
    assert!(r[0]["data"].is_array(), "{}", r[0]);
    assert_eq!(r[7]["error"]["code"], "cancelled");
    assert!(server.requests().len() < 8);
}

#[test]
fn cancel_reaches_calls_blocked_in_every_worker() {
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(20)));
    let url = server.url();
    let options = Options::parse(r#"{"parallel": 4, "retries": 0}"#).unwrap();
    let token = Cancel::new();
    let t = token.clone();
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let worker =
            s.spawn(|| token.scope(|| get_images_batch(&request(&url), &eight(), &options)));
        std::thread::sleep(Duration::from_millis(300));
        t.cancel();
        worker.join().unwrap()
    });
    let took = started.elapsed();
    eprintln!(
        "batch cancelled after {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    let json = parse(&result);
    let r = json["results"].as_array().unwrap();
    assert!(
        r.iter().all(|item| item["error"]["code"] == "cancelled"),
        "{result}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(server.requests().len() <= 4);
}
