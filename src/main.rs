fn main() -> std::process::ExitCode {
    tune_malloc();
    tailhook::cli::main()
}

/// glibc malloc's parameters for a long-running agent whose threads hand
/// each other buffers; measured alternately with the defaults (issue 14,
/// BENCHMARKS.md). Each still yields to its environment variable.
///
/// - Four arenas instead of up to eight per core: each thread that
///   allocates would get its own (the tail thread, the queue writer, the
///   runtime's workers and its blocking threads, a dozen under load), each
///   keeping what it freed: 2.5–4 MiB less peak RSS where events are many,
///   the same CPU per event; two arenas made the tail thread and the writer
///   wait on each other's lock (15 % more CPU).
/// - Blocks of 128 KiB and more mapped on their own and given back when
///   freed: glibc's default starts there but rises to the largest block
///   freed, after which a freed megabyte stays in its arena. 1.3–3.4 MiB
///   less peak RSS, 2–3 MiB less after a backlog; the same CPU per event
///   once the blocks that come often (a part of candidate lines, a body)
///   kept their buffers, 4–6 % more before.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, parameter, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 4),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only sets an allocator parameter, before any
            // other thread exists.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
}
