//! `floe-ingest-sql`: the ingest function with DataFusion for the outputs' SQL. The code is `floe-ingest`'s; this
//! package exists only so that `sam build` (which selects a binary, not features) can build either variant.

// mimalloc: see the workspace Cargo.toml (glibc malloc was 15 % of ingest throughput).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    floe_ingest::run().await
}
