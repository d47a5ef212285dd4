fn main() -> std::process::ExitCode {
    claudedl::cli::main()
}
