//! KMIP 1.0–1.2 numbers the relay reads or writes: tags, operations, enumerations,
//! result reasons. Only what the relay uses; names follow the specification.

/// Item tags (KMIP 1.2 section 9.1.3.1).
pub mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_INDEX: u32 = 0x420009;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const AUTHENTICATION: u32 = 0x42000C;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ERROR_CONTINUATION_OPTION: u32 = 0x42000E;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const COMMON_TEMPLATE_ATTRIBUTE: u32 = 0x42001F;
    pub const CREDENTIAL: u32 = 0x420023;
    pub const CREDENTIAL_TYPE: u32 = 0x420024;
    pub const CREDENTIAL_VALUE: u32 = 0x420025;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_DOMAIN_PARAMETERS: u32 = 0x420029;
    pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
    pub const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42002B;
    pub const CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x42002C;
    pub const DATA: u32 = 0x4200C2;
    pub const DATA_LENGTH: u32 = 0x4200C4;
    pub const DIGITAL_SIGNATURE_ALGORITHM: u32 = 0x4200AE;
    pub const HASHING_ALGORITHM: u32 = 0x420038;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const MAXIMUM_ITEMS: u32 = 0x42004F;
    pub const MAXIMUM_RESPONSE_SIZE: u32 = 0x420050;
    pub const MODULUS: u32 = 0x420052;
    pub const NAME: u32 = 0x420053;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PADDING_METHOD: u32 = 0x42005F;
    pub const PRIVATE_KEY: u32 = 0x420064;
    pub const PRIVATE_KEY_TEMPLATE_ATTRIBUTE: u32 = 0x420065;
    pub const PRIVATE_KEY_UNIQUE_IDENTIFIER: u32 = 0x420066;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const PUBLIC_EXPONENT: u32 = 0x42006C;
    pub const PUBLIC_KEY: u32 = 0x42006D;
    pub const PUBLIC_KEY_TEMPLATE_ATTRIBUTE: u32 = 0x42006E;
    pub const PUBLIC_KEY_UNIQUE_IDENTIFIER: u32 = 0x42006F;
    pub const Q_STRING: u32 = 0x420072;
    pub const QUERY_FUNCTION: u32 = 0x420074;
    pub const RECOMMENDED_CURVE: u32 = 0x420075;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_HEADER: u32 = 0x42007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const SERVER_INFORMATION: u32 = 0x420088;
    pub const SIGNATURE_DATA: u32 = 0x4200C3;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const TIME_STAMP: u32 = 0x420092;
    pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const USERNAME: u32 = 0x420099;
    pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
    pub const PASSWORD: u32 = 0x4200A1;
    /// Vendor extension tags (0x54xxxx) inside Server Information.
    pub const X_PKCS11_LIBRARY: u32 = 0x540001;
    pub const X_TOKEN: u32 = 0x540002;
}

/// Operation (KMIP 1.2 section 9.1.3.2.27).
pub mod operation {
    pub const CREATE: u32 = 0x01;
    pub const CREATE_KEY_PAIR: u32 = 0x02;
    pub const LOCATE: u32 = 0x08;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const ADD_ATTRIBUTE: u32 = 0x0D;
    pub const MODIFY_ATTRIBUTE: u32 = 0x0E;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
    pub const SIGN: u32 = 0x21;
    pub const RNG_RETRIEVE: u32 = 0x25;

    /// Every operation this relay knows by name (it runs all but Create).
    pub const KNOWN: [u32; 14] = [
        CREATE,
        CREATE_KEY_PAIR,
        LOCATE,
        GET,
        GET_ATTRIBUTES,
        ADD_ATTRIBUTE,
        MODIFY_ATTRIBUTE,
        ACTIVATE,
        REVOKE,
        DESTROY,
        QUERY,
        DISCOVER_VERSIONS,
        SIGN,
        RNG_RETRIEVE,
    ];

    /// The operation named `name` as KMIP 1.2 spells it (`Modify Attribute`), if known.
    pub fn from_name(name: &str) -> Option<u32> {
        KNOWN.into_iter().find(|op| self::name(*op) == name)
    }

    /// The operation's KMIP 1.2 name, for logs and messages ("Get Attributes"); codes
    /// outside KMIP 1.2 are "operation 0x..".
    pub fn name(op: u32) -> String {
        const NAMES: [&str; 41] = [
            "Create",
            "Create Key Pair",
            "Register",
            "Re-key",
            "Derive Key",
            "Certify",
            "Re-certify",
            "Locate",
            "Check",
            "Get",
            "Get Attributes",
            "Get Attribute List",
            "Add Attribute",
            "Modify Attribute",
            "Delete Attribute",
            "Obtain Lease",
            "Get Usage Allocation",
            "Activate",
            "Revoke",
            "Destroy",
            "Archive",
            "Recover",
            "Validate",
            "Query",
            "Cancel",
            "Poll",
            "Notify",
            "Put",
            "Re-key Key Pair",
            "Discover Versions",
            "Encrypt",
            "Decrypt",
            "Sign",
            "Signature Verify",
            "MAC",
            "MAC Verify",
            "RNG Retrieve",
            "RNG Seed",
            "Hash",
            "Create Split Key",
            "Join Split Key",
        ];
        let known = match op.checked_sub(1).and_then(|i| NAMES.get(i as usize)) {
            Some(n) => *n,
            None => return format!("operation {op:#x}"),
        };
        known.to_string()
    }
}

/// Result Status (9.1.3.2.28).
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const OPERATION_FAILED: u32 = 1;
}

/// Result Reason (9.1.3.2.29).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResultReason {
    ItemNotFound = 0x01,
    ResponseTooLarge = 0x02,
    AuthenticationNotSuccessful = 0x03,
    InvalidMessage = 0x04,
    OperationNotSupported = 0x05,
    MissingData = 0x06,
    InvalidField = 0x07,
    FeatureNotSupported = 0x08,
    CryptographicFailure = 0x0A,
    IllegalOperation = 0x0B,
    PermissionDenied = 0x0C,
    KeyFormatTypeNotSupported = 0x10,
    GeneralFailure = 0x100,
}

/// Object Type (9.1.3.2.12).
pub mod object_type {
    pub const PUBLIC_KEY: u32 = 0x03;
    pub const PRIVATE_KEY: u32 = 0x04;
}

/// Cryptographic Algorithm (9.1.3.2.13).
pub mod algorithm {
    pub const RSA: u32 = 0x04;
    pub const ECDSA: u32 = 0x06;
    /// KMIP 1.2's generic EC.
    pub const EC: u32 = 0x1A;
}

/// Recommended Curve (9.1.3.2.5).
pub mod curve {
    pub const P_256: u32 = 0x07;
    pub const P_384: u32 = 0x0A;
}

/// Key Format Type (9.1.3.2.3).
pub mod key_format {
    pub const RAW: u32 = 0x01;
    pub const OPAQUE: u32 = 0x02;
    pub const PKCS1: u32 = 0x03;
    pub const PKCS8: u32 = 0x04;
    pub const X509: u32 = 0x05;
    pub const TRANSPARENT_RSA_PUBLIC: u32 = 0x0B;
    pub const TRANSPARENT_ECDSA_PUBLIC: u32 = 0x0F;
    /// KMIP 1.3 and 2.x; same fields as Transparent ECDSA Public Key.
    pub const TRANSPARENT_EC_PUBLIC: u32 = 0x15;

    /// The format's name and code, for messages ("PKCS#8 (0x04)").
    pub fn name(format: u32) -> String {
        let known = match format {
            RAW => "Raw",
            OPAQUE => "Opaque",
            PKCS1 => "PKCS#1",
            PKCS8 => "PKCS#8",
            X509 => "X.509",
            0x06 => "EC Private Key",
            TRANSPARENT_RSA_PUBLIC => "Transparent RSA Public Key",
            TRANSPARENT_ECDSA_PUBLIC => "Transparent ECDSA Public Key",
            TRANSPARENT_EC_PUBLIC => "Transparent EC Public Key",
            _ => return format!("key format type 0x{format:02X}"),
        };
        format!("{known} (0x{format:02X})")
    }
}

/// Hashing Algorithm (9.1.3.2.16).
pub mod hashing {
    pub const SHA_256: u32 = 0x06;
    pub const SHA_384: u32 = 0x07;
    pub const SHA_512: u32 = 0x08;
}

/// Padding Method (9.1.3.2.15).
pub mod padding {
    pub const PKCS1_V1_5: u32 = 0x08;
    pub const PSS: u32 = 0x0A;
}

/// Digital Signature Algorithm (9.1.3.2.7, KMIP 1.2).
pub mod signature_algorithm {
    pub const SHA256_WITH_RSA: u32 = 0x05;
    pub const SHA384_WITH_RSA: u32 = 0x06;
    pub const SHA512_WITH_RSA: u32 = 0x07;
    pub const RSASSA_PSS: u32 = 0x08;
    pub const ECDSA_SHA256: u32 = 0x0E;
    pub const ECDSA_SHA384: u32 = 0x0F;
    pub const ECDSA_SHA512: u32 = 0x10;
}

/// Query Function (9.1.3.2.24).
pub mod query {
    pub const OPERATIONS: u32 = 0x01;
    pub const OBJECTS: u32 = 0x02;
    pub const SERVER_INFORMATION: u32 = 0x03;
}

/// Batch Error Continuation Option (9.1.3.2.30).
pub mod continuation {
    pub const CONTINUE: u32 = 0x01;
    pub const STOP: u32 = 0x02;
    pub const UNDO: u32 = 0x03;
}

/// Credential Type (9.1.3.2.1).
pub const CREDENTIAL_USERNAME_AND_PASSWORD: u32 = 0x01;

/// Name Type (9.1.3.2.11).
pub const NAME_TYPE_UNINTERPRETED_TEXT: u32 = 0x01;

/// Cryptographic Usage Mask bit for Sign (9.1.3.3.1).
pub const USAGE_SIGN: i32 = 0x01;

/// The protocol versions this relay speaks, preferred first.
pub const VERSIONS: [(i32, i32); 3] = [(1, 2), (1, 1), (1, 0)];
