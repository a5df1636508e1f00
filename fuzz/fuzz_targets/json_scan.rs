//! The one-pass UTF-8 + JSON validator and token scrub against serde_json.
//! The properties are asserted in `opi_openai::fuzzing::json_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opi_openai::fuzzing::json_scan(data));
