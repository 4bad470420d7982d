//! hsm-oracle: every check by which the harness decides that a signer passed or
//! failed, in code that shares nothing with the signers under test.
//!
//! What it checks:
//!
//! - [`verify`]: a signature over data with a public key (DER SubjectPublicKeyInfo)
//!   under an [`Algorithm`], with RustCrypto's verifiers (`rsa`, `p256`, `p384`,
//!   `ed25519-dalek`); the signers sign with aws-lc-rs or a backend.
//! - [`keyid`]: a key's identifier, SHA-1 of its subjectPublicKey (RFC 5280 method 1),
//!   computed from the key rather than taken from the signer's word.
//! - [`public_key`]: the SubjectPublicKeyInfo of a key a backend holds in pieces (a
//!   PKCS#11 modulus and exponent, EC parameters and point), so an inventory names
//!   keys by what they are; [`public_key::of_pkcs8`] does the same for a software
//!   signer's PKCS#8 key file, from the key material rather than the file's name.
//! - [`kmip`]: the key pairs a KMIP server holds, over a KMIP client of its own (its
//!   own TTLV codec, messages and TLS setup), and the operations it says it supports
//!   ([`kmip::query_operations`]); also what a server says of itself
//!   ([`kmip::server`]) and its objects one by one ([`kmip::objects`]), the harness's
//!   view of a KMIP server it does not own.
//!
//! Why nothing is shared: a check that runs the product's code agrees with the
//! product's mistakes. A wrong DER encoder, a misread key format or a TTLV slip in the
//! signers would make the signer and its check wrong the same way, and the suite
//! would pass. So this crate does not depend on `hsm-signers` (nor on the relay), and
//! cargo enforces it: `cargo tree -p hsm-oracle -e normal` lists no `hsm-signers`.
//! Third-party crates the product also uses (rustls, `spki` for reading DER) are
//! shared; no code of the project's is. The oracle has its own [`Algorithm`], which
//! callers map the product's algorithms to by name.

pub mod algorithm;
mod der;
pub mod keyid;
pub mod kmip;
mod oid;
mod pkcs8;
pub mod public_key;
pub mod verify;

pub use algorithm::Algorithm;
pub use keyid::KeyId;
