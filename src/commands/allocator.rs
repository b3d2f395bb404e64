//! Tuning of glibc's allocator around model loading: a process-wide setting, so it belongs to
//! the binary, not to the library that loads models.

use candle_core::Device;

/// Runs `load` with the allocator tuned for loading weights, then tunes it for decoding. Only
/// on the CPU, where the weights and every decoding buffer live in the process heap.
pub fn loading<T>(device: &Device, load: impl FnOnce() -> T) -> T {
    if device.is_cpu() {
        tune(AllocatorMode::Loading);
    }
    let loaded = load();
    if device.is_cpu() {
        tune(AllocatorMode::Decoding);
    }
    loaded
}

/// Keeps every thread on glibc's main arena. Must run before the process starts its threads
/// (`--threads` builds rayon's pool at once): a thread that allocates before the cap picks an
/// arena of its own and keeps it. The decoding loop runs on a rayon worker
/// (`generate::search`), so with two arenas the buffers of successive batches could land in
/// different ones, neither reusing what the other freed: measured 429 MiB instead of 375 peak
/// on a beam-4 bench, depending on which worker took which batch.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; a failure leaves the previous ones.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How glibc's allocator should treat large buffers (Linux with glibc; elsewhere a no-op).
#[derive(Clone, Copy)]
pub enum AllocatorMode {
    /// Loading weights: every buffer of 64 KiB or more is its own mapping, returned to the
    /// kernel when freed. The loader frees each tensor it read once it is packed; kept in the
    /// heap, those holes cost about 30 MB of resident memory for opus-mt.
    Loading,
    /// Decoding: freed memory is kept for reuse, never returned. Every decoding step allocates
    /// and frees buffers of megabytes (logits, caches); mapped and unmapped each time, the page
    /// faults of re-touching them cost a quarter of a beam-search step on the CPU. One arena
    /// keeps the retained memory bounded.
    Decoding,
}

pub fn tune(mode: AllocatorMode) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; a failure leaves the previous ones.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        match mode {
            AllocatorMode::Loading => {
                libc::mallopt(libc::M_MMAP_MAX, 65536);
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
            }
            AllocatorMode::Decoding => {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = mode;
}
