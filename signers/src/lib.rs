//! The signers under test: a software signer, a PKCS#11 signer and (later) a KMIP
//! signer, behind one [`Signer`] trait, configured in the `[[signers]]` format of
//! seed 001.

mod alg;
pub mod config;
mod error;
mod keyid;
mod secret;
mod signer;

pub use alg::{Algorithm, KeyType};
pub use config::{ConfigError, SignerSetup};
pub use error::{ErrorKind, SignerError};
pub use keyid::KeyIdentifier;
pub use secret::Secret;
pub use signer::{CreatedKey, Signer, SignerInfo};
