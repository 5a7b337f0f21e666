//! Order-preserving encoding of composite keys: byte order equals SQL order, for ascending
//! and descending columns alike. See [`encode`] for the format.

pub mod encode;
mod value;

pub use encode::{Direction, decode_key, encode_key, encode_value};
pub use value::{ColumnType, Value};

#[cfg(test)]
mod tests;
