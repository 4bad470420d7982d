//! The signers under test: a software signer, a PKCS#11 signer and (later) a KMIP
//! signer, behind one [`Signer`] trait, configured in the `[[signers]]` format of
//! seed 001.

mod alg;
pub mod config;
pub mod encoding;
mod error;
pub mod identity;
mod keyid;
pub mod keymap;
pub mod kmip;
pub mod pkcs11;
pub mod router;
mod signer;
pub mod software;

pub use alg::{Algorithm, KeyType};
pub use config::{ConfigError, SignerSetup};
pub use error::{ErrorKind, SignerError};
pub use keyid::KeyIdentifier;
pub use pkcs11::Pkcs11Signer;
pub use router::Router;
/// PIN and password sources, shared with the relay (crate `secret-source`).
pub use secret_source::Secret;
pub use signer::{CreatedKey, Signer, SignerInfo};
