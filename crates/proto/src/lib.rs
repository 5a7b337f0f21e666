//! Meridian's wire types and gRPC services, generated from the `.proto` files in `proto/`.
//!
//! This is the only crate that knows prost; the protocol crates (truetime, storage, and later
//! tablet and txn logic) never see wire types.

/// Version 1 of the API (`package meridian.v1`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");
}
