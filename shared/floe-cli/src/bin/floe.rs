//! The `floe` command-line tool (see `floe --help`).

// mimalloc, as the functions it runs locally: see the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    floe_cli::main()
}
