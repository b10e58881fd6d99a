//! OCI content digests ("sha256:<64 hex>") and canonical JSON.

use anyhow::{bail, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// "sha256:<hex>" of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a "sha256:<hex>" digest, checked, so that it is safe to use as a file name.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("digest {digest:?} is not a sha256 digest (expected \"sha256:\" and 64 hex digits)");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("digest {digest:?} must be \"sha256:\" followed by 64 lower-case hex digits");
    }
    Ok(hex)
}

/// JSON with object keys sorted and no whitespace, so that the same value always gives the same
/// bytes and so the same digest. oci-spec keeps annotations in HashMaps, whose order changes from
/// run to run; going through `serde_json::Value` (a BTreeMap unless serde_json's
/// `preserve_order` feature is on, which a test guards) sorts them.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&value)?)
}
