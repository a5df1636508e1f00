//! The Server-Sent Events parser: cutting a stream anywhere never changes its events.
//! The first byte says how many of the following bytes are cut points; the rest is the stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (cuts, bytes) = rest.split_at(usize::from(n % 16).min(rest.len()));
    opi_openai::fuzzing::sse(bytes, cuts);
});
