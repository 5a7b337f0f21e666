//! How Raft state is encoded on disk and on the wire: JSON through serde, in one place so
//! that a faster encoding can replace it without touching anything else.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value; serde_json cannot fail on these types, but an error still surfaces.
pub(crate) fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(std::io::Error::other)
}

/// Decodes bytes that came from disk or the network; garbage is an error, never a panic.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
