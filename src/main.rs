fn main() -> std::process::ExitCode {
    edgepod::cli::main()
}
