fn main() -> std::process::ExitCode {
    mtcd::cli::main()
}
