//! The library's allocator on Linux with glibc: the system's `malloc`, with blocks of 4 KiB
//! and more aligned to 64 bytes.
//!
//! Why: glibc's `memcpy` copies more than a few KiB with `rep movsb`, and some processors (AMD
//! EPYC here, glibc 2.36) run that 15-30 times slower when the destination lies 1 to 15 bytes
//! past the source modulo 64 (1.4-2.6 GB/s against 25-95 GB/s, measured over all offsets).
//! rustls copies every TLS record's plaintext out of its record buffer into a new block: the
//! payload starts 5 (TLS 1.3) or 13 (TLS 1.2) bytes into that buffer, so with both blocks
//! aligned to 64 the copy runs 59 or 51 bytes "behind", always on the fast side. With
//! `malloc`'s 16-byte alignment one heap layout in four hit the slow case, and then every
//! record of a 48 MiB answer did: a quarter of the call's CPU time.
//!
//! Smaller blocks are `malloc`'s as they are. Blocks grow with `realloc` (in place, or by
//! `mremap` for large ones, which keeps their alignment); only a block that `realloc` moved to
//! a less aligned address is moved once more. `free` takes both kinds (glibc documents that
//! blocks from `posix_memalign` may be passed to `free` and `realloc`).

use std::alloc::{GlobalAlloc, Layout};

/// Blocks of this size and more are aligned to [`ALIGN`].
const ALIGNED_FROM: usize = 4096;
/// The alignment given to them: a cache line.
const ALIGN: usize = 64;
/// What `malloc` guarantees on 64-bit glibc.
const MALLOC_ALIGN: usize = 16;

/// See the module docs.
pub(crate) struct Heap;

/// Whether a block of `size` bytes asked with `align` gets [`ALIGN`] (its class is decided by
/// the size alone, so `dealloc` and `realloc` find the same answer as `alloc`).
fn wide(size: usize, align: usize) -> bool {
    size >= ALIGNED_FROM || align > MALLOC_ALIGN
}

fn aligned_alloc(size: usize, align: usize) -> *mut u8 {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` is a valid place for the pointer; the alignment is a power of two and a
    // multiple of the pointer size.
    let rc = unsafe { libc::posix_memalign(&mut out, align.max(ALIGN), size) };
    if rc == 0 {
        out.cast()
    } else {
        std::ptr::null_mut()
    }
}

// SAFETY: every block comes from glibc's malloc family with at least the alignment asked for,
// and goes back to `free` (which takes blocks of `malloc` and `posix_memalign` alike).
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if wide(layout.size(), layout.align()) {
            aligned_alloc(layout.size(), layout.align())
        } else {
            // SAFETY: plain malloc; its 16-byte alignment covers `layout.align()`.
            unsafe { libc::malloc(layout.size()).cast() }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if wide(layout.size(), layout.align()) {
            let p = aligned_alloc(layout.size(), layout.align());
            if !p.is_null() {
                // SAFETY: `p` holds `layout.size()` bytes.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        } else {
            // SAFETY: plain calloc.
            unsafe { libc::calloc(1, layout.size()).cast() }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from malloc, calloc, realloc or posix_memalign.
        unsafe { libc::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if align > MALLOC_ALIGN {
            // Rare (no such type here): a new block and a copy.
            let new = aligned_alloc(new_size, align);
            if !new.is_null() {
                // SAFETY: both blocks hold at least the copied length; they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    libc::free(ptr.cast());
                }
            }
            return new;
        }
        // SAFETY: `ptr` came from the malloc family; realloc keeps the contents.
        let moved: *mut u8 = unsafe { libc::realloc(ptr.cast(), new_size).cast() };
        if moved.is_null() || !wide(new_size, align) || moved as usize % ALIGN == 0 {
            return moved;
        }
        // realloc moved a wide block to a less aligned address: once more, aligned. The
        // alignment is for speed only: without memory for the move, the moved block stands.
        let new = aligned_alloc(new_size, align);
        if new.is_null() {
            return moved;
        }
        // SAFETY: both blocks hold `new_size` bytes; they do not overlap; `moved` is freed
        // once, here.
        unsafe {
            std::ptr::copy_nonoverlapping(moved, new, new_size);
            libc::free(moved.cast());
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_blocks_are_aligned_to_64_and_keep_their_bytes_as_they_grow() {
        // The test binary runs on this allocator: plain Vecs exercise it.
        for size in [4096usize, 10_580, 16_384, 100_000, 200_000, 3 << 20] {
            let v = vec![7u8; size];
            assert_eq!(v.as_ptr() as usize % 64, 0, "{size}");
            let z = vec![0u8; size];
            assert!(z.iter().all(|&b| b == 0));
            assert_eq!(z.as_ptr() as usize % 64, 0, "{size}");
        }
        // Growth from small to large and back, the bytes kept; large ones aligned.
        let mut v: Vec<u8> = Vec::new();
        for i in 0..(1u32 << 20) {
            v.push(i as u8);
            if v.len() >= 4096 && v.len() == v.capacity() {
                assert_eq!(v.as_ptr() as usize % 64, 0, "at {}", v.len());
            }
        }
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        v.truncate(5000);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        v.truncate(100);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Over-aligned types still get their alignment.
        #[repr(align(128))]
        struct Wide([u8; 128]);
        let w: Vec<Wide> = (0..40).map(|_| Wide([1; 128])).collect();
        assert_eq!(w.as_ptr() as usize % 128, 0);
        assert!(w.iter().all(|x| x.0.iter().all(|&b| b == 1)));
    }
}
