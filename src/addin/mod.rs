//! The 1C:Enterprise Native API add-in: the same library, loaded by 1C or OneScript with
//! `AttachAddIn(zip, "OPI_OpenAI", AddInType.Native)` and created as `AddIn.OPI_OpenAI.Main`.
//!
//! - [`variant`]: 1C's `tVariant` and conversions to and from `&str`/`i64`;
//! - [`host`]: the host's interfaces we call (memory manager, `AddError`, `ExternalEvent`);
//! - [`jobs`]: asynchronous calls on worker threads, and their events;
//! - [`component`]: the methods and properties, in English and Russian, over the crate's Rust
//!   API (no core logic here);
//! - [`vtables`]: the object 1C sees (four C++ interfaces) and its thunks;
//! - [`exports`]: `GetClassNames`, `GetClassObject`, `DestroyObject`, ...
//!
//! Every entry point the host can reach runs inside [`guard`] (the crate's one panic boundary),
//! so no panic unwinds into the host (undefined behaviour, and in practice a dead 1C server
//! process); a method's panic is reported as an `internal` error (see `component`).

pub(crate) mod component;
pub(crate) mod exports;
mod fuzz;
pub(crate) mod host;
pub(crate) mod jobs;
pub(crate) mod variant;
pub(crate) mod vtables;

pub(crate) use fuzz::fuzz_description;

/// Runs one entry point's body inside the crate's one panic boundary
/// ([`crate::boundary::catch`]); a panic becomes `fallback` (the entry point's "failed" value:
/// `false`, `0`, `-1` or NULL) instead of unwinding into the host.
pub(crate) fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    crate::boundary::catch(|_| fallback, body)
}

/// The name 1C and OneScript know the class by: `GetClassNames` lists it and
/// `RegisterExtensionAs` answers it, so `New("AddIn.OPI_OpenAI.Main")` works in both hosts.
pub(crate) const CLASS_NAME: &str = "Main";

/// Compares names as 1C does for its own identifiers: case-insensitively, in any alphabet
/// (`getimages`, `GETIMAGES`, `получитькартинки` all match).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_in_both_alphabets() {
        assert!(same_name("GetImages", "getimages"));
        assert!(same_name("ПолучитьКартинки", "ПОЛУЧИТЬКАРТИНКИ"));
        assert!(!same_name("GetImages", "GetImagesEx"));
    }

    #[test]
    fn a_panic_becomes_the_fallback() {
        // The default hook prints the message; the hook is process-wide, so it is left alone.
        let value = guard(-1, || -> i32 {
            panic!("a deliberate panic inside the boundary")
        });
        assert_eq!(value, -1);
    }
}
