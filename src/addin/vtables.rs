//! The object 1C sees: a C++ `IComponentBase`, which inherits four interfaces, so it starts
//! with four vtable pointers. A call through interface `k` passes `this` = object + k words;
//! each thunk steps back to the object, runs inside [`guard`], and hands plain Rust values to
//! [`Component`].
//!
//! Every vtable begins with the virtual destructor slot(s) (see [`DESTRUCTOR_SLOTS`]): OneScript
//! deletes the object through them, so they are real functions, not NULL.
//!
//! Calling conventions, as 1C's `ADDIN_API` (`__stdcall` on Windows, nothing elsewhere):
//! the methods are `extern "system"`, which is exactly that on each target: `stdcall` on
//! 32-bit Windows (`this` pushed as the first stack argument, the callee pops), `C` elsewhere
//! (cdecl on Linux x86, the one convention of x86_64 Windows or Linux). The destructor slots
//! are not `ADDIN_API`: Itanium's take `this` as a C argument; MSVC's is `thiscall` on 32-bit
//! Windows (`this` in ECX) and the x64 convention otherwise (see [`DestructorFn`]). The
//! sizes and offsets are checked at compile time for each target below (`VTABLES`), and a
//! host with MSVC's 32-bit conventions drives the i686 build under wine (tests/windows.rs).

use super::component::Component;
use super::guard;
use super::host::{read_wide_cstr, Host, Memory, DESTRUCTOR_SLOTS};
use super::variant::{Arg, TVariant};
use std::ffi::{c_long, c_void};
use std::mem::{offset_of, size_of};

/// `IInitDoneBase`.
#[repr(C)]
pub(crate) struct InitDoneVtbl {
    destructors: Destructors,
    init: unsafe extern "system" fn(*mut c_void, *mut c_void) -> bool,
    set_mem_manager: unsafe extern "system" fn(*mut c_void, *mut c_void) -> bool,
    get_info: unsafe extern "system" fn(*mut c_void) -> c_long,
    done: unsafe extern "system" fn(*mut c_void),
}

/// `ILanguageExtenderBase`.
#[repr(C)]
pub(crate) struct LanguageExtenderVtbl {
    destructors: Destructors,
    register_extension_as: unsafe extern "system" fn(*mut c_void, *mut *mut u16) -> bool,
    get_n_props: unsafe extern "system" fn(*mut c_void) -> c_long,
    find_prop: unsafe extern "system" fn(*mut c_void, *const u16) -> c_long,
    get_prop_name: unsafe extern "system" fn(*mut c_void, c_long, c_long) -> *const u16,
    get_prop_val: unsafe extern "system" fn(*mut c_void, c_long, *mut TVariant) -> bool,
    set_prop_val: unsafe extern "system" fn(*mut c_void, c_long, *mut TVariant) -> bool,
    is_prop_readable: unsafe extern "system" fn(*mut c_void, c_long) -> bool,
    is_prop_writable: unsafe extern "system" fn(*mut c_void, c_long) -> bool,
    get_n_methods: unsafe extern "system" fn(*mut c_void) -> c_long,
    find_method: unsafe extern "system" fn(*mut c_void, *const u16) -> c_long,
    get_method_name: unsafe extern "system" fn(*mut c_void, c_long, c_long) -> *const u16,
    get_n_params: unsafe extern "system" fn(*mut c_void, c_long) -> c_long,
    get_param_def_value:
        unsafe extern "system" fn(*mut c_void, c_long, c_long, *mut TVariant) -> bool,
    has_ret_val: unsafe extern "system" fn(*mut c_void, c_long) -> bool,
    call_as_proc: unsafe extern "system" fn(*mut c_void, c_long, *mut TVariant, c_long) -> bool,
    call_as_func: unsafe extern "system" fn(
        *mut c_void,
        c_long,
        *mut TVariant,
        *mut TVariant,
        c_long,
    ) -> bool,
}

/// `LocaleBase`.
#[repr(C)]
pub(crate) struct LocaleVtbl {
    destructors: Destructors,
    set_locale: unsafe extern "system" fn(*mut c_void, *const u16),
}

/// `UserLanguageBase`.
#[repr(C)]
pub(crate) struct UserLanguageVtbl {
    destructors: Destructors,
    set_user_interface_language_code: unsafe extern "system" fn(*mut c_void, *const u16),
}

/// The add-in object: four vtable pointers in `IComponentBase`'s base order, then our state.
#[repr(C)]
pub(crate) struct AddInObject {
    init_done: &'static InitDoneVtbl,
    language_extender: &'static LanguageExtenderVtbl,
    locale: &'static LocaleVtbl,
    user_language: &'static UserLanguageVtbl,
    component: Component,
}

// Interface `k` sits at k words, as the thunks assume.
const WORD: usize = size_of::<usize>();
const _: () = {
    assert!(offset_of!(AddInObject, init_done) == 0);
    assert!(offset_of!(AddInObject, language_extender) == WORD);
    assert!(offset_of!(AddInObject, locale) == 2 * WORD);
    assert!(offset_of!(AddInObject, user_language) == 3 * WORD);
};

// Every interface's vtable on each of the four targets 1C runs on: the destructor slot(s)
// (two Itanium, one MSVC), then one word per method, in declaration order.
// `(first method, IInitDoneBase, ILanguageExtenderBase, LocaleBase, UserLanguageBase)`:
// the offset of the first method, then each vtable's size, in bytes.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const VTABLES: (usize, usize, usize, usize, usize) = (16, 48, 144, 24, 24);
#[cfg(all(target_os = "linux", target_arch = "x86"))]
const VTABLES: (usize, usize, usize, usize, usize) = (8, 24, 72, 12, 12);
#[cfg(all(windows, target_arch = "x86_64"))]
const VTABLES: (usize, usize, usize, usize, usize) = (8, 40, 136, 16, 16);
#[cfg(all(windows, target_arch = "x86"))]
const VTABLES: (usize, usize, usize, usize, usize) = (4, 20, 68, 8, 8);
#[cfg(any(
    all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")),
    all(windows, any(target_arch = "x86_64", target_arch = "x86"))
))]
const _: () = {
    let (first, init_done, language_extender, locale, user_language) = VTABLES;
    assert!(size_of::<InitDoneVtbl>() == init_done);
    assert!(offset_of!(InitDoneVtbl, init) == first);
    assert!(offset_of!(InitDoneVtbl, done) == first + 3 * WORD);
    assert!(size_of::<LanguageExtenderVtbl>() == language_extender);
    assert!(offset_of!(LanguageExtenderVtbl, register_extension_as) == first);
    assert!(offset_of!(LanguageExtenderVtbl, get_n_methods) == first + 8 * WORD);
    assert!(offset_of!(LanguageExtenderVtbl, call_as_func) == first + 15 * WORD);
    assert!(size_of::<LocaleVtbl>() == locale);
    assert!(offset_of!(LocaleVtbl, set_locale) == first);
    assert!(size_of::<UserLanguageVtbl>() == user_language);
    assert!(offset_of!(UserLanguageVtbl, set_user_interface_language_code) == first);
    assert!(size_of::<AddInObject>() >= 4 * WORD);
};

/// Interface numbers, in base-class order.
const INIT_DONE: usize = 0;
const LANGUAGE_EXTENDER: usize = 1;
const LOCALE: usize = 2;
const USER_LANGUAGE: usize = 3;

impl AddInObject {
    /// A new object on the heap, as `GetClassObject` hands it out (the pointer is the
    /// `IComponentBase*`). Freed by [`AddInObject::destroy`] or a deleting destructor.
    pub(crate) fn create() -> *mut AddInObject {
        Box::into_raw(Box::new(AddInObject {
            init_done: &INIT_DONE_VTBL,
            language_extender: &LANGUAGE_EXTENDER_VTBL,
            locale: &LOCALE_VTBL,
            user_language: &USER_LANGUAGE_VTBL,
            component: Component::default(),
        }))
    }

    /// Frees an object from [`AddInObject::create`].
    ///
    /// # Safety
    /// `object` came from `create` and is freed exactly once.
    pub(crate) unsafe fn destroy(object: *mut AddInObject) {
        // SAFETY: per the contract, `object` is a live Box allocation.
        drop(Box::from_raw(object));
    }
}

/// Steps back from interface `iface`'s `this` to the object.
fn object_of(this: *mut c_void, iface: usize) -> *mut AddInObject {
    this.cast::<u8>().wrapping_sub(iface * WORD).cast()
}

/// The component behind interface `iface`'s `this`; `None` for NULL.
///
/// # Safety
/// `this` is NULL or points at interface `iface` of a live [`AddInObject`].
unsafe fn component<'a>(this: *mut c_void, iface: usize) -> Option<&'a Component> {
    if this.is_null() {
        return None;
    }
    // SAFETY: per the contract, the object is live for the call.
    Some(&(*object_of(this, iface)).component)
}

// ---- Destructors --------------------------------------------------------------------------

/// The destructor slots' function type: Itanium destructors take `this` (we return it, as ARM's
/// C++ ABI expects and x86-64 ignores); MSVC's scalar deleting destructor also takes flags,
/// and is `thiscall` on 32-bit Windows.
#[cfg(not(windows))]
type DestructorFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
#[cfg(all(windows, not(target_arch = "x86")))]
type DestructorFn = unsafe extern "C" fn(*mut c_void, std::ffi::c_uint) -> *mut c_void;
#[cfg(all(windows, target_arch = "x86"))]
type DestructorFn = unsafe extern "thiscall" fn(*mut c_void, std::ffi::c_uint) -> *mut c_void;

type Destructors = [DestructorFn; DESTRUCTOR_SLOTS];

/// Itanium complete-object destructor (`D1`): destroys the members, keeps the storage.
#[cfg(not(windows))]
unsafe extern "C" fn complete_destructor<const IFACE: usize>(this: *mut c_void) -> *mut c_void {
    guard(this, || {
        // SAFETY: the host calls a destructor on a live object.
        if let Some(c) = unsafe { component(this, IFACE) } {
            c.release();
        }
        this
    })
}

/// Itanium deleting destructor (`D0`): what `delete component;` calls (OneScript's teardown).
#[cfg(not(windows))]
unsafe extern "C" fn deleting_destructor<const IFACE: usize>(this: *mut c_void) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        if !this.is_null() {
            // SAFETY: `delete` is called once on a live object that `GetClassObject` made.
            unsafe { AddInObject::destroy(object_of(this, IFACE)) };
        }
        std::ptr::null_mut()
    })
}

/// MSVC scalar deleting destructor: flag bit 0 asks for the storage to be freed too.
#[cfg(windows)]
unsafe fn scalar_deleting_destructor(
    this: *mut c_void,
    flags: std::ffi::c_uint,
    iface: usize,
) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        if this.is_null() {
            return this;
        }
        if flags & 1 != 0 {
            // SAFETY: as the Itanium deleting destructor.
            unsafe { AddInObject::destroy(object_of(this, iface)) };
            std::ptr::null_mut()
        } else {
            // SAFETY: the host calls a destructor on a live object.
            if let Some(c) = unsafe { component(this, iface) } {
                c.release();
            }
            this
        }
    })
}
#[cfg(all(windows, not(target_arch = "x86")))]
unsafe extern "C" fn msvc_destructor<const IFACE: usize>(
    this: *mut c_void,
    flags: std::ffi::c_uint,
) -> *mut c_void {
    scalar_deleting_destructor(this, flags, IFACE)
}
#[cfg(all(windows, target_arch = "x86"))]
unsafe extern "thiscall" fn msvc_destructor<const IFACE: usize>(
    this: *mut c_void,
    flags: std::ffi::c_uint,
) -> *mut c_void {
    scalar_deleting_destructor(this, flags, IFACE)
}

/// The destructor slots of interface `IFACE`'s vtable.
#[cfg(not(windows))]
const fn destructors<const IFACE: usize>() -> Destructors {
    [complete_destructor::<IFACE>, deleting_destructor::<IFACE>]
}
#[cfg(windows)]
const fn destructors<const IFACE: usize>() -> Destructors {
    [msvc_destructor::<IFACE>]
}

// ---- IInitDoneBase ------------------------------------------------------------------------

static INIT_DONE_VTBL: InitDoneVtbl = InitDoneVtbl {
    destructors: destructors::<INIT_DONE>(),
    init,
    set_mem_manager,
    get_info,
    done,
};

/// Runs `body` on the component behind `this` (interface `iface`), inside the boundary;
/// `fallback` is the answer for a panic or a NULL `this`. Every thunk returns a `Copy` value
/// (bool, long, pointer, nothing).
///
/// # Safety
/// As [`component`].
unsafe fn with<T: Copy>(
    this: *mut c_void,
    iface: usize,
    fallback: T,
    body: impl FnOnce(&Component) -> T,
) -> T {
    guard(fallback, || {
        // SAFETY: the caller's contract.
        match unsafe { component(this, iface) } {
            Some(c) => body(c),
            None => fallback,
        }
    })
}

/// A 1C index or count as `long`.
fn long(n: usize) -> c_long {
    c_long::try_from(n).unwrap_or(c_long::MAX)
}

unsafe extern "system" fn init(this: *mut c_void, host: *mut c_void) -> bool {
    // SAFETY: the host passes its live IAddInDefBase (or NULL).
    with(this, INIT_DONE, false, |c| {
        c.init(unsafe { Host::from_raw(host) })
    })
}

unsafe extern "system" fn set_mem_manager(this: *mut c_void, memory: *mut c_void) -> bool {
    // SAFETY: the host passes its live IMemoryManager (or NULL).
    with(this, INIT_DONE, false, |c| {
        c.set_memory(unsafe { Memory::from_raw(memory) })
    })
}

unsafe extern "system" fn get_info(this: *mut c_void) -> c_long {
    // 2000: Native API version 2.0, which the four interfaces above are.
    with(this, INIT_DONE, 2000, |_| 2000)
}

unsafe extern "system" fn done(this: *mut c_void) {
    with(this, INIT_DONE, (), Component::done)
}

// ---- ILanguageExtenderBase ----------------------------------------------------------------

static LANGUAGE_EXTENDER_VTBL: LanguageExtenderVtbl = LanguageExtenderVtbl {
    destructors: destructors::<LANGUAGE_EXTENDER>(),
    register_extension_as,
    get_n_props,
    find_prop,
    get_prop_name,
    get_prop_val,
    set_prop_val,
    is_prop_readable,
    is_prop_writable,
    get_n_methods,
    find_method,
    get_method_name,
    get_n_params,
    get_param_def_value,
    has_ret_val,
    call_as_proc,
    call_as_func,
};

const LE: usize = LANGUAGE_EXTENDER;

unsafe extern "system" fn register_extension_as(this: *mut c_void, name: *mut *mut u16) -> bool {
    with(this, LE, false, |c| {
        if name.is_null() {
            return false;
        }
        match c.extension_name() {
            Some(ptr) => {
                // SAFETY: `name` is the host's out-parameter, checked non-NULL.
                unsafe { *name = ptr };
                true
            }
            None => false,
        }
    })
}

unsafe extern "system" fn get_n_props(this: *mut c_void) -> c_long {
    with(this, LE, 0, |_| long(Component::property_count()))
}

unsafe extern "system" fn find_prop(this: *mut c_void, name: *const u16) -> c_long {
    with(this, LE, -1, |_| {
        // SAFETY: the host passes a NUL-terminated name.
        let name = unsafe { read_wide_cstr(name) };
        Component::find_property(&name).map_or(-1, long)
    })
}

unsafe extern "system" fn get_prop_name(
    this: *mut c_void,
    num: c_long,
    alias: c_long,
) -> *const u16 {
    with(this, LE, std::ptr::null(), |c| {
        c.property_name(num, alias)
            .map_or(std::ptr::null(), |p| p.cast_const())
    })
}

unsafe extern "system" fn get_prop_val(
    this: *mut c_void,
    num: c_long,
    value: *mut TVariant,
) -> bool {
    with(this, LE, false, |c| {
        // SAFETY: the host passes a variant to fill, or NULL.
        match unsafe { value.as_mut() } {
            Some(value) => c.get_property(num, value),
            None => false,
        }
    })
}

unsafe extern "system" fn set_prop_val(
    this: *mut c_void,
    num: c_long,
    value: *mut TVariant,
) -> bool {
    with(this, LE, false, |c| {
        // SAFETY: the host passes a valid variant (its strings valid for their lengths).
        match unsafe { value.as_ref() } {
            Some(value) => c.set_property(num, unsafe { value.read() }),
            None => false,
        }
    })
}

unsafe extern "system" fn is_prop_readable(this: *mut c_void, num: c_long) -> bool {
    with(this, LE, false, |_| Component::is_readable(num))
}

unsafe extern "system" fn is_prop_writable(this: *mut c_void, num: c_long) -> bool {
    with(this, LE, false, |_| Component::is_writable(num))
}

unsafe extern "system" fn get_n_methods(this: *mut c_void) -> c_long {
    with(this, LE, 0, |_| long(Component::method_count()))
}

unsafe extern "system" fn find_method(this: *mut c_void, name: *const u16) -> c_long {
    with(this, LE, -1, |_| {
        // SAFETY: the host passes a NUL-terminated name.
        let name = unsafe { read_wide_cstr(name) };
        Component::find_method(&name).map_or(-1, long)
    })
}

unsafe extern "system" fn get_method_name(
    this: *mut c_void,
    num: c_long,
    alias: c_long,
) -> *const u16 {
    with(this, LE, std::ptr::null(), |c| {
        c.method_name(num, alias)
            .map_or(std::ptr::null(), |p| p.cast_const())
    })
}

unsafe extern "system" fn get_n_params(this: *mut c_void, num: c_long) -> c_long {
    with(this, LE, 0, |_| long(Component::param_count(num)))
}

unsafe extern "system" fn get_param_def_value(
    this: *mut c_void,
    method: c_long,
    param: c_long,
    value: *mut TVariant,
) -> bool {
    with(this, LE, false, |c| {
        // SAFETY: the host passes a variant to fill, or NULL.
        match unsafe { value.as_mut() } {
            Some(value) => c.param_default(method, param, value),
            None => false,
        }
    })
}

unsafe extern "system" fn has_ret_val(this: *mut c_void, num: c_long) -> bool {
    with(this, LE, false, |_| Component::has_return_value(num))
}

/// Reads the host's parameter array (never written: OneScript ignores out-parameters, and
/// ours are all in-parameters).
///
/// # Safety
/// `params` is NULL or points at `count` valid variants.
unsafe fn read_params(params: *const TVariant, count: c_long) -> Vec<Arg> {
    let count = usize::try_from(count).unwrap_or(0);
    if params.is_null() || count == 0 {
        return Vec::new();
    }
    // SAFETY: per the contract.
    let params = unsafe { std::slice::from_raw_parts(params, count) };
    // SAFETY: each variant's strings are valid for their lengths.
    params.iter().map(|v| unsafe { v.read() }).collect()
}

unsafe extern "system" fn call_as_proc(
    this: *mut c_void,
    num: c_long,
    params: *mut TVariant,
    count: c_long,
) -> bool {
    with(this, LE, false, |c| {
        // SAFETY: the host passes `count` parameters.
        let args = unsafe { read_params(params, count) };
        c.call_as_procedure(num, &args)
    })
}

unsafe extern "system" fn call_as_func(
    this: *mut c_void,
    num: c_long,
    ret: *mut TVariant,
    params: *mut TVariant,
    count: c_long,
) -> bool {
    with(this, LE, false, |c| {
        // SAFETY: the host passes a variant for the result, or NULL.
        let Some(ret) = (unsafe { ret.as_mut() }) else {
            return false;
        };
        // SAFETY: the host passes `count` parameters.
        let args = unsafe { read_params(params, count) };
        c.call_as_function(num, &args, ret)
    })
}

// ---- LocaleBase, UserLanguageBase ---------------------------------------------------------

static LOCALE_VTBL: LocaleVtbl = LocaleVtbl {
    destructors: destructors::<LOCALE>(),
    set_locale,
};

static USER_LANGUAGE_VTBL: UserLanguageVtbl = UserLanguageVtbl {
    destructors: destructors::<USER_LANGUAGE>(),
    set_user_interface_language_code,
};

/// The system locale ("ru_RU", ...): nothing depends on it (numbers and JSON are
/// locale-free); messages follow the user interface language instead.
unsafe extern "system" fn set_locale(this: *mut c_void, _locale: *const u16) {
    with(this, LOCALE, (), |_| ())
}

unsafe extern "system" fn set_user_interface_language_code(this: *mut c_void, code: *const u16) {
    with(this, USER_LANGUAGE, (), |c| {
        // SAFETY: the host passes a NUL-terminated code such as "ru" or "en".
        c.set_language(&unsafe { read_wide_cstr(code) })
    })
}
