//! The add-in's variant conversion and GetImageDescriptionStructure on any parameters a host can pass.
//! The properties are asserted in `opi_openai::fuzzing::addin_variant`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opi_openai::fuzzing::addin_variant(data));
