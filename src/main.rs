fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    tailhook::cli::main()
}

/// Four glibc malloc arenas instead of up to eight per core: each thread
/// that allocates would get its own (the tail thread, the queue writer, the
/// runtime's workers and its blocking threads, a dozen under load), each
/// keeping what it freed. Measured alternately with the default (issue 14,
/// BENCHMARKS.md): 2.5–4 MiB less peak RSS where events are many, the same
/// CPU per event; two arenas made the tail thread and the writer wait on
/// each other's lock (15 % more CPU). `MALLOC_ARENA_MAX` still decides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}
