fn main() -> std::process::ExitCode {
    tailhook::cli::main()
}
