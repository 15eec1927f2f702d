//! floe's pure core: the pipeline file, MSK event decoding, JSON → Arrow, Parquet data files with Iceberg
//! metadata, the exactly-once staging protocol and commit planning. No AWS SDK and no Lambda runtime here:
//! storage sits behind [`state::StateStore`], Iceberg's `Catalog` trait and `FileIO`.
//!
//! The flow: [`ingest::Ingestor`] turns an MSK event into data files and stages them atomically with the
//! topic-partition's offset fence; [`compactor::Compactor`] commits staged files as Iceberg snapshots that record
//! the committed source positions.

pub mod aggregate;
pub mod commit;
pub mod compactor;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod emit;
pub mod error;
pub mod failpoint;
#[cfg(feature = "failpoints")]
pub mod faults;
pub mod hll;
pub mod ingest;
pub mod layout;
pub mod metrics;
pub mod outputs;
mod pinned;
pub mod settings;
pub mod source;
pub mod state;
pub mod stream;
pub mod stream_state;
pub mod transform;
pub mod window;
pub mod writer;

pub use error::{Error, Result};
