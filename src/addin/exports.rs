//! The Native API's exported functions, beside the C API in the same library.
//!
//! 1C's headers declare these `extern "C"` with no calling convention, so they are `cdecl`
//! even on 32-bit Windows (only the interface methods are `stdcall`); on 64-bit targets the
//! two are the same.

#![allow(non_snake_case)] // the names 1C looks up

use super::host::read_wide_cstr;
use super::vtables::AddInObject;
use super::{guard, same_name, CLASS_NAME};
use std::ffi::{c_int, c_long, c_void};

/// `CLASS_NAME` as a NUL-terminated UTF-16 string, built at compile time (the name is ASCII).
static CLASS_NAMES: [u16; CLASS_NAME.len() + 1] = {
    let ascii = CLASS_NAME.as_bytes();
    let mut units = [0u16; CLASS_NAME.len() + 1];
    let mut i = 0;
    while i < ascii.len() {
        assert!(ascii[i].is_ascii());
        units[i] = ascii[i] as u16;
        i += 1;
    }
    units
};

/// The classes this add-in offers, `|`-separated: just `Main`. The string is static: the host
/// reads it and must not free it.
#[no_mangle]
pub extern "C" fn GetClassNames() -> *const u16 {
    CLASS_NAMES.as_ptr()
}

/// Creates a `Main` object and stores it in `*component`. The name is matched
/// case-insensitively; another name, or a NULL argument, returns 0 and creates nothing.
/// Returns 1 on success. The object is freed by [`DestroyObject`], or by the host deleting it
/// through its virtual destructor after `Done` (OneScript does that).
///
/// # Safety
/// `name` is NULL or a NUL-terminated UTF-16 string; `component` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn GetClassObject(name: *const u16, component: *mut *mut c_void) -> c_long {
    guard(0, || {
        if name.is_null() || component.is_null() {
            return 0;
        }
        // SAFETY: per the contract.
        if !same_name(&unsafe { read_wide_cstr(name) }, CLASS_NAME) {
            return 0;
        }
        // SAFETY: `component` is writable (checked non-NULL).
        unsafe { *component = AddInObject::create().cast() };
        1
    })
}

/// Frees an object from [`GetClassObject`] and sets `*component` to NULL. Returns 0, or -1
/// when there is nothing to free.
///
/// # Safety
/// `component` is NULL or points at NULL or at an object from `GetClassObject` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn DestroyObject(component: *mut *mut c_void) -> c_long {
    guard(-1, || {
        // SAFETY: per the contract.
        let Some(slot) = (unsafe { component.as_mut() }) else {
            return -1;
        };
        if slot.is_null() {
            return -1;
        }
        // SAFETY: `*slot` is an object from `GetClassObject`, freed here once.
        unsafe { AddInObject::destroy((*slot).cast()) };
        *slot = std::ptr::null_mut();
        0
    })
}

/// The host tells its capabilities; the answer is the newest level this add-in works with
/// (3: `eAppCapabilities3`).
#[no_mangle]
pub extern "C" fn SetPlatformCapabilities(_capabilities: c_int) -> c_int {
    3
}

/// Where 1C may load the add-in: 3, any (isolated or not). OPI attaches non-isolated because
/// isolated mode on Linux cannot pass large strings; LastResult covers that case.
#[no_mangle]
pub extern "C" fn GetAttachType() -> c_int {
    3
}
