//! Independent signature verification.
//!
//! A backend's signature is checked here with RustCrypto (`rsa`, `p256`, `p384`,
//! `ed25519-dalek`): code that shares nothing with the backend under test nor with the
//! software signer (aws-lc-rs). The public key comes as a DER SubjectPublicKeyInfo, as
//! the signers return it.
//!
//! What each algorithm must look like:
//!
//! | algorithm     | SPKI algorithm                  | signature                                   |
//! |---------------|---------------------------------|---------------------------------------------|
//! | `rsa2048`     | rsaEncryption, 2048-bit modulus | 256 bytes, PKCS#1 v1.5, SHA-256             |
//! | `rsa2048-pss` | rsaEncryption, 2048-bit modulus | 256 bytes, PSS, SHA-256, MGF1-SHA-256, salt 32 |
//! | `ecdsa-p256`  | id-ecPublicKey, prime256v1      | DER ECDSA-Sig-Value over SHA-256            |
//! | `ecdsa-p384`  | id-ecPublicKey, secp384r1       | DER ECDSA-Sig-Value over SHA-384            |
//! | `ed25519`     | id-Ed25519                      | 64 bytes (RFC 8032)                         |

use std::fmt;

use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;
use spki::der::Decode as _;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::oid::{self, EC_PUBLIC_KEY, ED25519, PRIME256V1, RSA_ENCRYPTION, SECP384R1};
use crate::Algorithm;

/// The RSA modulus size the `rsa2048*` algorithms require, in bits.
const RSA_BITS: usize = 2048;
/// The PSS salt length `rsa2048-pss` requires (the SHA-256 output size), in bytes.
const PSS_SALT_LEN: usize = 32;

/// Why a signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The public key is unusable for the algorithm: the SPKI does not parse, is of
    /// another key type or curve, or has the wrong size.
    BadKey { alg: Algorithm, detail: String },
    /// The signature is not in the encoding the algorithm requires (e.g. raw r||s where
    /// DER is required, or the wrong length).
    BadEncoding { alg: Algorithm, detail: String },
    /// The signature is well-formed but does not verify over the data with the key.
    Mismatch { alg: Algorithm, detail: String },
}

impl VerifyError {
    /// A short, stable name for the kind: "bad-key", "bad-encoding" or "mismatch".
    pub fn kind_name(&self) -> &'static str {
        match self {
            VerifyError::BadKey { .. } => "bad-key",
            VerifyError::BadEncoding { .. } => "bad-encoding",
            VerifyError::Mismatch { .. } => "mismatch",
        }
    }

    fn bad_key(alg: Algorithm, detail: impl Into<String>) -> Self {
        VerifyError::BadKey {
            alg,
            detail: detail.into(),
        }
    }

    fn bad_encoding(alg: Algorithm, detail: impl Into<String>) -> Self {
        VerifyError::BadEncoding {
            alg,
            detail: detail.into(),
        }
    }

    fn mismatch(alg: Algorithm) -> Self {
        let detail = match alg {
            Algorithm::Rsa2048Pkcs1Sha256 => {
                "not a PKCS#1 v1.5 SHA-256 signature of this data by this key"
            }
            Algorithm::Rsa2048PssSha256 => {
                "not a PSS signature (SHA-256, MGF1-SHA-256, salt length 32) of this data by this key"
            }
            Algorithm::EcdsaP256Sha256 => "not an ECDSA signature of SHA-256(data) by this key",
            Algorithm::EcdsaP384Sha384 => "not an ECDSA signature of SHA-384(data) by this key",
            Algorithm::Ed25519 => "not an Ed25519 signature of this data by this key",
        };
        VerifyError::Mismatch {
            alg,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::BadKey { alg, detail } => {
                write!(f, "public key is not usable for {alg}: {detail}")
            }
            VerifyError::BadEncoding { alg, detail } => {
                write!(
                    f,
                    "signature is not a well-formed {alg} signature: {detail}"
                )
            }
            VerifyError::Mismatch { alg, detail } => {
                write!(f, "{alg} signature does not verify: {detail}")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks `signature` over `data` with the public key `spki_der` (a DER
/// SubjectPublicKeyInfo) under `alg`, with RustCrypto.
///
/// The data is the message itself: hashing is part of each algorithm.
pub fn verify(
    spki_der: &[u8],
    alg: Algorithm,
    data: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| VerifyError::bad_key(alg, format!("not a DER SubjectPublicKeyInfo ({e})")))?;
    let key_bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
        VerifyError::bad_key(alg, "the subjectPublicKey BIT STRING has unused bits")
    })?;
    match alg {
        Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => {
            expect_oid(alg, spki.algorithm.oid, RSA_ENCRYPTION)?;
            verify_rsa(alg, key_bits, data, signature)
        }
        Algorithm::EcdsaP256Sha256 => {
            expect_ec_curve(alg, &spki, PRIME256V1)?;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                .map_err(|_| VerifyError::bad_key(alg, "not a valid P-256 point"))?;
            let sig = p256::ecdsa::Signature::from_der(signature)
                .map_err(|_| VerifyError::bad_encoding(alg, ecdsa_der_problem(signature, 32)))?;
            // p256 0.13 / ecdsa 0.16 accept high-S signatures (only k256 rejects them), so
            // no normalisation is needed: HSMs do not normalise s and both forms are valid
            // ECDSA. The tests pin this down (`ecdsa_high_s_is_accepted`).
            key.verify(data, &sig)
                .map_err(|_| VerifyError::mismatch(alg))
        }
        Algorithm::EcdsaP384Sha384 => {
            expect_ec_curve(alg, &spki, SECP384R1)?;
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                .map_err(|_| VerifyError::bad_key(alg, "not a valid P-384 point"))?;
            let sig = p384::ecdsa::Signature::from_der(signature)
                .map_err(|_| VerifyError::bad_encoding(alg, ecdsa_der_problem(signature, 48)))?;
            // High-S accepted, as for P-256 above.
            key.verify(data, &sig)
                .map_err(|_| VerifyError::mismatch(alg))
        }
        Algorithm::Ed25519 => {
            // RFC 8410 says the parameters are absent; they are not checked here.
            expect_oid(alg, spki.algorithm.oid, ED25519)?;
            let key_bytes: &[u8; 32] = key_bits.try_into().map_err(|_| {
                VerifyError::bad_key(
                    alg,
                    format!("the Ed25519 key is {} bytes, expected 32", key_bits.len()),
                )
            })?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(key_bytes)
                .map_err(|_| VerifyError::bad_key(alg, "not a valid Ed25519 point"))?;
            let sig_bytes: &[u8; 64] = signature.try_into().map_err(|_| {
                VerifyError::bad_encoding(
                    alg,
                    format!("{} bytes, expected 64 (R || S)", signature.len()),
                )
            })?;
            let sig = ed25519_dalek::Signature::from_bytes(sig_bytes);
            // Strict: also refuses non-canonical S and small-order keys or R, which an
            // honest signer never produces.
            key.verify_strict(data, &sig)
                .map_err(|_| VerifyError::mismatch(alg))
        }
    }
}

fn verify_rsa(
    alg: Algorithm,
    pkcs1_der: &[u8],
    data: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    let key = rsa::RsaPublicKey::from_pkcs1_der(pkcs1_der)
        .map_err(|e| VerifyError::bad_key(alg, format!("not a valid RSAPublicKey ({e})")))?;
    let bits = key.n().bits();
    if bits != RSA_BITS {
        return Err(VerifyError::bad_key(
            alg,
            format!("the RSA modulus is {bits} bits, expected {RSA_BITS}"),
        ));
    }
    if signature.len() != key.size() {
        return Err(VerifyError::bad_encoding(
            alg,
            format!(
                "{} bytes, expected {} (the modulus size, leading zeros included)",
                signature.len(),
                key.size()
            ),
        ));
    }
    let result = if alg == Algorithm::Rsa2048PssSha256 {
        let sig = rsa::pss::Signature::try_from(signature)
            .map_err(|e| VerifyError::bad_encoding(alg, e.to_string()))?;
        // rsa's PSS verifier checks the salt length exactly (the zero padding and the
        // 0x01 separator sit at fixed positions), so salt 20 or 64 is a mismatch.
        rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(key, PSS_SALT_LEN).verify(data, &sig)
    } else {
        let sig = rsa::pkcs1v15::Signature::try_from(signature)
            .map_err(|e| VerifyError::bad_encoding(alg, e.to_string()))?;
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(data, &sig)
    };
    result.map_err(|_| VerifyError::mismatch(alg))
}

fn expect_oid(
    alg: Algorithm,
    found: ObjectIdentifier,
    expected: ObjectIdentifier,
) -> Result<(), VerifyError> {
    if found == expected {
        Ok(())
    } else {
        Err(VerifyError::bad_key(
            alg,
            format!(
                "the SPKI algorithm is {}, expected {}",
                oid::name(found),
                oid::name(expected)
            ),
        ))
    }
}

fn expect_ec_curve(
    alg: Algorithm,
    spki: &SubjectPublicKeyInfoRef<'_>,
    curve: ObjectIdentifier,
) -> Result<(), VerifyError> {
    expect_oid(alg, spki.algorithm.oid, EC_PUBLIC_KEY)?;
    let found = spki.algorithm.parameters_oid().map_err(|_| {
        VerifyError::bad_key(
            alg,
            format!(
                "the id-ecPublicKey parameters are not a named curve, expected {}",
                oid::name(curve)
            ),
        )
    })?;
    if found == curve {
        Ok(())
    } else {
        Err(VerifyError::bad_key(
            alg,
            format!(
                "the key is on curve {}, expected {}",
                oid::name(found),
                oid::name(curve)
            ),
        ))
    }
}

/// Says why `signature` is not a DER ECDSA-Sig-Value, guessing raw r||s when the length
/// is twice the field size.
fn ecdsa_der_problem(signature: &[u8], field_len: usize) -> String {
    if signature.len() == 2 * field_len {
        format!(
            "{} bytes that are not DER: looks like raw r || s (PKCS#11 CKM_ECDSA format), \
             expected a DER SEQUENCE {{ r INTEGER, s INTEGER }}",
            signature.len()
        )
    } else {
        let start = signature
            .first()
            .map_or_else(|| "empty".to_string(), |b| format!("starts 0x{b:02x}"));
        format!(
            "{} bytes ({start}) that are not a DER SEQUENCE {{ r INTEGER, s INTEGER }} \
             with 0 < r, s < n",
            signature.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::KeyPair as _;
    use p256::ecdsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
    use p256::pkcs8::EncodePublicKey as _;
    use rand::RngCore as _;
    use rstest::rstest;

    use super::*;

    const DATA: &[u8] = b"the quick brown fox signs the RPKI manifest";

    type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// A test key pair: its SPKI and a way to sign with it.
    struct TestKey {
        spki: Vec<u8>,
        sign: SignFn,
    }

    /// RustCrypto RSA key generation is slow in debug builds: make two keys once.
    fn rsa_keys() -> &'static [rsa::RsaPrivateKey; 2] {
        static KEYS: OnceLock<[rsa::RsaPrivateKey; 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let gen = || rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
            std::thread::scope(|s| {
                let a = s.spawn(gen);
                let b = s.spawn(gen);
                [a.join().unwrap(), b.join().unwrap()]
            })
        })
    }

    /// Key number `n` (0 or 1) of `alg`'s type, made with RustCrypto.
    fn rustcrypto_key(alg: Algorithm, n: usize) -> TestKey {
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => {
                let private = rsa_keys()[n].clone();
                let spki = private
                    .to_public_key()
                    .to_public_key_der()
                    .unwrap()
                    .into_vec();
                let sign: SignFn = if alg == Algorithm::Rsa2048PssSha256 {
                    let key = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(private, 32);
                    Box::new(move |d| key.sign_with_rng(&mut rand::thread_rng(), d).to_vec())
                } else {
                    let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(private);
                    Box::new(move |d| key.sign(d).to_vec())
                };
                TestKey { spki, sign }
            }
            Algorithm::EcdsaP256Sha256 => {
                let key = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
                let spki = key.verifying_key().to_public_key_der().unwrap().into_vec();
                TestKey {
                    spki,
                    sign: Box::new(move |d| {
                        let sig: p256::ecdsa::Signature = key.sign(d);
                        sig.to_der().as_bytes().to_vec()
                    }),
                }
            }
            Algorithm::EcdsaP384Sha384 => {
                let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
                let spki = key.verifying_key().to_public_key_der().unwrap().into_vec();
                TestKey {
                    spki,
                    sign: Box::new(move |d| {
                        let sig: p384::ecdsa::Signature = key.sign(d);
                        sig.to_der().as_bytes().to_vec()
                    }),
                }
            }
            Algorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut seed);
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                TestKey {
                    spki: ed25519_spki(key.verifying_key().as_bytes()),
                    sign: Box::new(move |d| key.sign(d).to_bytes().to_vec()),
                }
            }
        }
    }

    /// SubjectPublicKeyInfo for an Ed25519 key (RFC 8410): a fixed prefix, then the key.
    fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
        let mut der = hex::decode("302a300506032b6570032100").unwrap();
        der.extend_from_slice(key);
        der
    }

    /// A key pair made with aws-lc-rs (the software signer's library).
    fn aws_lc_key(alg: Algorithm) -> TestKey {
        use aws_lc_rs::signature as sig;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => {
                let key = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
                let padding: &'static dyn sig::RsaEncoding = if alg == Algorithm::Rsa2048PssSha256 {
                    &sig::RSA_PSS_SHA256
                } else {
                    &sig::RSA_PKCS1_SHA256
                };
                TestKey {
                    spki,
                    sign: Box::new(move |d| {
                        let mut out = vec![0; key.public_modulus_len()];
                        key.sign(padding, &rng, d, &mut out).unwrap();
                        out
                    }),
                }
            }
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
                let signing = if alg == Algorithm::EcdsaP256Sha256 {
                    &sig::ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &sig::ECDSA_P384_SHA384_ASN1_SIGNING
                };
                let key = sig::EcdsaKeyPair::generate(signing).unwrap();
                let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
                TestKey {
                    spki,
                    sign: Box::new(move |d| key.sign(&rng, d).unwrap().as_ref().to_vec()),
                }
            }
            Algorithm::Ed25519 => {
                let key = sig::Ed25519KeyPair::generate().unwrap();
                let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
                TestKey {
                    spki,
                    sign: Box::new(move |d| key.sign(d).as_ref().to_vec()),
                }
            }
        }
    }

    /// An algorithm whose key type differs from `alg`'s.
    fn other_type(alg: Algorithm) -> Algorithm {
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 | Algorithm::Rsa2048PssSha256 => {
                Algorithm::EcdsaP256Sha256
            }
            Algorithm::EcdsaP256Sha256 => Algorithm::EcdsaP384Sha384,
            Algorithm::EcdsaP384Sha384 => Algorithm::Ed25519,
            Algorithm::Ed25519 => Algorithm::Rsa2048Pkcs1Sha256,
        }
    }

    fn kind(result: Result<(), VerifyError>) -> &'static str {
        match result {
            Ok(()) => "ok",
            Err(e) => e.kind_name(),
        }
    }

    #[rstest]
    fn rustcrypto_signature_verifies(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        let key = rustcrypto_key(alg, 0);
        let sig = (key.sign)(DATA);
        assert_eq!(verify(&key.spki, alg, DATA, &sig), Ok(()));
    }

    #[rstest]
    fn aws_lc_signature_verifies(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        // Both libraries agree on the SPKI form, PSS parameters (salt 32) and DER.
        let key = aws_lc_key(alg);
        let sig = (key.sign)(DATA);
        assert_eq!(verify(&key.spki, alg, DATA, &sig), Ok(()));
        // And tampering is still caught with an aws-lc-rs key.
        assert_eq!(
            kind(verify(&key.spki, alg, b"other data", &sig)),
            "mismatch"
        );
    }

    #[test]
    fn aws_lc_verifies_rustcrypto_signatures_too() {
        use aws_lc_rs::signature as sig;
        let cases: [(Algorithm, &'static dyn sig::VerificationAlgorithm); 5] = [
            (
                Algorithm::Rsa2048Pkcs1Sha256,
                &sig::RSA_PKCS1_2048_8192_SHA256,
            ),
            (Algorithm::Rsa2048PssSha256, &sig::RSA_PSS_2048_8192_SHA256),
            (Algorithm::EcdsaP256Sha256, &sig::ECDSA_P256_SHA256_ASN1),
            (Algorithm::EcdsaP384Sha384, &sig::ECDSA_P384_SHA384_ASN1),
            (Algorithm::Ed25519, &sig::ED25519),
        ];
        for (alg, aws_alg) in cases {
            let key = rustcrypto_key(alg, 0);
            let signature = (key.sign)(DATA);
            // aws-lc-rs wants the raw key (PKCS#1 RSAPublicKey, SEC1 point, Ed25519 bytes).
            let spki = SubjectPublicKeyInfoRef::from_der(&key.spki).unwrap();
            let raw = spki.subject_public_key.raw_bytes();
            sig::UnparsedPublicKey::new(aws_alg, raw)
                .verify(DATA, &signature)
                .unwrap_or_else(|_| panic!("aws-lc-rs rejects RustCrypto's {alg} signature"));
        }
    }

    #[rstest]
    fn tampered_data_is_a_mismatch(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        let key = rustcrypto_key(alg, 0);
        let sig = (key.sign)(DATA);
        let mut tampered = DATA.to_vec();
        tampered[0] ^= 1;
        let err = verify(&key.spki, alg, &tampered, &sig).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[rstest]
    fn tampered_signature_is_a_mismatch(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        // (Flipping a bit inside a DER signature may break the DER instead; fixed-size
        // signatures only.)
        let key = rustcrypto_key(alg, 0);
        let mut sig = (key.sign)(DATA);
        sig[10] ^= 0x40;
        assert_eq!(kind(verify(&key.spki, alg, DATA, &sig)), "mismatch");
    }

    #[rstest]
    fn another_key_of_the_same_type_is_a_mismatch(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        let signer = rustcrypto_key(alg, 0);
        let other = rustcrypto_key(alg, 1);
        assert_ne!(signer.spki, other.spki);
        let sig = (signer.sign)(DATA);
        assert_eq!(kind(verify(&other.spki, alg, DATA, &sig)), "mismatch");
    }

    #[rstest]
    fn key_of_another_type_is_a_bad_key(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::Rsa2048PssSha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        let signer = rustcrypto_key(alg, 0);
        let wrong = rustcrypto_key(other_type(alg), 0);
        let sig = (signer.sign)(DATA);
        let err = verify(&wrong.spki, alg, DATA, &sig).unwrap_err();
        assert!(matches!(err, VerifyError::BadKey { .. }), "{err:?}");
        assert!(err.to_string().contains("expected"), "{err}");
    }

    #[rstest]
    fn garbage_spki_is_a_bad_key(
        #[values(
            Algorithm::Rsa2048Pkcs1Sha256,
            Algorithm::EcdsaP256Sha256,
            Algorithm::Ed25519
        )]
        alg: Algorithm,
    ) {
        let signer = rustcrypto_key(alg, 0);
        let sig = (signer.sign)(DATA);
        assert_eq!(kind(verify(b"", alg, DATA, &sig)), "bad-key");
        // Trailing bytes after the SPKI.
        let mut spki = signer.spki.clone();
        spki.push(0);
        assert_eq!(kind(verify(&spki, alg, DATA, &sig)), "bad-key");
        // The raw key instead of the SPKI.
        let raw = SubjectPublicKeyInfoRef::from_der(&signer.spki)
            .unwrap()
            .subject_public_key
            .raw_bytes()
            .to_vec();
        assert_eq!(kind(verify(&raw, alg, DATA, &sig)), "bad-key");
    }

    #[test]
    fn rsa_key_of_another_size_is_a_bad_key() {
        let key =
            aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
        let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
        let err = verify(&spki, Algorithm::Rsa2048Pkcs1Sha256, DATA, &[0; 384]).unwrap_err();
        assert_eq!(err.kind_name(), "bad-key");
        assert!(
            err.to_string().contains("3072 bits, expected 2048"),
            "{err}"
        );
    }

    #[test]
    fn p256_key_for_p384_names_both_curves() {
        let key = rustcrypto_key(Algorithm::EcdsaP256Sha256, 0);
        let err = verify(&key.spki, Algorithm::EcdsaP384Sha384, DATA, &[]).unwrap_err();
        assert_eq!(err.kind_name(), "bad-key");
        let text = err.to_string();
        assert!(
            text.contains("P-256") && text.contains("expected P-384"),
            "{text}"
        );
    }

    #[rstest]
    #[case(Algorithm::EcdsaP256Sha256, 32)]
    #[case(Algorithm::EcdsaP384Sha384, 48)]
    fn raw_ecdsa_signature_is_a_bad_encoding(#[case] alg: Algorithm, #[case] field_len: usize) {
        let key = rustcrypto_key(alg, 0);
        let der = (key.sign)(DATA);
        let raw = match alg {
            Algorithm::EcdsaP256Sha256 => p256::ecdsa::Signature::from_der(&der)
                .unwrap()
                .to_bytes()
                .to_vec(),
            _ => p384::ecdsa::Signature::from_der(&der)
                .unwrap()
                .to_bytes()
                .to_vec(),
        };
        assert_eq!(raw.len(), 2 * field_len);
        let err = verify(&key.spki, alg, DATA, &raw).unwrap_err();
        assert!(matches!(err, VerifyError::BadEncoding { .. }), "{err:?}");
        assert!(err.to_string().contains("raw r || s"), "{err}");
        // Trailing garbage after the DER is an encoding error too.
        let mut long = der.clone();
        long.push(0);
        assert_eq!(kind(verify(&key.spki, alg, DATA, &long)), "bad-encoding");
        assert_eq!(kind(verify(&key.spki, alg, DATA, &[])), "bad-encoding");
    }

    #[rstest]
    #[case(Algorithm::Rsa2048Pkcs1Sha256)]
    #[case(Algorithm::Rsa2048PssSha256)]
    #[case(Algorithm::Ed25519)]
    fn wrong_length_is_a_bad_encoding(#[case] alg: Algorithm) {
        let key = rustcrypto_key(alg, 0);
        let sig = (key.sign)(DATA);
        // Leading byte dropped (as a signer that strips leading zeros would), and one extra.
        assert_eq!(
            kind(verify(&key.spki, alg, DATA, &sig[1..])),
            "bad-encoding"
        );
        let mut long = sig.clone();
        long.push(0);
        assert_eq!(kind(verify(&key.spki, alg, DATA, &long)), "bad-encoding");
    }

    #[rstest]
    #[case(Algorithm::EcdsaP256Sha256)]
    #[case(Algorithm::EcdsaP384Sha384)]
    fn ecdsa_high_s_is_accepted(#[case] alg: Algorithm) {
        // HSMs do not normalise s: (r, n - s) is as valid as (r, s).
        let key = rustcrypto_key(alg, 0);
        let der = (key.sign)(DATA);
        let high = match alg {
            Algorithm::EcdsaP256Sha256 => {
                let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                let (r, s) = sig.split_scalars();
                let flipped = p256::ecdsa::Signature::from_scalars(r, -s).unwrap();
                let high = if sig.normalize_s().is_none() {
                    flipped
                } else {
                    sig
                };
                assert!(high.normalize_s().is_some(), "not high-S");
                high.to_der().as_bytes().to_vec()
            }
            _ => {
                let sig = p384::ecdsa::Signature::from_der(&der).unwrap();
                let (r, s) = sig.split_scalars();
                let flipped = p384::ecdsa::Signature::from_scalars(r, -s).unwrap();
                let high = if sig.normalize_s().is_none() {
                    flipped
                } else {
                    sig
                };
                assert!(high.normalize_s().is_some(), "not high-S");
                high.to_der().as_bytes().to_vec()
            }
        };
        assert_eq!(verify(&key.spki, alg, DATA, &high), Ok(()));
    }

    #[test]
    fn pss_with_another_salt_length_is_a_mismatch() {
        let alg = Algorithm::Rsa2048PssSha256;
        let private = rsa_keys()[0].clone();
        let spki = private
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        for salt in [0, 20, 64] {
            let key = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(private.clone(), salt);
            let sig = key.sign_with_rng(&mut rand::thread_rng(), DATA).to_vec();
            assert_eq!(
                kind(verify(&spki, alg, DATA, &sig)),
                "mismatch",
                "salt {salt}"
            );
        }
    }

    #[test]
    fn pkcs1_and_pss_are_not_interchangeable() {
        let pkcs1 = rustcrypto_key(Algorithm::Rsa2048Pkcs1Sha256, 0);
        let pss = rustcrypto_key(Algorithm::Rsa2048PssSha256, 0);
        let sig = (pkcs1.sign)(DATA);
        assert_eq!(
            kind(verify(&pss.spki, Algorithm::Rsa2048PssSha256, DATA, &sig)),
            "mismatch"
        );
        let sig = (pss.sign)(DATA);
        assert_eq!(
            kind(verify(
                &pkcs1.spki,
                Algorithm::Rsa2048Pkcs1Sha256,
                DATA,
                &sig
            )),
            "mismatch"
        );
    }

    #[test]
    fn kind_names_and_messages() {
        let alg = Algorithm::EcdsaP256Sha256;
        let e = VerifyError::bad_key(alg, "x");
        assert_eq!(
            (e.kind_name(), e.to_string().as_str()),
            ("bad-key", "public key is not usable for ecdsa-p256: x")
        );
        let e = VerifyError::bad_encoding(alg, "y");
        assert_eq!(e.kind_name(), "bad-encoding");
        assert_eq!(
            e.to_string(),
            "signature is not a well-formed ecdsa-p256 signature: y"
        );
        let e = VerifyError::mismatch(alg);
        assert_eq!(e.kind_name(), "mismatch");
        assert_eq!(
            e.to_string(),
            "ecdsa-p256 signature does not verify: not an ECDSA signature of SHA-256(data) by this key"
        );
    }
}
