//! `floe` built with the `failpoints` feature, for the integration tests: every subcommand also takes
//! `--fail-at`, `--fail-times` and `--pause-at`. Not for users, and not built without the feature.

fn main() -> std::process::ExitCode {
    floe_cli::main()
}
