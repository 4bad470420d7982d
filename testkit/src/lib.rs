//! Test support shared by the tests of every crate in the workspace (a dev-dependency
//! only; the product never links it), so that each fixture is written once.
//!
//! - [`softhsm`]: a SoftHSMv2 token directory and token of a test's own ([`softhsm::Hsm`]).
//! - [`junit10`]: the rules of the JUnit schema strict CI consumers validate with.
//! - [`pki`]: a CA with a server and a client certificate, as files ([`pki::Pki`]).
//! - [`pykmip`]: a PyKMIP server on a free port with such a PKI ([`pykmip::PyKmip`]).
//! - [`relay`]: our relay, `kmip2pkcs11`, in front of such a token, with such a PKI
//!   ([`relay::Relay`]).
//!
//! Everything here is test set-up: it panics, naming what failed and what to install,
//! rather than returning errors, and a missing tool fails the test instead of skipping it.

pub mod junit10;
pub mod pki;
pub mod pykmip;
pub mod relay;
pub mod softhsm;

/// `bytes` random bytes as lowercase hex: for labels, PINs and names that must differ
/// between tests and runs.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
