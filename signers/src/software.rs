//! The software signer (configuration type "OpenSSL"): key pairs as PKCS#8 files.
//!
//! Named "OpenSSL" because that is the type name seed 001 gives the software signer;
//! the cryptography is aws-lc-rs, the one crypto library of this build (rustls uses it
//! too). Each private key is one file, `<keys_dir>/<key identifier>.key`, holding the
//! PKCS#8 DER document. Files are created with mode 0600 and written atomically (a
//! temporary file in the same directory, fsynced, then renamed), so a crash never
//! leaves a half-written key behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use crate::{Algorithm, CreatedKey, KeyIdentifier, KeyType, Signer, SignerError, SignerInfo};

const KEY_SUFFIX: &str = "key";

/// A signer whose keys are files in a directory.
pub struct SoftwareSigner {
    name: String,
    keys_dir: PathBuf,
}

/// A private key loaded from its file.
enum LoadedKey {
    Rsa(signature::RsaKeyPair),
    Ecdsa(KeyType, EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SoftwareSigner {
    /// A signer keeping its keys in `keys_dir` (created, mode 0700, on first use).
    pub fn new(name: &str, keys_dir: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            keys_dir,
        }
    }

    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    fn key_path(&self, key: &KeyIdentifier) -> PathBuf {
        self.keys_dir.join(format!("{key}.{KEY_SUFFIX}"))
    }

    fn ensure_dir(&self) -> Result<(), SignerError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.keys_dir)
            .map_err(|e| SignerError::io(format!("creating {}", self.keys_dir.display()), e))
    }

    /// Writes `pkcs8` as the key file for `key`: temp file (0600), fsync, rename, fsync dir.
    fn store(&self, key: &KeyIdentifier, pkcs8: &[u8]) -> Result<(), SignerError> {
        self.ensure_dir()?;
        let path = self.key_path(key);
        let ctx = |what: &str| format!("{what} {}", path.display());
        // tempfile creates the file with mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-key-")
            .tempfile_in(&self.keys_dir)
            .map_err(|e| SignerError::io(ctx("creating a temporary file for"), e))?;
        tmp.write_all(pkcs8)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| SignerError::io(ctx("writing"), e))?;
        tmp.persist(&path)
            .map_err(|e| SignerError::io(ctx("renaming into"), e.error))?;
        fs::File::open(&self.keys_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SignerError::io(format!("syncing {}", self.keys_dir.display()), e))
    }

    fn load(&self, key: &KeyIdentifier) -> Result<LoadedKey, SignerError> {
        let path = self.key_path(key);
        let der = match fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SignerError::key_not_found(&self.name, key))
            }
            Err(e) => return Err(SignerError::io(format!("reading {}", path.display()), e)),
        };
        if let Ok(k) = signature::RsaKeyPair::from_pkcs8(&der) {
            return Ok(LoadedKey::Rsa(k));
        }
        for (kt, alg) in [
            (KeyType::EcP256, &signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            (KeyType::EcP384, &signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        ] {
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, &der) {
                return Ok(LoadedKey::Ecdsa(kt, k));
            }
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8(&der) {
            return Ok(LoadedKey::Ed25519(k));
        }
        Err(SignerError::backend(format!(
            "{} is not a PKCS#8 key this signer can read",
            path.display()
        )))
    }
}

impl LoadedKey {
    fn key_type(&self) -> KeyType {
        match self {
            LoadedKey::Rsa(_) => KeyType::Rsa2048,
            LoadedKey::Ecdsa(kt, _) => *kt,
            LoadedKey::Ed25519(_) => KeyType::Ed25519,
        }
    }

    fn spki(&self) -> Result<Vec<u8>, SignerError> {
        let der = match self {
            LoadedKey::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            LoadedKey::Ecdsa(_, k) => {
                AsDer::<PublicKeyX509Der>::as_der(k.public_key()).map(|d| d.as_ref().to_vec())
            }
            LoadedKey::Ed25519(k) => {
                AsDer::<PublicKeyX509Der>::as_der(k.public_key()).map(|d| d.as_ref().to_vec())
            }
        };
        der.map_err(|_| SignerError::backend("cannot encode the public key"))
    }
}

fn rsa_spki(k: &signature::RsaKeyPair) -> Result<Vec<u8>, SignerError> {
    k.public_key()
        .as_der()
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| SignerError::backend("cannot encode the RSA public key"))
}

impl Signer for SoftwareSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> Result<SignerInfo, SignerError> {
        Ok(SignerInfo {
            name: self.name.clone(),
            signer_type: "OpenSSL".into(),
            details: vec![
                ("library".into(), "aws-lc-rs".into()),
                ("keys_dir".into(), self.keys_dir.display().to_string()),
            ],
        })
    }

    fn supports(&self, _alg: Algorithm) -> Result<bool, SignerError> {
        Ok(true)
    }

    fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
        let fail = |what: &str| SignerError::backend(format!("{what} for {alg} failed"));
        let (pkcs8, public_key) = match alg.key_type() {
            KeyType::Rsa2048 => {
                let k = signature::RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| fail("key generation"))?;
                let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                    .map_err(|_| fail("PKCS#8 encoding"))?;
                (pkcs8.as_ref().to_vec(), rsa_spki(&k)?)
            }
            kt @ (KeyType::EcP256 | KeyType::EcP384) => {
                let sig_alg = if kt == KeyType::EcP256 {
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &signature::ECDSA_P384_SHA384_ASN1_SIGNING
                };
                let k = EcdsaKeyPair::generate(sig_alg).map_err(|_| fail("key generation"))?;
                let pkcs8 = k.to_pkcs8v1().map_err(|_| fail("PKCS#8 encoding"))?;
                (pkcs8.as_ref().to_vec(), LoadedKey::Ecdsa(kt, k).spki()?)
            }
            KeyType::Ed25519 => {
                let k = Ed25519KeyPair::generate().map_err(|_| fail("key generation"))?;
                let pkcs8 = k.to_pkcs8().map_err(|_| fail("PKCS#8 encoding"))?;
                (pkcs8.as_ref().to_vec(), LoadedKey::Ed25519(k).spki()?)
            }
        };
        let id = KeyIdentifier::from_spki_der(&public_key).map_err(SignerError::backend)?;
        self.store(&id, &pkcs8)?;
        Ok(CreatedKey {
            id,
            public_key,
            // Key files are named after the identifier.
            handle: id.to_string(),
        })
    }

    fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        self.load(key)?.spki()
    }

    fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let loaded = self.load(key)?;
        if loaded.key_type() != alg.key_type() {
            return Err(SignerError::invalid_input(format!(
                "key {key} is {}, it cannot sign with {alg}",
                loaded.key_type()
            )));
        }
        let rng = SystemRandom::new();
        let fail = |_| SignerError::backend(format!("signing with {alg} failed"));
        match (&loaded, alg) {
            (LoadedKey::Rsa(k), Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256) => {
                let padding: &dyn signature::RsaEncoding = if alg == Algorithm::Rsa2048PssSha256 {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, data, &mut sig).map_err(fail)?;
                Ok(sig)
            }
            (LoadedKey::Ecdsa(_, k), _) => Ok(k.sign(&rng, data).map_err(fail)?.as_ref().to_vec()),
            (LoadedKey::Ed25519(k), _) => Ok(k.sign(data).as_ref().to_vec()),
            _ => Err(SignerError::invalid_input(format!(
                "key {key} cannot sign with {alg}"
            ))),
        }
    }

    fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        let path = self.key_path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SignerError::key_not_found(&self.name, key))
            }
            Err(e) => Err(SignerError::io(format!("removing {}", path.display()), e)),
        }
    }

    fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
        let mut buf = vec![0; len];
        aws_lc_rs::rand::fill(&mut buf)
            .map_err(|_| SignerError::backend("the system random generator failed"))?;
        Ok(buf)
    }

    fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError> {
        let entries = match fs::read_dir(&self.keys_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(SignerError::io(
                    format!("listing {}", self.keys_dir.display()),
                    e,
                ))
            }
        };
        let mut keys: Vec<KeyIdentifier> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(&format!(".{KEY_SUFFIX}"))?.parse().ok()
            })
            .collect();
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use rstest::rstest;
    use std::os::unix::fs::PermissionsExt;

    fn signer() -> (tempfile::TempDir, SoftwareSigner) {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new("soft", dir.path().join("keys"));
        (dir, s)
    }

    #[rstest]
    #[case(Algorithm::Rsa2048Pkcs1Sha256)]
    #[case(Algorithm::Rsa2048PssSha256)]
    #[case(Algorithm::EcdsaP256Sha256)]
    #[case(Algorithm::EcdsaP384Sha384)]
    #[case(Algorithm::Ed25519)]
    fn created_key_is_a_private_file_named_by_its_identifier(#[case] alg: Algorithm) {
        let (_dir, s) = signer();
        let k = s.create_key(alg).unwrap();
        assert_eq!(KeyIdentifier::from_spki_der(&k.public_key).unwrap(), k.id);
        let meta = fs::metadata(s.key_path(&k.id)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(s.public_key(&k.id).unwrap(), k.public_key);
        assert_eq!(s.list_keys().unwrap(), vec![k.id]);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(s.keys_dir()).unwrap().count(), 1);
        let sig = s.sign(&k.id, alg, b"payload").unwrap();
        assert!(!sig.is_empty());
    }

    #[test]
    fn destroyed_key_is_not_found() {
        let (_dir, s) = signer();
        let k = s.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        s.destroy_key(&k.id).unwrap();
        let e = s.sign(&k.id, Algorithm::EcdsaP256Sha256, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(s.destroy_key(&k.id).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn wrong_algorithm_for_the_key_is_invalid_input() {
        let (_dir, s) = signer();
        let k = s.create_key(Algorithm::EcdsaP256Sha256).unwrap();
        let e = s.sign(&k.id, Algorithm::EcdsaP384Sha384, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn random_gives_the_requested_length() {
        let (_dir, s) = signer();
        assert_eq!(s.random(48).unwrap().len(), 48);
    }
}
