//! The three input forms (descr, headers, options), the request body and the description builder.
//! The properties are asserted in `opi_openai::fuzzing::inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opi_openai::fuzzing::inputs(data));
