//! The OpenAI contract: what the library sends is a valid `CreateImageRequest`, and the
//! spec's own example responses come back byte for byte and valid as `ImagesResponse`.
//!
//! The schemas and examples come from `tests/fixtures/openapi-images.json`, extracted from the
//! official OpenAPI spec by `tests/fixtures/extract_openapi.py` (see its `source` object for
//! the spec version and the `nullable` rewrites).

mod support;

use jsonschema::Validator;
use serde_json::{json, Value};
use support::server::images_handler;
use support::{Action, Recorded, Reply, TestServer};

const FIXTURE: &str = include_str!("fixtures/openapi-images.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

fn schema(name: &str) -> Value {
    let schema = fixture()["schemas"][name].clone();
    assert!(schema.is_object(), "the fixture has no schema {name}");
    schema
}

/// A 2020-12 validator for one of the fixture's schemas (the fixture says `$schema`
/// 2020-12; the draft is also forced here so a missing `$schema` could not fall back).
fn validator(name: &str) -> Validator {
    jsonschema::draft202012::new(&schema(name))
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

/// Every reason `instance` is not valid, one line each (empty when valid).
fn violations(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(name: &str, instance: &Value) {
    let problems = violations(&validator(name), instance);
    assert!(
        problems.is_empty(),
        "not a valid {name}: {problems:?}\n{instance:#}"
    );
}

/// Sends one description through `get_images` to a local image server and returns the body
/// the server received, parsed.
fn body_sent(model: &str, descr: &str) -> Value {
    let server = TestServer::start(images_handler());
    let result = support::get_images(&server.url(), "sk-test", model, descr, "");
    let answer = support::parse(&result);
    assert!(answer.get("error").is_none(), "the call failed: {result}");
    let requests: Vec<Recorded> = server.requests();
    assert_eq!(requests.len(), 1, "one request expected");
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/images/generations");
    serde_json::from_slice(&req.body)
        .unwrap_or_else(|e| panic!("the body sent is not JSON ({e}): {}", req.body_text()))
}

// --- the fixture itself ---------------------------------------------------------------------

#[test]
fn fixture_names_the_spec_it_came_from() {
    let source = &fixture()["source"];
    assert_eq!(source["title"], "OpenAI API");
    assert!(
        source["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{source}"
    );
    assert!(
        source["sha256"].as_str().is_some_and(|h| h.len() == 64),
        "{source}"
    );
}

#[test]
fn fixture_schemas_are_standalone_2020_12_documents() {
    for name in ["CreateImageRequest", "ImagesResponse"] {
        let schema = schema(name);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(
            !schema.to_string().contains("#/components/"),
            "{name} still points into components"
        );
        assert!(
            !schema.to_string().contains("\"nullable\""),
            "{name} still has OpenAPI 3.0 nullable"
        );
        let meta = jsonschema::meta::validate(&schema);
        assert!(
            meta.is_ok(),
            "{name} is not a valid 2020-12 schema: {meta:?}"
        );
    }
}

// --- the validators are live ----------------------------------------------------------------

#[test]
fn request_schema_rejects_a_prompt_that_is_a_number() {
    let v = validator("CreateImageRequest");
    assert!(!violations(&v, &json!({"prompt": 42, "model": "dall-e-3"})).is_empty());
}

#[test]
fn request_schema_rejects_a_missing_prompt_and_n_out_of_range() {
    let v = validator("CreateImageRequest");
    assert!(!violations(&v, &json!({"model": "dall-e-3", "n": 1})).is_empty());
    assert!(!violations(&v, &json!({"prompt": "x", "n": 11})).is_empty());
    assert!(!violations(&v, &json!({"prompt": "x", "quality": "ultra"})).is_empty());
}

#[test]
fn request_schema_takes_null_where_the_spec_says_nullable() {
    // Shows the fixture's nullable rewrite is in force: without it `n: null` would fail.
    assert_valid(
        "CreateImageRequest",
        &json!({"prompt": "x", "n": null, "model": null, "quality": null}),
    );
}

#[test]
fn response_schema_rejects_a_response_without_created() {
    let v = validator("ImagesResponse");
    assert!(!violations(&v, &json!({"data": [{"b64_json": "AAAA"}]})).is_empty());
    assert!(!violations(&v, &json!({"created": "yesterday"})).is_empty());
}

// --- what the library sends ------------------------------------------------------------------

#[test]
fn seed_description_sent_for_dall_e_3_is_a_valid_create_image_request() {
    let body = body_sent(
        "dall-e-3",
        "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}",
    );
    assert_eq!(
        body,
        json!({"model": "dall-e-3", "prompt": "Yellow alpaca", "n": 1, "size": "1024x1024"})
    );
    assert_valid("CreateImageRequest", &body);
}

#[test]
fn gpt_image_description_with_every_gpt_option_is_a_valid_create_image_request() {
    let descr = r#"{"prompt":"A lighthouse at dusk, watercolour","n":2,"size":"1536x1024",
        "quality":"high","output_format":"webp","output_compression":80,
        "background":"opaque","moderation":"low"}"#;
    let body = body_sent("gpt-image-1", descr);
    assert_eq!(body["model"], "gpt-image-1");
    assert_eq!(body["output_compression"], 80);
    assert_valid("CreateImageRequest", &body);
}

#[test]
fn description_built_by_image_description_structure_is_a_valid_create_image_request() {
    let descr = opi_openai::image_description_structure(
        "Yellow alpaca",
        1,
        "transparent",
        "1024x1024",
        "{'output_format':'png','quality':'medium'}",
    );
    assert!(support::parse(&descr).get("error").is_none(), "{descr}");
    let body = body_sent("gpt-image-1.5", &descr);
    assert_eq!(body["background"], "transparent");
    assert_eq!(body["output_format"], "png");
    assert_valid("CreateImageRequest", &body);
}

#[test]
fn description_with_its_own_model_is_a_valid_create_image_request() {
    let body = body_sent(
        "dall-e-3",
        r#"{"model":"gpt-image-2","prompt":"A red fox in snow","size":"1536x864"}"#,
    );
    assert_eq!(body["model"], "gpt-image-2", "the description's model wins");
    assert_valid("CreateImageRequest", &body);
}

#[test]
fn dall_e_3_description_with_style_and_response_format_is_a_valid_create_image_request() {
    let descr = "{'prompt':'A quiet harbour','quality':'hd','style':'natural','response_format':'b64_json','user':'user-1234'}";
    let body = body_sent("dall-e-3", descr);
    assert_valid("CreateImageRequest", &body);
}

// --- what comes back -------------------------------------------------------------------------

/// Every JSON example response the fixture carries: the createImage operation's own, then the
/// `ImagesResponse` schema's.
fn example_responses() -> Vec<(String, String)> {
    let f = fixture();
    let mut out = Vec::new();
    for key in ["example_responses", "schema_example_responses"] {
        for ex in f[key].as_array().into_iter().flatten() {
            let text = ex["response"]
                .as_str()
                .expect("an example response is text")
                .to_string();
            out.push((ex["from"].as_str().unwrap_or(key).to_string(), text));
        }
    }
    out
}

#[test]
fn fixture_carries_the_create_image_operation_example_response() {
    let f = fixture();
    let ops = f["example_responses"]
        .as_array()
        .expect("example_responses");
    assert!(!ops.is_empty());
    assert!(ops.iter().all(|e| e["from"]
        .as_str()
        .unwrap()
        .starts_with("paths./images/generations.post.")));
}

#[test]
fn spec_example_responses_come_back_byte_for_byte_and_valid() {
    let examples = example_responses();
    assert!(
        examples.len() >= 2,
        "expected the operation's and the schema's examples"
    );
    for (from, text) in examples {
        let bytes = text.clone();
        let server = TestServer::start(move |_, _| Action::Reply(Reply::json(200, bytes.clone())));
        let result = support::get_images(
            &server.url(),
            "sk-test",
            "gpt-image-1.5",
            "{'prompt':'A cute baby sea otter','n':1,'size':'1024x1024'}",
            "",
        );
        assert_eq!(
            result, text,
            "{from}: the result differs from the server's bytes"
        );
        let parsed: Value = serde_json::from_str(&result).unwrap_or_else(|e| panic!("{from}: {e}"));
        let problems = violations(&validator("ImagesResponse"), &parsed);
        assert!(
            problems.is_empty(),
            "{from}: not a valid ImagesResponse: {problems:?}"
        );
    }
}

#[test]
fn local_image_server_answer_is_a_valid_images_response() {
    // The answer the benchmark and the examples use is itself within the contract.
    let server = TestServer::start(images_handler());
    let result = support::get_images(
        &server.url(),
        "",
        "dall-e-3",
        "{'prompt':'Yellow alpaca','n':3}",
        "",
    );
    let parsed = support::parse(&result);
    assert_eq!(parsed["data"].as_array().map(Vec::len), Some(3));
    assert_valid("ImagesResponse", &parsed);
}
