//! The fuzz entry point for the request decoder.
//!
//! cargo-fuzz needs a nightly toolchain, which is not available here; [`fuzz_one`] is
//! the target body, callable from any driver (the property tests in
//! `tests/frames.rs` run it on random and mutated frames in CI, and
//! `examples/fuzz_frames.rs` runs it as long as asked). It must never panic.

use crate::message::Request;
use crate::ttlv;

/// Decodes `data` as a request frame the way the relay does before dispatch, and
/// checks that what decodes re-encodes to the same bytes.
pub fn fuzz_one(data: &[u8]) {
    let Ok(item) = ttlv::decode(data) else {
        return;
    };
    let again = ttlv::encode(&item);
    // Padding bytes are not checked on input, so compare modulo padding: decoding the
    // re-encoded bytes must give the same tree.
    assert_eq!(
        ttlv::decode(&again).as_ref(),
        Ok(&item),
        "re-encoding changed the tree"
    );
    let _ = Request::from_item(&item);
}
