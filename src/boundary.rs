//! The one panic boundary: every exported C function and every 1C Native API entry point runs
//! its body through [`catch`], so no panic unwinds into the host (undefined behaviour, and in
//! practice a dead 1C server process). A caught panic becomes [`Error::Internal`] (code
//! `internal`), which each entry point turns into its own "failed" answer: an error result for
//! the C API, an error value plus `AddError` for a 1C method, `false`/`0`/NULL elsewhere.

use crate::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message of the error a caught panic becomes. The panic's own message is not included:
/// it could carry request data, and it already went to the panic hook (stderr).
pub(crate) const PANIC_MESSAGE: &str = "the library caught a panic; please report it";

/// Runs `body`; a panic becomes `on_panic(Error::Internal)` instead of unwinding. The panic
/// payload is dropped inside the boundary (dropping a payload can itself panic).
pub(crate) fn catch<T>(on_panic: impl FnOnce(Error) -> T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            on_panic(Error::Internal(PANIC_MESSAGE.into()))
        }
    }
}

/// The environment variable of the test-only panic probe (debug builds only, see
/// [`panic_probe`]).
#[cfg(debug_assertions)]
const PANIC_PROBE_VAR: &str = "OPI_OPENAI_PANIC_PROBE";

/// Test-only: in a debug build, panics when `OPI_OPENAI_PANIC_PROBE` names `point` (`capi`,
/// `addin`, `job`), so that tests can see a real panic cross each boundary. Release builds
/// compile it to nothing; a debug build needs that exact variable set to the exact point.
#[inline]
pub(crate) fn panic_probe(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(PANIC_PROBE_VAR).is_some_and(|v| v == point) {
        panic!("panic probe at {point} ({PANIC_PROBE_VAR})");
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error() {
        // The default hook prints the message; the hook is process-wide, so it is left alone.
        let code = catch(
            |e| e.code(),
            || -> &'static str { panic!("a deliberate panic inside the boundary") },
        );
        assert_eq!(code, "internal");
    }

    #[test]
    fn a_payload_that_panics_when_dropped_stays_inside() {
        struct Nasty;
        impl Drop for Nasty {
            fn drop(&mut self) {
                panic!("a payload that panics on drop");
            }
        }
        let value = catch(|_| -1, || -> i32 { std::panic::panic_any(Nasty) });
        assert_eq!(value, -1);
    }
}
