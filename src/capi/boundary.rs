//! The panic boundary and the pointer helpers every exported function uses.

use crate::Error;
use std::ffi::{c_char, CStr, CString};

/// Runs an exported function's body; a panic becomes an error result instead of unwinding
/// into C (which is undefined behaviour and would take the 1C server down).
macro_rules! ffi_boundary {
    ($body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(result) => result,
            Err(_) => $crate::capi::boundary::into_c_string($crate::capi::boundary::panic_result()),
        }
    };
}
pub(crate) use ffi_boundary;

/// The result returned when a panic was caught.
pub(crate) fn panic_result() -> String {
    Error::Io("internal error: the library caught a panic; please report it".into())
        .to_result_json()
}

/// Reads an optional argument: NULL is `""`; invalid UTF-8 is an error naming `param`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the call.
pub(crate) unsafe fn optional_str<'a>(
    ptr: *const c_char,
    param: &'static str,
) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Ok("");
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map_err(|_| Error::invalid(param, format!("{param} is not valid UTF-8")))
}

/// Reads a required argument: NULL is an error naming `param`.
///
/// # Safety
/// As [`optional_str`].
pub(crate) unsafe fn required_str<'a>(
    ptr: *const c_char,
    param: &'static str,
) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(Error::invalid(param, format!("{param} is NULL")));
    }
    optional_str(ptr, param)
}

/// Hands a result to C without another pass over it: every result is JSON that serde_json
/// produced or validated, and JSON cannot hold a raw NUL (inside strings it must be escaped).
pub(crate) fn into_c_string(text: String) -> *mut c_char {
    debug_assert!(!text.as_bytes().contains(&0), "a result held a NUL byte");
    let mut bytes = text.into_bytes();
    bytes.push(0);
    // SAFETY: the only NUL is the one just pushed (see above).
    unsafe { CString::from_vec_with_nul_unchecked(bytes) }.into_raw()
}
