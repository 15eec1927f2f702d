//! floe's pure core: the pipeline file, MSK event decoding, JSON → Arrow, Parquet data files with Iceberg
//! metadata, the exactly-once staging protocol and commit planning. No AWS SDK and no Lambda runtime here:
//! storage sits behind [`state::StateStore`], Iceberg's `Catalog` trait and `FileIO`.

pub mod config;
pub mod decode;
pub mod error;
pub mod layout;
pub mod source;

pub use error::{Error, Result};
