//! Response classification (empty, BOM, JSON, not JSON) plus the token scrub: the result is always JSON.
//! The properties are asserted in `opi_openai::fuzzing::classify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opi_openai::fuzzing::classify(data));
