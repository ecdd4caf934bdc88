fn main() -> std::process::ExitCode {
    cnnc::cli::main()
}
