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
//! Smaller blocks are `malloc`'s as they are. A wide block (4 KiB and more) is carved out of
//! a `malloc` block a little larger, at its first 64-byte boundary past room for the address
//! `malloc` returned, which is kept just before the block's start for `free` and `realloc`.
//!
//! Zeroed wide blocks come from `calloc`. glibc gives a large one (at or above its `mmap`
//! threshold) as fresh pages the kernel zeroes on first touch, without writing them: a buffer
//! allocated zeroed (ureq's 512 KiB output buffer, the 128 KiB input buffers) holds resident
//! only the pages bytes were written to. (`posix_memalign` followed by a `memset`, as before,
//! made every such page resident: about 770 KiB per open connection, most of it never used.)
//!
//! Wide blocks grow with `realloc` (in place, or by `mremap` for large ones, which keeps their
//! place within their first page); when `realloc` moved one to a place where the 64-byte
//! boundary falls elsewhere, its bytes are moved within the new block. Everything goes through
//! `malloc`, `calloc`, `realloc` and `free`, so tools that track the heap (valgrind) see every
//! block.

use std::alloc::{GlobalAlloc, Layout};

/// See the module docs.
pub(crate) struct Heap;

/// Blocks of this size and more are aligned to [`ALIGN`].
const ALIGNED_FROM: usize = 4096;
/// The alignment given to them: a cache line.
const ALIGN: usize = 64;
/// What `malloc` guarantees on 64-bit glibc.
const MALLOC_ALIGN: usize = 16;
/// Room kept before a wide block's start for the address of its `malloc` block.
const HEADER: usize = std::mem::size_of::<usize>();

/// Whether a block of `size` bytes asked with `align` is wide (its class is decided by the
/// size and alignment alone, so `dealloc` and `realloc` find the same answer as `alloc`).
fn wide(size: usize, align: usize) -> bool {
    size >= ALIGNED_FROM || align > MALLOC_ALIGN
}

/// The alignment a wide block asked with `align` gets.
fn wide_align(align: usize) -> usize {
    align.max(ALIGN)
}

/// The size of the `malloc` block holding a wide block of `size` bytes: room for the header
/// and for the way to the alignment boundary, whatever `malloc`'s own alignment.
fn outer_size(size: usize, align: usize) -> Option<usize> {
    size.checked_add(wide_align(align) + HEADER)
}

/// The start of the wide block inside the `malloc` block at `raw`: the first boundary of its
/// alignment at least [`HEADER`] bytes in (below `wide_align(align) + HEADER` bytes in).
fn start_in(raw: *mut u8, align: usize) -> *mut u8 {
    let a = wide_align(align);
    let addr = raw as usize;
    raw.wrapping_add(((addr + HEADER + a - 1) & !(a - 1)) - addr)
}

/// Writes the header of the wide block at `start`: the address of its `malloc` block.
///
/// # Safety
/// `start` came from [`start_in`] for `raw`, a block of at least `outer_size(_, align)` bytes
/// (the slot lies between them, aligned: a multiple of the pointer size past an address malloc
/// aligned at least that much).
unsafe fn set_header(start: *mut u8, raw: *mut u8) {
    // SAFETY: see above.
    unsafe { start.cast::<*mut u8>().sub(1).write(raw) }
}

/// A wide block placed in the new `malloc` block `raw` (not null): its start, header written.
///
/// # Safety
/// As [`set_header`].
unsafe fn place(raw: *mut u8, align: usize) -> *mut u8 {
    let start = start_in(raw, align);
    // SAFETY: as the caller's.
    unsafe { set_header(start, raw) };
    start
}

/// The `malloc` block of the wide block starting at `start`.
///
/// # Safety
/// `start` came from [`place`].
unsafe fn outer(start: *mut u8) -> *mut u8 {
    // SAFETY: `place` wrote the address there.
    unsafe { start.cast::<*mut u8>().sub(1).read() }
}

// SAFETY: every block comes from glibc's malloc family with at least the alignment asked for
// (wide blocks at their boundary inside a larger block), and goes back to `free`.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !wide(layout.size(), layout.align()) {
            // SAFETY: plain malloc; its 16-byte alignment covers `layout.align()`.
            return unsafe { libc::malloc(layout.size()).cast() };
        }
        let Some(size) = outer_size(layout.size(), layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: plain malloc; a block of `size` bytes has room for `place`.
        unsafe {
            let raw: *mut u8 = libc::malloc(size).cast();
            if raw.is_null() {
                raw
            } else {
                place(raw, layout.align())
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !wide(layout.size(), layout.align()) {
            // SAFETY: plain calloc.
            return unsafe { libc::calloc(1, layout.size()).cast() };
        }
        let Some(size) = outer_size(layout.size(), layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: calloc zeroes the whole block (fresh pages without writing them); `place`
        // writes only the header, before the start.
        unsafe {
            let raw: *mut u8 = libc::calloc(1, size).cast();
            if raw.is_null() {
                raw
            } else {
                place(raw, layout.align())
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`, `alloc_zeroed` or `realloc` with this layout, so
        // it is a malloc block or (wide) a block placed by `place`.
        unsafe {
            if wide(layout.size(), layout.align()) {
                libc::free(outer(ptr).cast());
            } else {
                libc::free(ptr.cast());
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (align, old_size) = (layout.align(), layout.size());
        let (was_wide, is_wide) = (wide(old_size, align), wide(new_size, align));
        let kept = old_size.min(new_size);
        // SAFETY (all arms): `ptr` holds `old_size` bytes, placed by `place` when `was_wide`;
        // realloc keeps the contents of the malloc block up to the smaller size, and the moves
        // stay inside the new block (`kept` bytes from an offset below `a + HEADER`, in a block
        // of at least `kept + a + HEADER` bytes when it is wide).
        unsafe {
            match (was_wide, is_wide) {
                (false, false) => libc::realloc(ptr.cast(), new_size).cast(),
                (true, true) => {
                    let Some(size) = outer_size(new_size, align) else {
                        return std::ptr::null_mut();
                    };
                    let raw = outer(ptr);
                    let offset = ptr as usize - raw as usize;
                    let moved: *mut u8 = libc::realloc(raw.cast(), size).cast();
                    if moved.is_null() {
                        return moved;
                    }
                    // The bytes move before the header is written: its slot may lie among them.
                    let start = start_in(moved, align);
                    let at = moved.add(offset);
                    if at != start {
                        std::ptr::copy(at, start, kept);
                    }
                    set_header(start, moved);
                    start
                }
                (false, true) => {
                    // From malloc's alignment to a wide block: the bytes move to the boundary.
                    let Some(size) = outer_size(new_size, align) else {
                        return std::ptr::null_mut();
                    };
                    let moved: *mut u8 = libc::realloc(ptr.cast(), size).cast();
                    if moved.is_null() {
                        return moved;
                    }
                    let start = start_in(moved, align);
                    std::ptr::copy(moved, start, kept);
                    set_header(start, moved);
                    start
                }
                (true, false) => {
                    // Back to a plain malloc block: the bytes move to its start first.
                    let raw = outer(ptr);
                    std::ptr::copy(ptr, raw, kept);
                    let moved: *mut u8 = libc::realloc(raw.cast(), new_size).cast();
                    if moved.is_null() {
                        // The old block stands, as realloc promises: its bytes go back.
                        std::ptr::copy(raw, ptr, kept);
                        set_header(ptr, raw);
                    }
                    moved
                }
            }
        }
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

    #[test]
    fn blocks_move_their_bytes_to_the_boundary_wherever_realloc_puts_them() {
        // Wide blocks grown and shrunk among other blocks (so that realloc moves them to
        // places of every offset), across the wide/plain limit both ways, zeroed or not.
        let mut keep = Vec::new();
        for round in 0..64usize {
            let mut v: Vec<u8> = if round % 2 == 0 {
                vec![0u8; 5000 + round * 16]
            } else {
                Vec::with_capacity(100 + round)
            };
            assert!(v.iter().all(|&b| b == 0));
            v.clear();
            v.extend((0..5000 + round * 16).map(|i| (i * 7 + round) as u8));
            keep.push(vec![round as u8; 16 * round + 1]);
            // Bytes of the pattern that survive every shrink so far; the rest is 0xAB.
            let mut head = v.len();
            for target in [9000, 70_000, 6000, 300, 4100, 200_000, 1000] {
                v.resize(target.max(v.len()), 0xAB);
                v.truncate(target);
                v.shrink_to_fit();
                if v.capacity() >= 4096 {
                    assert_eq!(v.as_ptr() as usize % 64, 0, "round {round} at {target}");
                }
                head = head.min(target);
                assert!(
                    v[..head]
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == (i * 7 + round) as u8),
                    "round {round} at {target}"
                );
                assert!(
                    v[head..].iter().all(|&b| b == 0xAB),
                    "round {round} at {target}"
                );
            }
        }
        assert!(keep
            .iter()
            .enumerate()
            .all(|(r, k)| k.iter().all(|&b| b == r as u8)));
    }

    #[test]
    fn a_large_zeroed_block_keeps_its_pages_untouched() {
        // 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB), so calloc maps fresh
        // pages however the threshold moved in this process. Filling it with zeros (as
        // `posix_memalign` and `memset` did) would make all 16384 pages resident.
        const LEN: usize = 64 << 20;
        let v = vec![0u8; LEN];
        let touched = crate::core::resident_pages(v.as_ptr(), LEN);
        assert!(touched <= 2, "{touched} of 16384 pages resident");
        assert_eq!(v[LEN / 2], 0);
        assert_eq!(v[LEN - 1], 0);
    }
}
