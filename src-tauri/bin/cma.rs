//! `cma`: the headless command line of Codex App Account Router.

fn main() -> std::process::ExitCode {
    router::cli::main()
}
