//! The host's interfaces the add-in calls: the memory manager (every string or blob handed to
//! the host is allocated with it, never with Rust's allocator) and `IAddInDefBase` (`AddError`,
//! the event buffer depth, `ExternalEvent`).
//! Declared from the Native API's description; only the slots we call are named.

use super::variant::{ByteString, WideString};
use std::ffi::{c_long, c_ulong, c_void};
use std::ptr::NonNull;

/// Virtual destructor slots at the head of every vtable: the Itanium C++ ABI (GCC, Clang on
/// Linux) has two (complete and deleting destructor), MSVC one (scalar deleting destructor).
/// Keyed on the OS rather than our toolchain: 1C and OneScript on Windows are built with MSVC,
/// so a Windows add-in must present MSVC's layout whatever compiled it.
#[cfg(not(windows))]
pub(crate) const DESTRUCTOR_SLOTS: usize = 2;
/// See the non-Windows definition.
#[cfg(windows)]
pub(crate) const DESTRUCTOR_SLOTS: usize = 1;

/// `IMemoryManager`'s vtable.
#[repr(C)]
struct MemoryManagerVtbl {
    destructor: [*const c_void; DESTRUCTOR_SLOTS],
    alloc_memory:
        unsafe extern "system" fn(*mut MemoryManagerObject, *mut *mut c_void, c_ulong) -> bool,
    // FreeMemory follows; we never free what we hand over (the host does).
}

/// A host `IMemoryManager` object: its first word is the vtable pointer.
#[repr(C)]
pub(crate) struct MemoryManagerObject {
    vtbl: *const MemoryManagerVtbl,
}

/// The host's memory manager, as given to `setMemManager`.
#[derive(Clone, Copy)]
pub(crate) struct Memory(NonNull<MemoryManagerObject>);

impl Memory {
    /// Wraps the pointer given to `setMemManager`; NULL gives `None`.
    ///
    /// # Safety
    /// `ptr` is NULL or the host's live `IMemoryManager`, valid until `Done`.
    pub(crate) unsafe fn from_raw(ptr: *mut c_void) -> Option<Memory> {
        NonNull::new(ptr.cast()).map(Memory)
    }

    fn alloc(self, bytes: usize) -> Option<NonNull<c_void>> {
        let bytes = c_ulong::try_from(bytes).ok()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let this = self.0.as_ptr();
        // SAFETY: `this` is the live memory manager (see `from_raw`); its vtable starts with
        // the destructor slots, then AllocMemory.
        let ok = unsafe { ((*(*this).vtbl).alloc_memory)(this, &mut ptr, bytes) };
        if ok {
            NonNull::new(ptr)
        } else {
            None
        }
    }

    /// `text` as a NUL-terminated UTF-16 string in host memory, for names (the host frees it).
    pub(crate) fn wide_cstr(self, text: &str) -> Option<*mut u16> {
        self.wide(text).map(|w| w.ptr)
    }

    /// `text` as a NUL-terminated UTF-16 string in host memory with its length in code units
    /// (NUL not counted), for a String value. `None` when the host refuses the allocation.
    pub(crate) fn wide(self, text: &str) -> Option<WideString> {
        let units: Vec<u16> = text.encode_utf16().collect();
        let len = u32::try_from(units.len()).ok()?;
        let bytes = (units.len() + 1).checked_mul(2)?;
        let ptr = self.alloc(bytes)?.as_ptr().cast::<u16>();
        // SAFETY: `ptr` is a fresh allocation of `units.len() + 1` code units; the host's
        // allocator returns memory aligned for any type, as malloc does.
        unsafe {
            std::ptr::copy_nonoverlapping(units.as_ptr(), ptr, units.len());
            *ptr.add(units.len()) = 0;
        }
        Some(WideString { ptr, len })
    }

    /// `data` in host memory, for a BinaryData value. Empty data is a 1-byte host allocation
    /// with length 0, never a NULL pointer: OneScript copies a blob with `Marshal.Copy`, which
    /// throws on NULL even for length 0, and that throw ends its process.
    pub(crate) fn bytes(self, data: &[u8]) -> Option<ByteString> {
        let len = u32::try_from(data.len()).ok()?;
        let ptr = self.alloc(data.len().max(1))?.as_ptr().cast::<u8>();
        // SAFETY: `ptr` is a fresh allocation of at least `data.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
        Some(ByteString {
            ptr: ptr.cast(),
            len,
        })
    }
}

/// `IAddInDefBase`'s vtable, up to the last slot we call.
#[repr(C)]
struct AddInDefBaseVtbl {
    destructor: [*const c_void; DESTRUCTOR_SLOTS],
    add_error: unsafe extern "system" fn(
        *mut AddInDefBaseObject,
        u16,
        *const u16,
        *const u16,
        c_long,
    ) -> bool,
    // Read, Write, RegisterProfileAs: never called.
    read: *const c_void,
    write: *const c_void,
    register_profile_as: *const c_void,
    set_event_buffer_depth: unsafe extern "system" fn(*mut AddInDefBaseObject, c_long) -> bool,
    get_event_buffer_depth: unsafe extern "system" fn(*mut AddInDefBaseObject) -> c_long,
    external_event:
        unsafe extern "system" fn(*mut AddInDefBaseObject, *mut u16, *mut u16, *mut u16) -> bool,
}

/// A host `IAddInDefBase` object.
#[repr(C)]
pub(crate) struct AddInDefBaseObject {
    vtbl: *const AddInDefBaseVtbl,
}

/// The host connection given to `Init`.
#[derive(Clone, Copy)]
pub(crate) struct Host(NonNull<AddInDefBaseObject>);

/// `ADDIN_E_FAIL`: 1C shows the message as an error.
const ADDIN_E_FAIL: u16 = 1006;
/// `E_FAIL` as 1C's `long scode`: non-zero makes 1C raise an exception in the calling code,
/// carrying the message (the call returns false too, which alone gives a generic message).
const E_FAIL: c_long = 0x8000_4005_u32 as i32 as c_long;

impl Host {
    /// Wraps the pointer given to `Init`; NULL gives `None`.
    ///
    /// # Safety
    /// `ptr` is NULL or the host's live `IAddInDefBase`, valid until `Done`.
    pub(crate) unsafe fn from_raw(ptr: *mut c_void) -> Option<Host> {
        NonNull::new(ptr.cast()).map(Host)
    }

    /// Reports an error to the host (`AddError`), with the add-in's name as the source.
    /// The host copies both strings during the call.
    pub(crate) fn add_error(self, message: &str) -> bool {
        let source: Vec<u16> = "OPI_OpenAI".encode_utf16().chain([0]).collect();
        let descr: Vec<u16> = message.encode_utf16().chain([0]).collect();
        let this = self.0.as_ptr();
        // SAFETY: `this` is the live host (see `from_raw`); AddError follows the destructor
        // slots; both strings are NUL-terminated and outlive the call.
        unsafe {
            ((*(*this).vtbl).add_error)(this, ADDIN_E_FAIL, source.as_ptr(), descr.as_ptr(), E_FAIL)
        }
    }

    /// `GetEventBufferDepth`: how many external events the host queues.
    pub(crate) fn event_buffer_depth(self) -> i32 {
        let this = self.0.as_ptr();
        // SAFETY: `this` is the live host; GetEventBufferDepth is the sixth slot after the
        // destructor(s), as declared.
        let depth = unsafe { ((*(*this).vtbl).get_event_buffer_depth)(this) };
        // `c_long` is 64-bit on Linux x86_64 and 32-bit on Windows (no conversion there).
        #[allow(clippy::useless_conversion)]
        i32::try_from(depth).unwrap_or(i32::MAX)
    }

    /// `SetEventBufferDepth`: asks the host to queue up to `depth` external events.
    pub(crate) fn set_event_buffer_depth(self, depth: i32) -> bool {
        let this = self.0.as_ptr();
        // SAFETY: `this` is the live host; SetEventBufferDepth follows RegisterProfileAs.
        unsafe { ((*(*this).vtbl).set_event_buffer_depth)(this, c_long::from(depth)) }
    }

    /// `ExternalEvent(source, message, data)`: 1C delivers it to `ОбработкаВнешнегоСобытия`
    /// on its own thread. Callable from a worker thread (that is its purpose); the host
    /// copies the three strings during the call.
    pub(crate) fn external_event(self, source: &str, message: &str, data: &str) -> bool {
        let mut source: Vec<u16> = source.encode_utf16().chain([0]).collect();
        let mut message: Vec<u16> = message.encode_utf16().chain([0]).collect();
        let mut data: Vec<u16> = data.encode_utf16().chain([0]).collect();
        let this = self.0.as_ptr();
        // SAFETY: `this` is the live host (the caller keeps it so, see `jobs::EventSink`);
        // the strings are NUL-terminated and outlive the call.
        unsafe {
            ((*(*this).vtbl).external_event)(
                this,
                source.as_mut_ptr(),
                message.as_mut_ptr(),
                data.as_mut_ptr(),
            )
        }
    }
}

/// Reads a NUL-terminated UTF-16 string from the host (a method or property name, a locale).
/// NULL reads as `""`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated UTF-16 string valid during the call.
pub(crate) unsafe fn read_wide_cstr(ptr: *const u16) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated, so every unit up to the NUL is readable.
    while *ptr.add(len) != 0 {
        len += 1;
    }
    // SAFETY: `len` units were just read.
    String::from_utf16_lossy(std::slice::from_raw_parts(ptr, len))
}

// The host's vtables as declared above, on each of the four targets 1C runs on: the first
// method follows the destructor slot(s) (16 bytes on Linux x86_64, 8 on Linux x86 and Windows
// x86_64, 4 on Windows x86), one word per method after it.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const FIRST_METHOD: usize = 16;
#[cfg(any(
    all(target_os = "linux", target_arch = "x86"),
    all(windows, target_arch = "x86_64")
))]
const FIRST_METHOD: usize = 8;
#[cfg(all(windows, target_arch = "x86"))]
const FIRST_METHOD: usize = 4;
#[cfg(any(
    all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")),
    all(windows, any(target_arch = "x86_64", target_arch = "x86"))
))]
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(MemoryManagerVtbl, alloc_memory) == FIRST_METHOD);
    assert!(offset_of!(AddInDefBaseVtbl, add_error) == FIRST_METHOD);
    assert!(offset_of!(MemoryManagerObject, vtbl) == 0);
    assert!(offset_of!(AddInDefBaseObject, vtbl) == 0);
};
