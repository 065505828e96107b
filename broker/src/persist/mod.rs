//! Persistence: what the broker keeps in RocksDB so that an acknowledged message survives a
//! crash. `record` owns the byte layouts, `store` the database and its group-commit writer.
//! The durability contract is in `docs/ARCHITECTURE.md` ("Durability").

pub mod record;
pub mod store;

pub use store::{Cf, Commit, Op, Store, StoreError};
