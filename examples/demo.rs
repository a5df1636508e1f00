//! The demo: generate an image through the library and save it as a PNG.
//!
//! `cargo run --release --example demo` starts the bundled local image server (127.0.0.1,
//! a free port) and calls it. With `OPENAI_URL` and `OPENAI_TOKEN` set it calls that server
//! instead (e.g. `OPENAI_URL=https://api.openai.com/v1`); `OPENAI_MODEL` picks the model
//! (default `gpt-image-1.5`), `OPENAI_PROMPT` the prompt. The image goes to `target/demo/`.

#[path = "../tests/support/server.rs"]
mod server;

use base64::Engine;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let real = std::env::var("OPENAI_URL").ok().filter(|u| !u.is_empty());
    let token = std::env::var("OPENAI_TOKEN").unwrap_or_default();
    // The local server lives as long as `main`.
    let (url, _local) = match &real {
        Some(url) => (url.clone(), None),
        None => {
            let local = server::TestServer::start(server::images_handler());
            (local.url(), Some(local))
        }
    };
    let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-image-1.5".into());
    let prompt = std::env::var("OPENAI_PROMPT").unwrap_or_else(|_| "Yellow alpaca".into());
    // DALL-E answers with a URL unless asked for b64_json; GPT image models reject the field.
    let extra = if model.starts_with("dall-e") {
        r#"{"response_format":"b64_json"}"#
    } else {
        ""
    };
    let descr = opi_openai::image_description_structure(&prompt, 1, "", "1024x1024", extra);

    println!("opi_openai {}", opi_openai::VERSION);
    println!(
        "server:  {}",
        if real.is_some() {
            url.as_str()
        } else {
            "bundled local server"
        }
    );
    println!("request: model {model}, description {descr}");
    let started = Instant::now();
    let result = opi_openai::get_images(&url, &token, &model, &descr, "");
    let elapsed = started.elapsed();

    let json: serde_json::Value = serde_json::from_str(&result).expect("results are JSON");
    if json.get("error").is_some() {
        eprintln!(
            "the call failed after {elapsed:.2?}:\n{}",
            serde_json::to_string_pretty(&json).unwrap()
        );
        std::process::exit(1);
    }
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/demo");
    std::fs::create_dir_all(&out_dir).expect("create target/demo");
    let created = json["created"].as_i64().unwrap_or(0);
    for (i, item) in json["data"].as_array().into_iter().flatten().enumerate() {
        if let Some(b64) = item["b64_json"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("valid base64");
            let path = out_dir.join(format!("{created}_{i}.png"));
            std::fs::write(&path, &bytes).expect("write the image");
            println!("image {i}: {} ({} bytes)", path.display(), bytes.len());
        } else if let Some(u) = item["url"].as_str() {
            println!("image {i}: {u}");
        }
        if let Some(p) = item["revised_prompt"].as_str() {
            println!("revised prompt: {p}");
        }
    }
    println!("done in {elapsed:.2?}");
}
