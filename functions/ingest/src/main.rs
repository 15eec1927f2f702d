//! `floe-ingest`: the ingest function without the SQL engine unless built with `--features sql` (the
//! workspace's local builds are); the deployed SQL build is `floe-ingest-sql`.

// mimalloc: see the workspace Cargo.toml (glibc malloc was 15 % of ingest throughput).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe_ingest::run().await
}
