//! The pointer helpers every exported function uses, and its way into the crate's one panic
//! boundary ([`crate::boundary`]).

use crate::Error;
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::sync::Mutex;

/// Runs an exported function's body inside the crate's one panic boundary
/// ([`crate::boundary::catch`]): a panic becomes an `internal` error result.
pub(crate) fn c_result(body: impl FnOnce() -> String) -> *mut c_char {
    into_c_string(crate::boundary::catch(|e| e.to_result_json(), body))
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
/// The buffer is handed over as it is (no shrinking copy) and its length and capacity are
/// recorded in [`LIVE`], so that [`free_c_string`] frees it without scanning for the NUL.
pub(crate) fn into_c_string(text: String) -> *mut c_char {
    debug_assert!(!text.as_bytes().contains(&0), "a result held a NUL byte");
    let mut bytes = std::mem::ManuallyDrop::new(text.into_bytes());
    // One byte more, not double (a body read to its exact size has no spare capacity).
    bytes.reserve_exact(1);
    bytes.push(0);
    let ptr = bytes.as_mut_ptr();
    LIVE.shard(ptr as usize)
        .insert(ptr as usize, (bytes.len(), bytes.capacity()));
    ptr.cast()
}

/// Frees a string from [`into_c_string`]: its length and capacity come from [`LIVE`], so the
/// string is not read. A pointer not in [`LIVE`] (never returned by us, or already freed) is
/// left alone.
///
/// # Safety
/// `ptr` is not in use by the caller any more.
pub(crate) unsafe fn free_c_string(ptr: *mut c_char) {
    let entry = LIVE.shard(ptr as usize).remove(&(ptr as usize));
    if let Some((len, capacity)) = entry {
        // SAFETY: `ptr`, `len` and `capacity` are those of the Vec that `into_c_string` gave
        // up, and the entry was removed, so this Vec is rebuilt (and dropped) once.
        drop(unsafe { Vec::from_raw_parts(ptr.cast::<u8>(), len, capacity) });
    }
}

/// The strings handed to C and not yet freed: address -> (length with the NUL, capacity).
/// Sharded by address, so that concurrent calls seldom wait for one another.
static LIVE: LiveStrings = LiveStrings {
    shards: [const { Mutex::new(None) }; SHARDS],
};

const SHARDS: usize = 16;

/// Drops the maps of [`LIVE`] (run when the library is unloaded: a string still held by the
/// host then can no longer be freed through us anyway).
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
    allow(dead_code)
)]
pub(crate) fn release() {
    for shard in &LIVE.shards {
        let map = shard.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(map);
    }
}

type Shard = Option<HashMap<usize, (usize, usize)>>;

struct LiveStrings {
    shards: [Mutex<Shard>; SHARDS],
}

impl LiveStrings {
    /// The locked map for `addr` (heap blocks are at least 16-byte aligned: the bits above).
    fn shard(&self, addr: usize) -> ShardGuard<'_> {
        let guard = self.shards[(addr >> 4) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ShardGuard(guard)
    }
}

struct ShardGuard<'a>(std::sync::MutexGuard<'a, Shard>);

impl ShardGuard<'_> {
    fn insert(mut self, addr: usize, entry: (usize, usize)) {
        self.0.get_or_insert_with(HashMap::new).insert(addr, entry);
    }

    fn remove(mut self, addr: &usize) -> Option<(usize, usize)> {
        self.0.as_mut()?.remove(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_freed_from_their_recorded_size() {
        let mut text = String::with_capacity(100);
        text.push_str("{\"a\":1}");
        let ptr = into_c_string(text);
        // SAFETY: a NUL-terminated string just returned.
        assert_eq!(
            unsafe { CStr::from_ptr(ptr) }.to_str().unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(
            LIVE.shard(ptr as usize).0.as_ref().unwrap()[&(ptr as usize)],
            (8, 100)
        );
        // SAFETY: freed once, then the stale pointer is ignored.
        unsafe {
            free_c_string(ptr);
            free_c_string(ptr);
        }
        assert!(!LIVE
            .shard(ptr as usize)
            .0
            .as_ref()
            .unwrap()
            .contains_key(&(ptr as usize)));
    }
}
