//! Streamed calls (`get_images_stream`) against our streaming test server on 127.0.0.1: the
//! spec's events with partial images, split across TCP writes at awkward places, CRLF framing,
//! comments, error events, cut streams, cancellation, and the plain JSON fallback.

mod support;

use base64::Engine;
use opi_openai::{get_images_stream, Cancel, ImageRequest, Options, StreamEvent};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::server::png;
use support::sse::{
    awkward_writes, chunk, completed_json, event, partial_json, sse_chunked_head, sse_head,
    SseServer, Step,
};
use support::{error_code, parse, Action, Reply, TestServer};

const DESCR: &str = "{'prompt':'Yellow alpaca','partial_images':3,'size':'1024x1024'}";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What the callback saw of one event.
#[derive(Debug, Clone)]
struct Seen {
    kind: String,
    index: Option<u32>,
    json: Value,
    file: Option<std::path::PathBuf>,
    b64_bytes: usize,
}

fn call(url: &str, options: &Options) -> (String, Vec<Seen>) {
    let mut seen = Vec::new();
    let req = ImageRequest {
        url,
        token: "sk-test-stream-token",
        model: "gpt-image-1.5",
        descr: DESCR,
        headers: "",
    };
    let result = get_images_stream(
        &req,
        options,
        &mut |e: &StreamEvent| {
            seen.push(Seen {
                kind: e.kind.to_string(),
                index: e.index,
                json: serde_json::from_str(e.json).expect("event JSON"),
                file: e.file.map(|p| p.to_path_buf()),
                b64_bytes: e.b64_bytes,
            });
            true
        },
        &mut |_| {},
    );
    (result, seen)
}

/// The spec's stream: a comment, partial images 0..3 and the completed event, in `eol`
/// framing, ending with `[DONE]`.
fn spec_stream(eol: &str, partial: &str, last: &str) -> Vec<u8> {
    let mut body = format!(": keep-alive comment{eol}{eol}");
    for k in 0..3 {
        body.push_str(&event(
            "image_generation.partial_image",
            &partial_json(k, partial),
            eol,
        ));
    }
    body.push_str(&event(
        "image_generation.completed",
        &completed_json(last),
        eol,
    ));
    body.push_str(&format!("data: [DONE]{eol}{eol}"));
    body.into_bytes()
}

#[test]
fn partial_images_then_the_result_in_the_non_streaming_shape() {
    let (partial, last) = (b64(&png(8, 8)), b64(&png(64, 64)));
    for eol in ["\n", "\r\n", "\r"] {
        let stream = spec_stream(eol, &partial, &last);
        let server = SseServer::start(move |_| {
            let mut steps = vec![Step::Write(sse_head())];
            steps.extend(awkward_writes(&stream));
            steps
        });
        let (result, seen) = call(&server.url(), &Options::default());
        let json = parse(&result);
        assert_eq!(json["created"], 1620000000, "{eol:?}: {result}");
        assert_eq!(json["data"].as_array().unwrap().len(), 1);
        assert_eq!(json["data"][0]["b64_json"], last.as_str());
        assert_eq!(json["usage"]["total_tokens"], 100);
        for (k, v) in [
            ("size", "1024x1024"),
            ("quality", "high"),
            ("background", "transparent"),
            ("output_format", "png"),
        ] {
            assert_eq!(json[k], v, "{k}");
        }
        let kinds: Vec<_> = seen.iter().map(|s| (s.kind.as_str(), s.index)).collect();
        assert_eq!(
            kinds,
            [
                ("image_generation.partial_image", Some(0)),
                ("image_generation.partial_image", Some(1)),
                ("image_generation.partial_image", Some(2)),
                ("image_generation.completed", None),
            ],
            "{eol:?}"
        );
        assert_eq!(seen[0].b64_bytes, partial.len());
        assert_eq!(seen[0].json["b64_json"], partial.as_str());
        assert_eq!(seen[3].b64_bytes, last.len());
        assert!(seen.iter().all(|s| s.file.is_none()));
        let sent: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["partial_images"], 3);
        assert_eq!(sent["model"], "gpt-image-1.5");
    }
}

#[test]
fn chunked_stream_with_a_bom_and_multi_line_data() {
    let last = b64(&png(16, 16));
    let completed = completed_json(&last);
    // The JSON cut over two data: lines (joined by LF, which JSON allows between tokens).
    let (a, b) = completed.split_at(completed.find(",\"created_at\"").unwrap());
    let body = format!(
        "\u{feff}id: 1\r\nretry: 5000\r\nevent: image_generation.completed\r\ndata: {a}\r\ndata: {b}\r\n\r\n"
    );
    let server = SseServer::start(move |_| {
        let mut steps = vec![Step::Write(sse_chunked_head())];
        for piece in body.as_bytes().chunks(5) {
            steps.push(Step::Write(chunk(piece)));
        }
        steps.push(Step::Write(b"0\r\n\r\n".to_vec()));
        steps
    });
    let (result, seen) = call(&server.url(), &Options::default());
    assert_eq!(
        parse(&result)["data"][0]["b64_json"],
        last.as_str(),
        "{result}"
    );
    assert_eq!(seen.len(), 1);
}

#[test]
fn save_dir_gets_every_partial_and_final_image_under_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    let (partial, last) = (b64(&png(8, 8)), b64(&png(64, 64)));
    let stream = spec_stream("\n", &partial, &last);
    let server =
        SseServer::start(move |_| vec![Step::Write(sse_head()), Step::Write(stream.clone())]);
    let options = Options::parse(&format!(
        r#"{{"save_dir": {}, "drop_b64": true}}"#,
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    ))
    .unwrap();
    // Twice: the second call's names must not collide with the first's.
    let mut all = Vec::new();
    for _ in 0..2 {
        let (result, seen) = call(&server.url(), &options);
        let json = parse(&result);
        let file = json["data"][0]["file"].as_str().expect("file").to_string();
        assert!(json["data"][0].get("b64_json").is_none(), "drop_b64");
        assert_eq!(std::fs::read(&file).unwrap(), png(64, 64));
        assert_eq!(seen.len(), 4);
        for s in &seen {
            let path = s.file.as_ref().expect("every image event saved");
            assert_eq!(s.json["file"], path.to_str().unwrap());
            assert!(s.json.get("b64_json").is_none(), "drop_b64 in events too");
            assert!(s.b64_bytes > 0);
            all.push(path.clone());
        }
        assert_eq!(seen[3].file.as_ref().unwrap().to_str().unwrap(), file);
        assert_eq!(
            std::fs::read(seen[0].file.as_ref().unwrap()).unwrap(),
            png(8, 8)
        );
    }
    let names: Vec<String> = all
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{names:?}");
    assert!(
        names.contains(&"1620000000_0.partial0.png".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"1620000000_0.png".to_string()), "{names:?}");
}

#[test]
fn an_error_event_is_the_result() {
    let partial = b64(&png(8, 8));
    let error = r#"{"type":"error","error":{"type":"image_generation_user_error","code":"moderation_blocked","message":"Your request was rejected","param":null}}"#;
    let body = format!(
        "{}{}",
        event(
            "image_generation.partial_image",
            &partial_json(0, &partial),
            "\r\n"
        ),
        event("error", error, "\r\n")
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(body.clone().into_bytes()),
        ]
    });
    let (result, seen) = call(&server.url(), &Options::default());
    let json = parse(&result);
    assert_eq!(json["error"]["code"], "moderation_blocked", "{result}");
    assert_eq!(json["error"]["type"], "image_generation_user_error");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].kind, "error");
}

#[test]
fn a_stream_cut_before_completed_is_incomplete() {
    let partial = b64(&png(8, 8));
    let events = format!(
        "{}{}",
        event(
            "image_generation.partial_image",
            &partial_json(0, &partial),
            "\n"
        ),
        event(
            "image_generation.partial_image",
            &partial_json(1, &partial),
            "\n"
        ),
    );
    // Close-delimited: a clean end. Chunked: the connection breaks mid-body.
    let clean = events.clone();
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(clean.clone().into_bytes()),
        ]
    });
    let (result, seen) = call(&server.url(), &Options::default());
    assert_eq!(
        error_code(&result).as_deref(),
        Some("incomplete_stream"),
        "{result}"
    );
    assert_eq!(parse(&result)["error"]["type"], "opi_client_error");
    assert_eq!(seen.len(), 2);
    let broken = events;
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_chunked_head()),
            Step::Write(chunk(broken.as_bytes())),
            Step::Write(b"400\r\ndata: {\"type\":\"image_gen".to_vec()),
        ]
    });
    let (result, seen) = call(&server.url(), &Options::default());
    assert_eq!(
        error_code(&result).as_deref(),
        Some("incomplete_stream"),
        "{result}"
    );
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_plain_json_answer_is_handled_as_get_images() {
    let answer = r#"{"created":1750098846,"data":[{"b64_json":"aGVsbG8="}]}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, answer)));
    let url = server.url();
    let (result, seen) = call(&url, &Options::default());
    assert_eq!(result, answer);
    assert!(seen.is_empty());
    let error = r#"{"error":{"message":"Unknown parameter: 'stream'.","type":"invalid_request_error","param":"stream","code":"unknown_parameter"}}"#;
    let server = TestServer::start(move |_, _| Action::Reply(Reply::json(400, error)));
    let (result, _) = call(&server.url(), &Options::default());
    assert_eq!(result, error);
}

#[test]
fn a_nonzero_return_closes_the_connection_at_once() {
    let partial = b64(&png(8, 8));
    let first = event(
        "image_generation.partial_image",
        &partial_json(0, &partial),
        "\n",
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(first.clone().into_bytes()),
            Step::Sleep(Duration::from_secs(10)),
        ]
    });
    let req = ImageRequest {
        url: &server.url(),
        token: "",
        model: "",
        descr: DESCR,
        headers: "",
    };
    let mut returned_at = None;
    let started = Instant::now();
    let result = get_images_stream(
        &req,
        &Options::default(),
        &mut |_| {
            returned_at = Some(Instant::now());
            false
        },
        &mut |_| {},
    );
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let returned_at = returned_at.expect("the callback ran");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.closed().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let closed = *server
        .closed()
        .first()
        .expect("the server saw the connection closed");
    let latency = closed.saturating_duration_since(returned_at);
    eprintln!(
        "cancel-close latency: {:.1} ms",
        latency.as_secs_f64() * 1000.0
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[test]
fn cancel_from_another_thread_between_events() {
    let partial = b64(&png(8, 8));
    let server = SseServer::start(move |_| {
        let mut steps = vec![Step::Write(sse_head())];
        for k in 0..50 {
            steps.push(Step::Write(
                event(
                    "image_generation.partial_image",
                    &partial_json(k % 3, &partial),
                    "\n",
                )
                .into_bytes(),
            ));
            steps.push(Step::Sleep(Duration::from_millis(100)));
        }
        steps
    });
    let token = Cancel::new();
    let url = server.url();
    let t = token.clone();
    let started = Instant::now();
    let (result, seen) = std::thread::scope(|s| {
        let worker = s.spawn(|| token.scope(|| call(&url, &Options::default())));
        std::thread::sleep(Duration::from_millis(350));
        t.cancel();
        worker.join().unwrap()
    });
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert!(!seen.is_empty() && seen.len() < 50, "{}", seen.len());
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_stalled_stream_ends_at_the_timeout() {
    let partial = b64(&png(8, 8));
    let first = event(
        "image_generation.partial_image",
        &partial_json(0, &partial),
        "\n",
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(first.clone().into_bytes()),
            Step::Sleep(Duration::from_secs(20)),
        ]
    });
    let options = Options::parse(r#"{"timeout": 1.5}"#).unwrap();
    let started = Instant::now();
    let (result, seen) = call(&server.url(), &options);
    let took = started.elapsed();
    assert_eq!(error_code(&result).as_deref(), Some("timeout"), "{result}");
    assert_eq!(seen.len(), 1);
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn a_stream_larger_than_max_response_mb_is_too_large() {
    // 2 MiB of partial images against a 1 MiB limit.
    let partial = "A".repeat(512 * 1024);
    let mut body = String::new();
    for k in 0..4 {
        body.push_str(&event(
            "image_generation.partial_image",
            &partial_json(k, &partial),
            "\n",
        ));
    }
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(body.clone().into_bytes()),
        ]
    });
    let options = Options::parse(r#"{"max_response_mb": 1}"#).unwrap();
    let (result, seen) = call(&server.url(), &options);
    assert_eq!(
        error_code(&result).as_deref(),
        Some("too_large"),
        "{result}"
    );
    assert!(seen.len() < 4);
}

#[test]
fn two_completed_events_give_two_images_and_full_response_wraps_the_result() {
    let (a, b) = (b64(&png(8, 8)), b64(&png(16, 16)));
    let body = format!(
        "{}{}",
        event("image_generation.completed", &completed_json(&a), "\n"),
        event("image_generation.completed", &completed_json(&b), "\n"),
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(body.clone().into_bytes()),
        ]
    });
    let dir = tempfile::tempdir().unwrap();
    let options = Options::parse(&format!(
        r#"{{"save_dir": {}, "response": "full"}}"#,
        serde_json::to_string(dir.path().to_str().unwrap()).unwrap()
    ))
    .unwrap();
    let (result, _) = call(&server.url(), &options);
    let json = parse(&result);
    assert_eq!(json["status"], 200, "{result}");
    assert!(json["headers"]["content-type"]
        .as_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = json["body"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["b64_json"], b.as_str());
    let names: Vec<_> = data
        .iter()
        .map(|d| {
            std::path::Path::new(d["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["1620000000_0.png", "1620000000_1.png"]);
}

#[test]
fn the_token_echoed_in_an_event_never_reaches_the_caller() {
    let last = b64(&png(8, 8));
    let echo = r#"{"type":"image_generation.partial_image","b64_json":"AAAA","partial_image_index":0,"note":"Bearer sk-test-stream-token"}"#;
    let body = format!(
        "{}{}",
        event("image_generation.partial_image", echo, "\n"),
        event("image_generation.completed", &completed_json(&last), "\n"),
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(body.clone().into_bytes()),
        ]
    });
    let (result, seen) = call(&server.url(), &Options::default());
    assert!(!result.contains("sk-test-stream-token"));
    assert_eq!(seen[0].json["note"], "Bearer ***");
}

#[test]
fn cancel_from_another_thread_while_the_read_is_blocked() {
    let partial = b64(&png(8, 8));
    let first = event(
        "image_generation.partial_image",
        &partial_json(0, &partial),
        "\n",
    );
    let server = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(first.clone().into_bytes()),
            Step::Sleep(Duration::from_secs(20)),
        ]
    });
    let token = Cancel::new();
    let url = server.url();
    let t = token.clone();
    let (result, seen, cancelled_at) = std::thread::scope(|s| {
        let worker = s.spawn(|| token.scope(|| call(&url, &Options::default())));
        // The first event arrives at once; then the call waits in a read.
        std::thread::sleep(Duration::from_millis(300));
        let cancelled_at = Instant::now();
        t.cancel();
        let (result, seen) = worker.join().unwrap();
        (result, seen, cancelled_at)
    });
    let returned = cancelled_at.elapsed();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{result}"
    );
    assert_eq!(seen.len(), 1);
    eprintln!(
        "blocked read: returned {:.1} ms after cancel",
        returned.as_secs_f64() * 1000.0
    );
    assert!(returned < Duration::from_secs(3), "{returned:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.closed().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let closed = *server
        .closed()
        .first()
        .expect("the server saw the connection closed");
    eprintln!(
        "blocked read: connection closed {:.1} ms after cancel",
        closed.saturating_duration_since(cancelled_at).as_secs_f64() * 1000.0
    );
}

#[test]
fn a_redirect_is_followed_to_the_stream() {
    let last = b64(&png(8, 8));
    let body = event("image_generation.completed", &completed_json(&last), "\n");
    let stream = SseServer::start(move |_| {
        vec![
            Step::Write(sse_head()),
            Step::Write(body.clone().into_bytes()),
        ]
    });
    let target = format!("{}/images/generations", stream.url());
    let front = TestServer::start(move |_, _| {
        Action::Reply(Reply::json(307, "").header("Location", &target))
    });
    let (result, seen) = call(&front.url(), &Options::default());
    assert_eq!(
        parse(&result)["data"][0]["b64_json"],
        last.as_str(),
        "{result}"
    );
    assert_eq!(seen.len(), 1);
    let sent: Value = serde_json::from_slice(&stream.requests()[0].body).unwrap();
    assert_eq!(sent["stream"], true, "307 repeats the POST with its body");
}
