//! The relay's own request and response types, read from and written to the TTLV tree.
//!
//! Contract:
//!
//! - [`Request::from_item`] takes a decoded tree and accepts a Request Message with a
//!   Request Header (Protocol Version and Batch Count required) and one or more Batch
//!   Items (each with an Operation). Fields are found by tag, in any order; unknown
//!   fields are ignored. Refused (as an Invalid Message, with what was wrong): another
//!   top-level tag, a missing or mistyped required field, no batch item, a Batch Count
//!   that is not the number of batch items.
//! - A [`Response`] always has a header (Protocol Version, Time Stamp, Batch Count) and
//!   one batch item per request item, each echoing the Operation and the Unique Batch
//!   Item ID when the request had them, in the order the KMIP specification gives
//!   (which kmip-protocol's positional decoder relies on).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kmip::{status, tag, ResultReason};
use crate::ttlv::{Item, Value};

/// A failure of one operation (or of the whole message), as KMIP reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmipError {
    pub reason: ResultReason,
    pub message: String,
}

impl KmipError {
    pub fn new(reason: ResultReason, message: impl Into<String>) -> Self {
        KmipError {
            reason,
            message: message.into(),
        }
    }
    pub fn invalid_message(m: impl Into<String>) -> Self {
        Self::new(ResultReason::InvalidMessage, m)
    }
    pub fn invalid_field(m: impl Into<String>) -> Self {
        Self::new(ResultReason::InvalidField, m)
    }
    pub fn missing(m: impl Into<String>) -> Self {
        Self::new(ResultReason::MissingData, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ResultReason::ItemNotFound, m)
    }
    pub fn denied(m: impl Into<String>) -> Self {
        Self::new(ResultReason::PermissionDenied, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(ResultReason::OperationNotSupported, m)
    }
    pub fn general(m: impl Into<String>) -> Self {
        Self::new(ResultReason::GeneralFailure, m)
    }
}

impl std::fmt::Display for KmipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.message)
    }
}

/// Typed access to fields of a request structure; every failure is a [`KmipError`]
/// naming the field.
pub trait Fields {
    /// The child with `tag`, or Missing Data.
    fn required(&self, tag: u32, what: &str) -> Result<&Item, KmipError>;
    /// The Enumeration child with `tag`, if present.
    fn opt_enum(&self, tag: u32, what: &str) -> Result<Option<u32>, KmipError>;
    /// The Integer child with `tag`, if present.
    fn opt_int(&self, tag: u32, what: &str) -> Result<Option<i32>, KmipError>;
    /// The Text String child with `tag`, if present.
    fn opt_text(&self, tag: u32, what: &str) -> Result<Option<&str>, KmipError>;
    /// The Byte String child with `tag`, if present.
    fn opt_bytes(&self, tag: u32, what: &str) -> Result<Option<&[u8]>, KmipError>;
}

fn wrong_type(item: &Item, what: &str, expected: &str) -> KmipError {
    KmipError::invalid_field(format!(
        "{what} must be {expected}, not {}",
        item.type_name()
    ))
}

impl Fields for Item {
    fn required(&self, tag: u32, what: &str) -> Result<&Item, KmipError> {
        self.child(tag)
            .ok_or_else(|| KmipError::missing(format!("{what} is required")))
    }
    fn opt_enum(&self, tag: u32, what: &str) -> Result<Option<u32>, KmipError> {
        match self.child(tag) {
            None => Ok(None),
            Some(Item {
                value: Value::Enumeration(v),
                ..
            }) => Ok(Some(*v)),
            Some(other) => Err(wrong_type(other, what, "an Enumeration")),
        }
    }
    fn opt_int(&self, tag: u32, what: &str) -> Result<Option<i32>, KmipError> {
        match self.child(tag) {
            None => Ok(None),
            Some(Item {
                value: Value::Integer(v),
                ..
            }) => Ok(Some(*v)),
            Some(other) => Err(wrong_type(other, what, "an Integer")),
        }
    }
    fn opt_text(&self, tag: u32, what: &str) -> Result<Option<&str>, KmipError> {
        match self.child(tag) {
            None => Ok(None),
            Some(Item {
                value: Value::TextString(v),
                ..
            }) => Ok(Some(v)),
            Some(other) => Err(wrong_type(other, what, "a Text String")),
        }
    }
    fn opt_bytes(&self, tag: u32, what: &str) -> Result<Option<&[u8]>, KmipError> {
        match self.child(tag) {
            None => Ok(None),
            Some(Item {
                value: Value::ByteString(v),
                ..
            }) => Ok(Some(v)),
            Some(other) => Err(wrong_type(other, what, "a Byte String")),
        }
    }
}

/// A KMIP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl Version {
    pub const HIGHEST: Version = Version { major: 1, minor: 2 };

    pub fn from_item(item: &Item) -> Result<Self, KmipError> {
        if !matches!(item.value, Value::Structure(_)) {
            return Err(wrong_type(item, "Protocol Version", "a Structure"));
        }
        let major = item
            .opt_int(tag::PROTOCOL_VERSION_MAJOR, "Protocol Version Major")?
            .ok_or_else(|| KmipError::missing("Protocol Version Major is required"))?;
        let minor = item
            .opt_int(tag::PROTOCOL_VERSION_MINOR, "Protocol Version Minor")?
            .ok_or_else(|| KmipError::missing("Protocol Version Minor is required"))?;
        Ok(Version { major, minor })
    }

    pub fn to_item(self) -> Item {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::integer(tag::PROTOCOL_VERSION_MAJOR, self.major),
                Item::integer(tag::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }

    /// Whether the relay speaks this version.
    pub fn supported(self) -> bool {
        crate::kmip::VERSIONS.contains(&(self.major, self.minor))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Username and password from the request header's Authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The request header fields the relay uses.
#[derive(Clone, Debug)]
pub struct RequestHeader {
    pub version: Version,
    pub maximum_response_size: Option<i32>,
    /// `Err` when an Authentication is present but not one the relay reads.
    pub credential: Option<Result<Credential, KmipError>>,
    pub continuation: u32,
    pub batch_count: i32,
}

/// One batch item of a request.
#[derive(Clone, Debug)]
pub struct RequestItem {
    pub operation: u32,
    pub batch_item_id: Option<Vec<u8>>,
    pub payload: Option<Item>,
}

/// A decoded Request Message.
#[derive(Clone, Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub items: Vec<RequestItem>,
}

fn read_credential(auth: &Item) -> Result<Credential, KmipError> {
    let cred = auth.required(tag::CREDENTIAL, "Credential")?;
    let ctype = cred
        .opt_enum(tag::CREDENTIAL_TYPE, "Credential Type")?
        .ok_or_else(|| KmipError::missing("Credential Type is required"))?;
    if ctype != crate::kmip::CREDENTIAL_USERNAME_AND_PASSWORD {
        return Err(KmipError::new(
            ResultReason::PermissionDenied,
            format!("credential type {ctype:#x} is not supported: only Username and Password"),
        ));
    }
    let value = cred.required(tag::CREDENTIAL_VALUE, "Credential Value")?;
    let username = value
        .opt_text(tag::USERNAME, "Username")?
        .ok_or_else(|| KmipError::missing("Username is required"))?
        .to_string();
    let password = value
        .opt_text(tag::PASSWORD, "Password")?
        .map(str::to_string);
    Ok(Credential { username, password })
}

impl Request {
    /// Reads a Request Message. See the module documentation for what is refused.
    pub fn from_item(msg: &Item) -> Result<Request, KmipError> {
        if msg.tag != tag::REQUEST_MESSAGE || !matches!(msg.value, Value::Structure(_)) {
            return Err(KmipError::invalid_message(format!(
                "expected a Request Message structure (tag 420078), got tag {:06X} ({})",
                msg.tag,
                msg.type_name()
            )));
        }
        let invalid = |e: KmipError| KmipError::invalid_message(e.message);
        let h = msg
            .required(tag::REQUEST_HEADER, "Request Header")
            .map_err(invalid)?;
        let version = Version::from_item(
            h.required(tag::PROTOCOL_VERSION, "Protocol Version")
                .map_err(invalid)?,
        )
        .map_err(invalid)?;
        let batch_count = h
            .opt_int(tag::BATCH_COUNT, "Batch Count")
            .map_err(invalid)?
            .ok_or_else(|| KmipError::invalid_message("Batch Count is required"))?;
        let maximum_response_size = h
            .opt_int(tag::MAXIMUM_RESPONSE_SIZE, "Maximum Response Size")
            .map_err(invalid)?;
        let continuation = h
            .opt_enum(
                tag::BATCH_ERROR_CONTINUATION_OPTION,
                "Batch Error Continuation Option",
            )
            .map_err(invalid)?
            .unwrap_or(crate::kmip::continuation::STOP);
        let credential = h.child(tag::AUTHENTICATION).map(read_credential);
        let mut items = Vec::new();
        for bi in msg.all(tag::BATCH_ITEM) {
            let operation = bi
                .opt_enum(tag::OPERATION, "Operation")
                .map_err(invalid)?
                .ok_or_else(|| KmipError::invalid_message("a Batch Item has no Operation"))?;
            let batch_item_id = bi
                .opt_bytes(tag::UNIQUE_BATCH_ITEM_ID, "Unique Batch Item ID")
                .map_err(invalid)?
                .map(<[u8]>::to_vec);
            let payload = bi.child(tag::REQUEST_PAYLOAD).cloned();
            items.push(RequestItem {
                operation,
                batch_item_id,
                payload,
            });
        }
        if items.is_empty() {
            return Err(KmipError::invalid_message("the request has no Batch Item"));
        }
        if usize::try_from(batch_count).ok() != Some(items.len()) {
            return Err(KmipError::invalid_message(format!(
                "Batch Count is {batch_count} but the request has {} batch items",
                items.len()
            )));
        }
        Ok(Request {
            header: RequestHeader {
                version,
                maximum_response_size,
                credential,
                continuation,
                batch_count,
            },
            items,
        })
    }
}

/// One batch item of a response.
#[derive(Clone, Debug)]
pub struct ResponseItem {
    pub operation: Option<u32>,
    pub batch_item_id: Option<Vec<u8>>,
    pub result: Result<Option<Item>, KmipError>,
}

impl ResponseItem {
    fn to_item(&self) -> Item {
        let mut fields = Vec::new();
        if let Some(op) = self.operation {
            fields.push(Item::enumeration(tag::OPERATION, op));
        }
        if let Some(id) = &self.batch_item_id {
            fields.push(Item::bytes(tag::UNIQUE_BATCH_ITEM_ID, id.clone()));
        }
        match &self.result {
            Ok(payload) => {
                fields.push(Item::enumeration(tag::RESULT_STATUS, status::SUCCESS));
                if let Some(p) = payload {
                    fields.push(p.clone());
                }
            }
            Err(e) => {
                fields.push(Item::enumeration(
                    tag::RESULT_STATUS,
                    status::OPERATION_FAILED,
                ));
                fields.push(Item::enumeration(tag::RESULT_REASON, e.reason as u32));
                fields.push(Item::text(tag::RESULT_MESSAGE, e.message.clone()));
            }
        }
        Item::structure(tag::BATCH_ITEM, fields)
    }
}

/// A Response Message.
#[derive(Clone, Debug)]
pub struct Response {
    pub version: Version,
    pub items: Vec<ResponseItem>,
}

impl Response {
    /// A response with one failed item and no operation: for messages that could not
    /// be read at all.
    pub fn failure(version: Version, error: KmipError) -> Self {
        Response {
            version,
            items: vec![ResponseItem {
                operation: None,
                batch_item_id: None,
                result: Err(error),
            }],
        }
    }

    pub fn to_item(&self) -> Item {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut fields = vec![Item::structure(
            tag::RESPONSE_HEADER,
            vec![
                self.version.to_item(),
                Item::date_time(tag::TIME_STAMP, now),
                Item::integer(tag::BATCH_COUNT, self.items.len() as i32),
            ],
        )];
        fields.extend(self.items.iter().map(ResponseItem::to_item));
        Item::structure(tag::RESPONSE_MESSAGE, fields)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::ttlv::encode(&self.to_item())
    }
}

/// A response payload structure from its fields.
pub fn payload(fields: Vec<Item>) -> Item {
    Item::structure(tag::RESPONSE_PAYLOAD, fields)
}
