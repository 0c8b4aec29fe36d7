//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps freed chunks in its arenas: after a burst (thousands of refresh-cache
//! entries of a few KiB each, expired a grace period later) the process's RSS would stay at its
//! peak, and a container limit counts RSS. `malloc_trim(0)` returns every whole free page of
//! every arena (glibc ≥ 2.8). Called rarely — after a sweep that freed a few MiB — never on a
//! request's path. With another allocator (the `mimalloc` feature, musl) it does nothing.

/// Return free heap pages to the OS; runs on a blocking thread (it takes the arenas' locks).
pub async fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    {
        // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own arenas
        // under their locks and advises the kernel about free pages.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}
