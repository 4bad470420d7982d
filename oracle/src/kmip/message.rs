//! KMIP 1.2 request and response messages of one batch item, the only kind the
//! inventory (and [`super::query_operations`]) sends.
//!
//! A request is `Request Message { Request Header { Protocol Version 1.2, Maximum
//! Response Size, [Authentication], Batch Count 1 }, Batch Item { Operation, Request
//! Payload } }`. An answer is read from the first Batch Item of a Response Message: its
//! Result Status, Reason, Message and Payload. Refused as not an answer: another
//! top-level tag, no Batch Item, no Result Status.

use super::ttlv::{Item, Value};

pub mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const AUTHENTICATION: u32 = 0x42000C;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const CREDENTIAL: u32 = 0x420023;
    pub const CREDENTIAL_TYPE: u32 = 0x420024;
    pub const CREDENTIAL_VALUE: u32 = 0x420025;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const MAXIMUM_RESPONSE_SIZE: u32 = 0x420050;
    pub const MODULUS: u32 = 0x420052;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const PUBLIC_EXPONENT: u32 = 0x42006C;
    pub const PUBLIC_KEY: u32 = 0x42006D;
    pub const Q_STRING: u32 = 0x420072;
    pub const QUERY_FUNCTION: u32 = 0x420074;
    pub const RECOMMENDED_CURVE: u32 = 0x420075;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const SERVER_INFORMATION: u32 = 0x420088;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const USERNAME: u32 = 0x420099;
    pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
    pub const PASSWORD: u32 = 0x4200A1;
    pub const DATA: u32 = 0x4200C2;
    pub const DATA_LENGTH: u32 = 0x4200C4;
}

/// Operation codes the oracle's client sends.
pub mod operation {
    pub const LOCATE: u32 = 0x08;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
    pub const RNG_RETRIEVE: u32 = 0x25;
}

/// Query Function values.
pub mod query_function {
    pub const QUERY_OPERATIONS: u32 = 0x01;
    pub const QUERY_OBJECTS: u32 = 0x02;
    pub const QUERY_SERVER_INFORMATION: u32 = 0x03;
}

/// Object Type values.
pub mod object_type {
    pub const PUBLIC_KEY: u32 = 0x03;
    pub const PRIVATE_KEY: u32 = 0x04;
}

/// Result Reason values the inventory acts on.
pub mod reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    /// KMIP 2.x's Object Not Found; Cosmian KMS answers it to KMIP 1.2 requests too.
    pub const OBJECT_NOT_FOUND: u32 = 0x37;
}

/// The largest response accepted, announced to the server as Maximum Response Size.
pub const MAX_RESPONSE: usize = 1 << 20;

/// Username and password for the request header.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: Option<String>,
}

/// The username only: a password never reaches a log through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn int(tag: u32, v: i32) -> Item {
    Item::new(tag, Value::Integer(v))
}

fn enumeration(tag: u32, v: u32) -> Item {
    Item::new(tag, Value::Enumeration(v))
}

fn text(tag: u32, v: &str) -> Item {
    Item::new(tag, Value::TextString(v.to_string()))
}

/// A request for `operation` with the payload's items.
pub fn request(operation: u32, payload: Vec<Item>, credential: Option<&Credential>) -> Item {
    let mut header = vec![
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                int(tag::PROTOCOL_VERSION_MAJOR, 1),
                int(tag::PROTOCOL_VERSION_MINOR, 2),
            ],
        ),
        int(tag::MAXIMUM_RESPONSE_SIZE, MAX_RESPONSE as i32),
    ];
    if let Some(c) = credential {
        let mut value = vec![text(tag::USERNAME, &c.username)];
        if let Some(p) = &c.password {
            value.push(text(tag::PASSWORD, p));
        }
        // Credential Type 1: Username and Password.
        header.push(Item::structure(
            tag::AUTHENTICATION,
            vec![Item::structure(
                tag::CREDENTIAL,
                vec![
                    enumeration(tag::CREDENTIAL_TYPE, 1),
                    Item::structure(tag::CREDENTIAL_VALUE, value),
                ],
            )],
        ));
    }
    header.push(int(tag::BATCH_COUNT, 1));
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(tag::REQUEST_HEADER, header),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    enumeration(tag::OPERATION, operation),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// The Object Type attribute, for Locate.
pub fn object_type_attribute(object_type: u32) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![
            text(tag::ATTRIBUTE_NAME, "Object Type"),
            enumeration(tag::ATTRIBUTE_VALUE, object_type),
        ],
    )
}

/// The Name attribute (an uninterpreted text string), for Locate.
pub fn name_attribute(name: &str) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![
            text(tag::ATTRIBUTE_NAME, "Name"),
            Item::structure(
                tag::ATTRIBUTE_VALUE,
                vec![
                    text(tag::NAME_VALUE, name),
                    // Name Type 1: Uninterpreted Text String.
                    enumeration(tag::NAME_TYPE, 1),
                ],
            ),
        ],
    )
}

/// A Unique Identifier, for Get.
pub fn unique_identifier(uid: &str) -> Item {
    text(tag::UNIQUE_IDENTIFIER, uid)
}

/// An Attribute Name, for Get Attributes.
pub fn attribute_name(name: &str) -> Item {
    text(tag::ATTRIBUTE_NAME, name)
}

/// A Revocation Reason with its code alone, for Revoke.
pub fn revocation_reason(code: u32) -> Item {
    Item::structure(
        tag::REVOCATION_REASON,
        vec![enumeration(tag::REVOCATION_REASON_CODE, code)],
    )
}

/// A Data Length, for RNG Retrieve.
pub fn data_length(len: i32) -> Item {
    int(tag::DATA_LENGTH, len)
}

/// A Query Function, for Query.
pub fn query_function(function: u32) -> Item {
    enumeration(tag::QUERY_FUNCTION, function)
}

/// The Operation values in a Query response payload, in the server's order. Refused:
/// an Operation that is not an Enumeration.
pub fn operations(payload: &Item) -> Result<Vec<u32>, String> {
    payload
        .all(tag::OPERATION)
        .map(|op| {
            op.as_enum().ok_or_else(|| {
                format!(
                    "the Query response holds an Operation that is not an Enumeration: {:?}",
                    op.value
                )
            })
        })
        .collect()
}

/// The Object Type values in a Query response payload, in the server's order. Refused:
/// an Object Type that is not an Enumeration.
pub fn object_types(payload: &Item) -> Result<Vec<u32>, String> {
    payload
        .all(tag::OBJECT_TYPE)
        .map(|t| {
            t.as_enum().ok_or_else(|| {
                format!(
                    "the Query response holds an Object Type that is not an Enumeration: {:?}",
                    t.value
                )
            })
        })
        .collect()
}

/// The (major, minor) Protocol Versions in a Discover Versions response payload, in
/// the server's order (its preference first). Versions without both numbers are left
/// out.
pub fn protocol_versions(payload: &Item) -> Vec<(i32, i32)> {
    payload
        .all(tag::PROTOCOL_VERSION)
        .filter_map(|v| {
            Some((
                v.child(tag::PROTOCOL_VERSION_MAJOR)?.as_int()?,
                v.child(tag::PROTOCOL_VERSION_MINOR)?.as_int()?,
            ))
        })
        .collect()
}

/// The (Attribute Name, Attribute Value) pairs in a Get Attributes response payload,
/// in the server's order; an Attribute without a name or value is left out.
pub fn attributes(payload: &Item) -> Vec<(&str, &Item)> {
    payload
        .all(tag::ATTRIBUTE)
        .filter_map(|a| {
            Some((
                a.child(tag::ATTRIBUTE_NAME)?.as_text()?,
                a.child(tag::ATTRIBUTE_VALUE)?,
            ))
        })
        .collect()
}

/// What the server answered to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 0 is Success.
    pub status: u32,
    pub reason: Option<u32>,
    pub message: Option<String>,
    pub payload: Option<Item>,
}

impl Answer {
    /// The answer in a Response Message. Refused: another message, no Batch Item, a
    /// Batch Item without Result Status.
    pub fn read(response: &Item) -> Result<Answer, String> {
        if response.tag != tag::RESPONSE_MESSAGE {
            return Err(format!(
                "the server answered item {:06X}, not a Response Message",
                response.tag
            ));
        }
        let batch = response
            .child(tag::BATCH_ITEM)
            .ok_or("the Response Message holds no Batch Item")?;
        let status = batch
            .child(tag::RESULT_STATUS)
            .and_then(Item::as_enum)
            .ok_or("the Batch Item has no Result Status")?;
        Ok(Answer {
            status,
            reason: batch.child(tag::RESULT_REASON).and_then(Item::as_enum),
            message: batch
                .child(tag::RESULT_MESSAGE)
                .and_then(Item::as_text)
                .map(str::to_string),
            payload: batch.child(tag::RESPONSE_PAYLOAD).cloned(),
        })
    }

    /// Whether the reason says the object does not exist (KMIP 1.x or 2.x code).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.reason,
            Some(reason::ITEM_NOT_FOUND | reason::OBJECT_NOT_FOUND)
        )
    }

    /// "status 0x1, reason 0x1 (message)", for error messages.
    pub fn describe(&self) -> String {
        let mut out = format!("status {:#x}", self.status);
        if let Some(r) = self.reason {
            out.push_str(&format!(", reason {r:#x}"));
        }
        if let Some(m) = &self.message {
            out.push_str(&format!(" ({m})"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_the_kmip_1_2_header_and_one_batch_item() {
        let msg = request(
            operation::GET,
            vec![unique_identifier("42")],
            Some(&Credential {
                username: "token".into(),
                password: Some("1234".into()),
            }),
        );
        assert_eq!(msg.tag, tag::REQUEST_MESSAGE);
        let header = msg.child(tag::REQUEST_HEADER).unwrap();
        let version = header.child(tag::PROTOCOL_VERSION).unwrap();
        assert_eq!(
            version.child(tag::PROTOCOL_VERSION_MAJOR).map(|i| &i.value),
            Some(&Value::Integer(1))
        );
        assert_eq!(
            version.child(tag::PROTOCOL_VERSION_MINOR).map(|i| &i.value),
            Some(&Value::Integer(2))
        );
        let credential = header
            .child(tag::AUTHENTICATION)
            .and_then(|a| a.child(tag::CREDENTIAL))
            .and_then(|c| c.child(tag::CREDENTIAL_VALUE))
            .unwrap();
        assert_eq!(
            credential.child(tag::USERNAME).and_then(Item::as_text),
            Some("token")
        );
        assert_eq!(
            credential.child(tag::PASSWORD).and_then(Item::as_text),
            Some("1234")
        );
        let batch = msg.child(tag::BATCH_ITEM).unwrap();
        assert_eq!(
            batch.child(tag::OPERATION).and_then(Item::as_enum),
            Some(operation::GET)
        );
        // Header fields in KMIP 1.2's order: version, size, authentication, count.
        let order: Vec<u32> = match &header.value {
            Value::Structure(items) => items.iter().map(|i| i.tag).collect(),
            _ => vec![],
        };
        assert_eq!(
            order,
            [
                tag::PROTOCOL_VERSION,
                tag::MAXIMUM_RESPONSE_SIZE,
                tag::AUTHENTICATION,
                tag::BATCH_COUNT
            ]
        );
    }

    #[test]
    fn a_get_request_has_the_bytes_the_specification_lays_out() {
        let expected = [
            "42007801 00000080",                   // Request Message, 128 bytes
            "42007701 00000048",                   // Request Header, 72 bytes
            "42006901 00000020",                   // Protocol Version
            "42006A02 00000004 00000001 00000000", // Major 1
            "42006B02 00000004 00000002 00000000", // Minor 2
            "42005002 00000004 00100000 00000000", // Maximum Response Size 1 MiB
            "42000D02 00000004 00000001 00000000", // Batch Count 1
            "42000F01 00000028",                   // Batch Item, 40 bytes
            "42005C05 00000004 0000000A 00000000", // Operation Get
            "42007901 00000010",                   // Request Payload, 16 bytes
            "42009407 00000002 3432000000000000",  // Unique Identifier "42"
        ]
        .concat()
        .replace(' ', "");
        let msg = request(operation::GET, vec![unique_identifier("42")], None);
        assert_eq!(hex::encode_upper(msg.encode()), expected);
    }

    #[test]
    fn a_query_operations_request_has_the_bytes_the_specification_lays_out() {
        let expected = [
            "42007801 00000080",                   // Request Message, 128 bytes
            "42007701 00000048",                   // Request Header, 72 bytes
            "42006901 00000020",                   // Protocol Version
            "42006A02 00000004 00000001 00000000", // Major 1
            "42006B02 00000004 00000002 00000000", // Minor 2
            "42005002 00000004 00100000 00000000", // Maximum Response Size 1 MiB
            "42000D02 00000004 00000001 00000000", // Batch Count 1
            "42000F01 00000028",                   // Batch Item, 40 bytes
            "42005C05 00000004 00000018 00000000", // Operation Query
            "42007901 00000010",                   // Request Payload, 16 bytes
            "42007405 00000004 00000001 00000000", // Query Function Query Operations
        ]
        .concat()
        .replace(' ', "");
        let msg = request(
            operation::QUERY,
            vec![query_function(query_function::QUERY_OPERATIONS)],
            None,
        );
        assert_eq!(hex::encode_upper(msg.encode()), expected);
    }

    #[test]
    fn a_credential_debugs_without_its_password() {
        let c = Credential {
            username: "u".into(),
            password: Some("hunter2".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn without_a_credential_there_is_no_authentication() {
        let msg = request(operation::LOCATE, vec![], None);
        let header = msg.child(tag::REQUEST_HEADER).unwrap();
        assert!(header.child(tag::AUTHENTICATION).is_none());
    }

    fn response(batch: Vec<Item>) -> Item {
        Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![Item::structure(tag::BATCH_ITEM, batch)],
        )
    }

    #[test]
    fn an_answer_is_read_from_the_batch_item() {
        let answer = Answer::read(&response(vec![
            enumeration(tag::OPERATION, operation::LOCATE),
            enumeration(tag::RESULT_STATUS, 1),
            enumeration(tag::RESULT_REASON, reason::OBJECT_NOT_FOUND),
            text(tag::RESULT_MESSAGE, "no such object"),
        ]))
        .unwrap();
        assert!(answer.is_not_found());
        assert_eq!(
            answer.describe(),
            "status 0x1, reason 0x37 (no such object)"
        );
        assert_eq!(answer.payload, None);
    }

    #[test]
    fn what_is_not_an_answer_is_refused() {
        let not_a_response = Item::structure(tag::REQUEST_MESSAGE, vec![]);
        assert!(Answer::read(&not_a_response).is_err());
        assert!(Answer::read(&Item::structure(tag::RESPONSE_MESSAGE, vec![])).is_err());
        assert!(Answer::read(&response(vec![])).is_err());
    }
}
