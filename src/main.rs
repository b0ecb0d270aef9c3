//! The `kvlab` binary.

fn main() -> std::process::ExitCode {
    kvlab::cli::main()
}
