//! The object identifiers the oracle reads and writes, and their names for messages.

use spki::ObjectIdentifier;

pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
pub const X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
pub const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
pub const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
pub const SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// `name (dotted)` for the identifiers above, the dotted form alone for others.
pub fn name(oid: ObjectIdentifier) -> String {
    let name = match oid {
        RSA_ENCRYPTION => "rsaEncryption",
        RSASSA_PSS => "id-RSASSA-PSS",
        EC_PUBLIC_KEY => "id-ecPublicKey",
        ED25519 => "id-Ed25519",
        ED448 => "id-Ed448",
        X25519 => "id-X25519",
        DSA => "id-dsa",
        PRIME256V1 => "P-256 (prime256v1)",
        SECP384R1 => "P-384 (secp384r1)",
        SECP521R1 => "P-521 (secp521r1)",
        SECP256K1 => "secp256k1",
        _ => return oid.to_string(),
    };
    format!("{name} ({oid})")
}
