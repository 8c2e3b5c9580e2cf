//! The process's memory allocator, as measured by `benches/load_throughput.rs`: glibc's malloc
//! with a fixed mmap threshold.
//!
//! A load holds one answer body (about 14 MB for a full Retarus page) and a page of COPY text at
//! a time. glibc's default *dynamic* mmap threshold rises to the size of the largest mmapped block
//! freed, so after the first page every later page-sized buffer comes from the heap arenas of
//! whichever worker thread ran it and stays resident there: peak RSS grew with the window (61 MiB
//! at 100k records, 78 MiB at 1M). A fixed threshold keeps every large buffer mmapped, so it goes
//! back to the kernel when freed (37 and 38 MiB, same speed). mimalloc (the `mimalloc` feature,
//! `cargo bench --bench load_throughput --features mimalloc`) held 89 and 97 MiB at the same speed;
//! capping glibc's arenas as well (`MALLOC_ARENA_MAX=1`) changed nothing.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Buffers at least this large are mmapped (and unmapped when freed): glibc's initial default,
/// made fixed.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the allocator settings. Call once at startup, before the runtime's threads exist;
/// the benchmarks call it as the binary does.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: `mallopt` only sets a parameter of the allocator; it is called before any other
    // thread exists, and setting M_MMAP_THRESHOLD also turns off its dynamic adjustment.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
