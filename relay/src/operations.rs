//! The dispatcher: one request frame in, one response frame out, one KMIP operation per
//! batch item mapped onto PKCS#11 calls.
//!
//! Contract of [`Dispatcher::handle`], for any bytes (it never panics on input):
//!
//! - Bytes that are not one TTLV item, or not a readable Request Message: one failed
//!   batch item, Invalid Message, with what was wrong.
//! - A protocol version other than 1.0, 1.1 or 1.2: every item but Discover Versions
//!   fails with Invalid Message (the response speaks 1.2), so a client can still
//!   negotiate.
//! - In credential mode `token`, every item but Discover Versions needs a valid
//!   credential (see [`Token::authenticate`]); a bad one is Permission Denied.
//! - Each item is answered on its own: its error (Item Not Found for unknown or
//!   malformed identifiers, Invalid Field for wrong-type identifiers and bad values,
//!   Missing Data, Permission Denied, Operation Not Supported for operations this relay
//!   or this module cannot do, ...) does not touch other items. With the Batch Error
//!   Continuation Option Stop (the default; Undo is treated as Stop) the items after a
//!   failure are answered as failed and not run; with Continue they all run.
//! - An item without a Unique Identifier uses the ID Placeholder: the private key of the
//!   last Create Key Pair in the batch, or the single result of the last Locate.
//! - More batch items than `[limits] max_batch_items`: one failed item, Invalid Message,
//!   naming the limit; nothing runs.
//! - A response larger than the request's Maximum Response Size (or the configured
//!   message limit) has every successful item replaced by Response Too Large; if the
//!   failures alone still exceed the message limit, the response is one Response Too
//!   Large item, so no answer, error or not, is larger than `max_message_size`.
//!
//! Query's Server Information names the PKCS#11 module and the token's manufacturer,
//! model, serial and slot only when clients are authenticated (see
//! [`Dispatcher::authenticated_clients`]); otherwise only the token label.
//!
//! Get answers public keys only (private keys are Permission Denied, whatever the
//! format), in the formats of [`crate::formats`]: with no Key Format Type named, RSA as
//! PKCS#1 and EC as Raw holding a DER SubjectPublicKeyInfo; a named format exactly, or
//! Key Format Type Not Supported naming the formats offered.
//!
//! With `[testing] mimic` the dispatcher follows the mimicked server instead where
//! [`crate::mimic`] says so (operations, whole-request refusals, Create Key Pair, Get
//! formats, Sign, identifier spelling).
//!
//! PKCS#11 has no lifecycle states: keys are usable from creation, Activate checks that
//! the object exists, Revoke clears CKA_SIGN on a private key (so it cannot sign again,
//! across restarts) and checks that a public key exists.

use std::net::IpAddr;
use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use sha2::Digest;

use crate::der;
use crate::formats;
use crate::identifiers::{Half, ObjectId, Style};
use crate::kmip::{self, operation as op, tag, ResultReason};
use crate::message::{
    payload, Fields, KmipError, Request, RequestItem, Response, ResponseItem, Version,
};
use crate::mimic::{self, Mimic};
use crate::pool::Failure;
use crate::token::{Curve, KeySpec, SigningKey, Token};
use crate::ttlv::{self, Item, Value};

/// The log target of the debug line each successfully run operation writes ("RNG
/// Retrieve succeeded", ...): `log_level = "warn,kmip2pkcs11::requests=debug"` logs
/// the requests alone. Sign writes its line under [`SIGN_LOG`], within this target.
pub const REQUEST_LOG: &str = "kmip2pkcs11::requests";

/// The log target of Sign's line ("Sign succeeded"): under [`REQUEST_LOG`], so
/// `kmip2pkcs11::requests=debug` logs it too, and `kmip2pkcs11::requests::sign=info`
/// then leaves out the most frequent request (a line costs a sign about a tenth of its
/// time here; the harness logs requests that way).
pub const SIGN_LOG: &str = "kmip2pkcs11::requests::sign";

/// Largest RNG Retrieve answered.
pub const MAX_RANDOM: i32 = 4096;

/// Turns request frames into response frames against one token.
pub struct Dispatcher {
    token: Arc<Token>,
    max_message: usize,
    /// Operations left out of Query and refused (`[testing] withhold_operations`).
    withheld: Vec<u32>,
    /// The released server the relay stands in for (`[testing] mimic`), if any.
    mimic: Option<Mimic>,
    /// Whether clients are authenticated, so Query may name the module and the token.
    authenticated: bool,
    /// The most batch items one request may carry.
    max_batch_items: usize,
}

/// Name Value of a Name attribute value structure.
pub(crate) fn name_value(value: &Item) -> Result<String, KmipError> {
    match &value.value {
        Value::Structure(_) => Ok(value
            .opt_text(tag::NAME_VALUE, "Name Value")?
            .ok_or_else(|| KmipError::missing("Name Value is required"))?
            .to_string()),
        // Some clients send the bare text.
        Value::TextString(t) => Ok(t.clone()),
        _ => Err(KmipError::invalid_field("a Name must be a structure")),
    }
}

fn name_item(text: &str) -> Item {
    Item::structure(
        tag::ATTRIBUTE_VALUE,
        vec![
            Item::text(tag::NAME_VALUE, text),
            Item::enumeration(tag::NAME_TYPE, kmip::NAME_TYPE_UNINTERPRETED_TEXT),
        ],
    )
}

/// (Attribute Name, Attribute Index, Attribute Value) of an Attribute structure.
pub(crate) fn attribute(a: &Item) -> Result<(&str, Option<i32>, &Item), KmipError> {
    let name = a
        .opt_text(tag::ATTRIBUTE_NAME, "Attribute Name")?
        .ok_or_else(|| KmipError::missing("Attribute Name is required"))?;
    let index = a.opt_int(tag::ATTRIBUTE_INDEX, "Attribute Index")?;
    let value = a.required(tag::ATTRIBUTE_VALUE, "Attribute Value")?;
    Ok((name, index, value))
}

pub(crate) fn enum_value(v: &Item, what: &str) -> Result<u32, KmipError> {
    match v.value {
        Value::Enumeration(e) => Ok(e),
        _ => Err(KmipError::invalid_field(format!(
            "{what} must be an Enumeration"
        ))),
    }
}

pub(crate) fn int_value(v: &Item, what: &str) -> Result<i32, KmipError> {
    match v.value {
        Value::Integer(i) => Ok(i),
        _ => Err(KmipError::invalid_field(format!(
            "{what} must be an Integer"
        ))),
    }
}

/// What Create Key Pair's templates ask for.
#[derive(Default)]
struct KeyRequest {
    algorithm: Option<u32>,
    length: Option<i32>,
    curve: Option<u32>,
    private_usage: Option<i32>,
    private_name: Option<String>,
    public_name: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Common,
    Private,
    Public,
}

impl KeyRequest {
    fn read(&mut self, template: &Item, which: Which) -> Result<(), KmipError> {
        for a in template.all(tag::ATTRIBUTE) {
            let (name, _, value) = attribute(a)?;
            match name {
                "Cryptographic Algorithm" => self.algorithm = Some(enum_value(value, name)?),
                "Cryptographic Length" => self.length = Some(int_value(value, name)?),
                "Cryptographic Domain Parameters" => {
                    if let Some(c) = value.opt_enum(tag::RECOMMENDED_CURVE, "Recommended Curve")? {
                        self.curve = Some(c);
                    }
                }
                "Recommended Curve" => self.curve = Some(enum_value(value, name)?),
                "Cryptographic Usage Mask" => {
                    let mask = int_value(value, name)?;
                    if which != Which::Public {
                        self.private_usage = Some(mask);
                    }
                }
                "Name" => {
                    let n = name_value(value)?;
                    match which {
                        Which::Common => {
                            self.private_name = Some(n.clone());
                            self.public_name = Some(n);
                        }
                        Which::Private => self.private_name = Some(n),
                        Which::Public => self.public_name = Some(n),
                    }
                }
                other => tracing::debug!("Create Key Pair: attribute {other:?} ignored"),
            }
        }
        Ok(())
    }

    fn spec(&self) -> Result<KeySpec, KmipError> {
        match self.algorithm {
            Some(kmip::algorithm::RSA) => {
                let bits = self
                    .length
                    .ok_or_else(|| KmipError::missing("RSA needs a Cryptographic Length"))?;
                if !(2048..=4096).contains(&bits) || bits % 8 != 0 {
                    return Err(KmipError::invalid_field(format!(
                        "RSA length {bits} is not supported: 2048 to 4096 bits"
                    )));
                }
                Ok(KeySpec::Rsa(bits as u32))
            }
            Some(kmip::algorithm::ECDSA | kmip::algorithm::EC) => {
                let curve = match (self.curve, self.length) {
                    (Some(kmip::curve::P_256), _) | (None, Some(256)) => Curve::P256,
                    (Some(kmip::curve::P_384), _) | (None, Some(384)) => Curve::P384,
                    (Some(c), _) => {
                        return Err(KmipError::invalid_field(format!(
                            "recommended curve {c:#x} is not supported: P-256 or P-384"
                        )))
                    }
                    (None, l) => {
                        return Err(KmipError::invalid_field(format!(
                            "EC keys need a Recommended Curve or a Cryptographic Length of 256 or 384 (got {l:?})"
                        )))
                    }
                };
                Ok(KeySpec::Ec(curve))
            }
            Some(a) => Err(KmipError::invalid_field(format!(
                "cryptographic algorithm {a:#x} is not supported: RSA or EC/ECDSA"
            ))),
            None => Err(KmipError::missing("Cryptographic Algorithm is required")),
        }
    }
}

/// A signature scheme resolved from Cryptographic Parameters and the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    RsaPkcs1(u32),
    RsaPss(u32),
    Ecdsa(u32),
}

fn check_hash(h: u32) -> Result<u32, KmipError> {
    match h {
        kmip::hashing::SHA_256 | kmip::hashing::SHA_384 | kmip::hashing::SHA_512 => Ok(h),
        other => Err(KmipError::invalid_field(format!(
            "hashing algorithm {other:#x} is not supported: SHA-256, SHA-384 or SHA-512"
        ))),
    }
}

fn scheme(params: Option<&Item>, key: SigningKey) -> Result<Scheme, KmipError> {
    use kmip::signature_algorithm as dsa;
    let (dsa_v, padding, hash, alg) = match params {
        None => (None, None, None, None),
        Some(p) => (
            p.opt_enum(
                tag::DIGITAL_SIGNATURE_ALGORITHM,
                "Digital Signature Algorithm",
            )?,
            p.opt_enum(tag::PADDING_METHOD, "Padding Method")?,
            p.opt_enum(tag::HASHING_ALGORITHM, "Hashing Algorithm")?,
            p.opt_enum(tag::CRYPTOGRAPHIC_ALGORITHM, "Cryptographic Algorithm")?,
        ),
    };
    let hash = hash.map(check_hash).transpose()?;
    let ec_default = |c: Curve| match c {
        Curve::P256 => kmip::hashing::SHA_256,
        Curve::P384 => kmip::hashing::SHA_384,
    };
    let s = if let Some(d) = dsa_v {
        match d {
            dsa::SHA256_WITH_RSA => Scheme::RsaPkcs1(kmip::hashing::SHA_256),
            dsa::SHA384_WITH_RSA => Scheme::RsaPkcs1(kmip::hashing::SHA_384),
            dsa::SHA512_WITH_RSA => Scheme::RsaPkcs1(kmip::hashing::SHA_512),
            dsa::RSASSA_PSS => Scheme::RsaPss(hash.unwrap_or(kmip::hashing::SHA_256)),
            dsa::ECDSA_SHA256 => Scheme::Ecdsa(kmip::hashing::SHA_256),
            dsa::ECDSA_SHA384 => Scheme::Ecdsa(kmip::hashing::SHA_384),
            dsa::ECDSA_SHA512 => Scheme::Ecdsa(kmip::hashing::SHA_512),
            other => {
                return Err(KmipError::invalid_field(format!(
                    "digital signature algorithm {other:#x} is not supported"
                )))
            }
        }
    } else if let Some(p) = padding {
        match p {
            kmip::padding::PKCS1_V1_5 => Scheme::RsaPkcs1(hash.unwrap_or(kmip::hashing::SHA_256)),
            kmip::padding::PSS => Scheme::RsaPss(hash.unwrap_or(kmip::hashing::SHA_256)),
            other => {
                return Err(KmipError::invalid_field(format!(
                    "padding method {other:#x} is not supported for Sign: PKCS1 v1.5 or PSS"
                )))
            }
        }
    } else {
        match (alg, key) {
            (Some(kmip::algorithm::RSA), _) | (None, SigningKey::Rsa { .. }) => {
                Scheme::RsaPkcs1(hash.unwrap_or(kmip::hashing::SHA_256))
            }
            (Some(kmip::algorithm::ECDSA | kmip::algorithm::EC), SigningKey::Ec(c))
            | (None, SigningKey::Ec(c)) => Scheme::Ecdsa(hash.unwrap_or(ec_default(c))),
            (Some(kmip::algorithm::ECDSA | kmip::algorithm::EC), _) => {
                Scheme::Ecdsa(hash.unwrap_or(kmip::hashing::SHA_256))
            }
            (Some(a), _) => {
                return Err(KmipError::invalid_field(format!(
                    "cryptographic algorithm {a:#x} cannot sign here"
                )))
            }
        }
    };
    match (s, key) {
        (Scheme::RsaPkcs1(_) | Scheme::RsaPss(_), SigningKey::Rsa { .. })
        | (Scheme::Ecdsa(_), SigningKey::Ec(_)) => Ok(s),
        (s, k) => Err(KmipError::invalid_field(format!(
            "{s:?} does not fit the key ({k:?})"
        ))),
    }
}

/// The PKCS#11 mechanism for a scheme, and whether the data is hashed here first.
fn mechanism(s: Scheme) -> (Mechanism<'static>, MechanismType) {
    use kmip::hashing::*;
    let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams {
        hash_alg,
        mgf,
        s_len: s_len.into(),
    };
    match s {
        Scheme::RsaPkcs1(SHA_384) => (Mechanism::Sha384RsaPkcs, MechanismType::SHA384_RSA_PKCS),
        Scheme::RsaPkcs1(SHA_512) => (Mechanism::Sha512RsaPkcs, MechanismType::SHA512_RSA_PKCS),
        Scheme::RsaPkcs1(_) => (Mechanism::Sha256RsaPkcs, MechanismType::SHA256_RSA_PKCS),
        Scheme::RsaPss(SHA_384) => (
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48)),
            MechanismType::SHA384_RSA_PKCS_PSS,
        ),
        Scheme::RsaPss(SHA_512) => (
            Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64)),
            MechanismType::SHA512_RSA_PKCS_PSS,
        ),
        Scheme::RsaPss(_) => (
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32)),
            MechanismType::SHA256_RSA_PKCS_PSS,
        ),
        Scheme::Ecdsa(_) => (Mechanism::Ecdsa, MechanismType::ECDSA),
    }
}

/// PSS as the bare CKM_RSA_PKCS_PSS over a digest computed here, with the parameters
/// of the hash-and-sign mechanism `mech`: for modules that offer only that (p11-kit
/// 0.24's RPC carries no CKM_SHA*_RSA_PKCS_PSS).
fn bare_pss(mech: &Mechanism<'static>) -> Option<Mechanism<'static>> {
    match mech {
        Mechanism::Sha256RsaPkcsPss(p)
        | Mechanism::Sha384RsaPkcsPss(p)
        | Mechanism::Sha512RsaPkcsPss(p) => Some(Mechanism::RsaPkcsPss(*p)),
        _ => None,
    }
}

fn digest(hash: u32, data: &[u8]) -> Vec<u8> {
    match hash {
        kmip::hashing::SHA_384 => sha2::Sha384::digest(data).to_vec(),
        kmip::hashing::SHA_512 => sha2::Sha512::digest(data).to_vec(),
        _ => sha2::Sha256::digest(data).to_vec(),
    }
}

impl Dispatcher {
    pub fn new(token: Arc<Token>, max_message: usize) -> Self {
        Dispatcher {
            token,
            max_message,
            withheld: Vec::new(),
            mimic: None,
            authenticated: false,
            max_batch_items: crate::config::Limits::default().max_batch_items,
        }
    }

    /// Refuses requests with more than `max` batch items (`[limits] max_batch_items`).
    pub fn max_batch_items(mut self, max: usize) -> Self {
        self.max_batch_items = max;
        self
    }

    /// Says whether every client is authenticated (client certificates or credentials).
    /// Only then does Query's Server Information name the PKCS#11 module and the
    /// token's model and serial: an unknown peer learns the vendor string and the token
    /// label, nothing that helps it pick an attack on the module.
    pub fn authenticated_clients(mut self, yes: bool) -> Self {
        self.authenticated = yes;
        self
    }

    /// Behaves like a released server (for testing clients; see [`crate::mimic`]).
    pub fn mimicking(mut self, mimic: Option<Mimic>) -> Self {
        self.mimic = mimic;
        self
    }

    /// How this relay spells Unique Identifiers.
    fn style(&self) -> Style {
        self.mimic.map_or(Style::Relay, Mimic::style)
    }

    /// Pretends not to have `ops`: they are left out of Query and answered Operation
    /// Not Supported (for testing clients; see `[testing]` in the configuration).
    pub fn withholding(mut self, ops: Vec<u32>) -> Self {
        self.withheld = ops;
        self
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// One frame in, one frame out. See the module documentation.
    pub fn handle(&self, frame: &[u8]) -> Vec<u8> {
        self.handle_from(frame, None)
    }

    /// [`Dispatcher::handle`] for a client at a known address (for the login
    /// throttle's per-client delays).
    pub fn handle_from(&self, frame: &[u8], client: Option<IpAddr>) -> Vec<u8> {
        let response = match ttlv::decode(frame) {
            Err(e) => {
                Response::failure(Version::HIGHEST, KmipError::invalid_message(e.to_string()))
            }
            Ok(item) => match Request::from_item(&item) {
                Err(e) => Response::failure(Version::HIGHEST, e),
                Ok(request) if request.items.len() > self.max_batch_items => Response::failure(
                    Version::HIGHEST,
                    KmipError::invalid_message(format!(
                        "the request has {} batch items; this relay runs at most {} per request",
                        request.items.len(),
                        self.max_batch_items
                    )),
                ),
                Ok(request) => self.run_from(&request, client),
            },
        };
        let bytes = response.to_bytes();
        let limit = self.max_message;
        if bytes.len() <= limit {
            return bytes;
        }
        let mut smaller = response;
        for item in &mut smaller.items {
            if item.result.is_ok() {
                item.result = Err(KmipError::new(
                    ResultReason::ResponseTooLarge,
                    format!("the response would exceed {limit} bytes"),
                ));
            }
        }
        let bytes = smaller.to_bytes();
        if bytes.len() <= limit {
            return bytes;
        }
        // Failures alone are too large (many items, long messages): one item says so.
        Response::failure(
            smaller.version,
            KmipError::new(
                ResultReason::ResponseTooLarge,
                format!(
                    "the response to {} batch items would exceed {limit} bytes",
                    smaller.items.len()
                ),
            ),
        )
        .to_bytes()
    }

    /// Runs every batch item of a decoded request.
    pub fn run(&self, request: &Request) -> Response {
        self.run_from(request, None)
    }

    /// [`Dispatcher::run`] for a client at a known address.
    pub fn run_from(&self, request: &Request, client: Option<IpAddr>) -> Response {
        let h = &request.header;
        let version_ok = h.version.supported();
        if let Some(m) = self.mimic {
            // The mimicked server's parser refuses the whole message.
            if let Some(name) = m.unknown_attribute(request) {
                let version = if version_ok {
                    h.version
                } else {
                    Version::HIGHEST
                };
                return Response::failure(
                    version,
                    KmipError::general(format!(
                        "unknown attribute {name:?}: the request cannot be read ({} mimicked)",
                        m.describe()
                    )),
                );
            }
        }
        let mut placeholder: Option<String> = None;
        let mut stopped = false;
        let mut items = Vec::with_capacity(request.items.len());
        for item in &request.items {
            let result = if stopped {
                Err(KmipError::general(
                    "not run: an earlier batch item failed (Batch Error Continuation Option Stop)",
                ))
            } else if !version_ok && item.operation != op::DISCOVER_VERSIONS {
                Err(KmipError::invalid_message(format!(
                    "protocol version {} is not supported: 1.0, 1.1 or 1.2 (use Discover Versions)",
                    h.version
                )))
            } else if item.operation == op::DISCOVER_VERSIONS
                && !self.withheld.contains(&op::DISCOVER_VERSIONS)
            {
                self.discover_versions(item.payload.as_ref())
            } else {
                let auth = match &h.credential {
                    Some(Err(e)) => Err(e.clone()),
                    Some(Ok(c)) => self.token.authenticate(Some(c), client),
                    None => self.token.authenticate(None, client),
                };
                auth.and_then(|()| self.operation(item, &mut placeholder))
            };
            if result.is_err() && h.continuation != kmip::continuation::CONTINUE {
                stopped = true;
            }
            items.push(ResponseItem {
                operation: Some(item.operation),
                batch_item_id: item.batch_item_id.clone(),
                result,
            });
        }
        let version = if version_ok {
            h.version
        } else {
            Version::HIGHEST
        };
        let mut response = Response { version, items };
        if let Some(max) = h.maximum_response_size.filter(|m| *m > 0) {
            let size = response.to_bytes().len();
            if size > max as usize {
                for item in &mut response.items {
                    if item.result.is_ok() {
                        item.result = Err(KmipError::new(
                            ResultReason::ResponseTooLarge,
                            format!("the response is {size} bytes, over the Maximum Response Size {max}"),
                        ));
                    }
                }
            }
        }
        response
    }

    fn operation(
        &self,
        item: &RequestItem,
        placeholder: &mut Option<String>,
    ) -> Result<Option<Item>, KmipError> {
        let empty = Item::structure(tag::REQUEST_PAYLOAD, vec![]);
        let p = item.payload.as_ref().unwrap_or(&empty);
        if !matches!(p.value, Value::Structure(_)) {
            return Err(KmipError::invalid_message(
                "Request Payload must be a structure",
            ));
        }
        if self.withheld.contains(&item.operation) {
            return Err(KmipError::unsupported(format!(
                "{} is withheld by this relay ([testing] withhold_operations)",
                kmip::operation::name(item.operation)
            )));
        }
        if let Some(m) = self.mimic.filter(|m| !m.runs(item.operation)) {
            return Err(KmipError::unsupported(format!(
                "{} is not supported by this relay ({} mimicked)",
                kmip::operation::name(item.operation),
                m.describe()
            )));
        }
        let out = match item.operation {
            op::QUERY => self.query(p),
            op::CREATE_KEY_PAIR if self.mimic.is_some() => {
                self.create_key_pair_as_seed003(p, placeholder)
            }
            op::CREATE_KEY_PAIR => self.create_key_pair(p, placeholder),
            op::GET => self.get(p, placeholder),
            op::GET_ATTRIBUTES => self.get_attributes(p, placeholder),
            op::ACTIVATE => self.activate(p, placeholder),
            op::REVOKE => self.revoke(p, placeholder),
            op::DESTROY => self.destroy(p, placeholder),
            op::ADD_ATTRIBUTE => self.edit_name(p, placeholder, true),
            op::MODIFY_ATTRIBUTE => self.edit_name(p, placeholder, false),
            op::LOCATE => self.locate(p, placeholder),
            op::SIGN if self.mimic.is_some() => self.sign_as_seed003(p, placeholder),
            op::SIGN => self.sign(p, placeholder),
            op::RNG_RETRIEVE => self.rng_retrieve(p),
            other => Err(KmipError::unsupported(format!(
                "{} is not supported by this relay",
                kmip::operation::name(other)
            ))),
        }?;
        // Before the answer leaves: whoever reads the log after the answer arrived
        // finds the line (the harness's evidence that RNG Retrieve reached the token).
        if item.operation == op::SIGN {
            tracing::debug!(target: SIGN_LOG, "Sign succeeded");
        } else {
            tracing::debug!(
                target: REQUEST_LOG,
                "{} succeeded",
                kmip::operation::name(item.operation)
            );
        }
        Ok(Some(out))
    }

    /// The operations this relay can run against this module, for Query.
    pub fn supported_operations(&self) -> Vec<u32> {
        if let Some(m) = self.mimic {
            let mut ops = m.advertised().to_vec();
            ops.retain(|o| !self.withheld.contains(o));
            return ops;
        }
        let t = &self.token;
        let mut ops = vec![op::DISCOVER_VERSIONS, op::QUERY];
        if t.has(MechanismType::RSA_PKCS_KEY_PAIR_GEN) || t.has(MechanismType::ECC_KEY_PAIR_GEN) {
            ops.push(op::CREATE_KEY_PAIR);
        }
        ops.extend([
            op::LOCATE,
            op::GET,
            op::GET_ATTRIBUTES,
            op::ADD_ATTRIBUTE,
            op::MODIFY_ATTRIBUTE,
            op::ACTIVATE,
            op::REVOKE,
            op::DESTROY,
        ]);
        let signs = [
            MechanismType::SHA256_RSA_PKCS,
            MechanismType::SHA384_RSA_PKCS,
            MechanismType::SHA512_RSA_PKCS,
            MechanismType::SHA256_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
            MechanismType::ECDSA,
        ];
        if signs.iter().any(|m| t.has(*m)) {
            ops.push(op::SIGN);
        }
        if t.has_rng {
            ops.push(op::RNG_RETRIEVE);
        }
        ops.retain(|o| !self.withheld.contains(o));
        ops
    }

    fn discover_versions(&self, p: Option<&Item>) -> Result<Option<Item>, KmipError> {
        let mut offered = Vec::new();
        if let Some(p) = p {
            for v in p.all(tag::PROTOCOL_VERSION) {
                offered
                    .push(Version::from_item(v).map_err(|e| KmipError::invalid_field(e.message))?);
            }
        }
        let ours = kmip::VERSIONS.map(|(major, minor)| Version { major, minor });
        let answer: Vec<Version> = if offered.is_empty() {
            ours.to_vec()
        } else {
            offered.into_iter().filter(|v| v.supported()).collect()
        };
        Ok(Some(payload(
            answer.into_iter().map(Version::to_item).collect(),
        )))
    }

    fn query(&self, p: &Item) -> Result<Item, KmipError> {
        let mut fields = Vec::new();
        let functions: Vec<u32> = p
            .all(tag::QUERY_FUNCTION)
            .map(|f| enum_value(f, "Query Function"))
            .collect::<Result<_, _>>()?;
        if functions.contains(&kmip::query::OPERATIONS) {
            for o in self.supported_operations() {
                fields.push(Item::enumeration(tag::OPERATION, o));
            }
        }
        if functions.contains(&kmip::query::OBJECTS) {
            fields.push(Item::enumeration(
                tag::OBJECT_TYPE,
                kmip::object_type::PUBLIC_KEY,
            ));
            fields.push(Item::enumeration(
                tag::OBJECT_TYPE,
                kmip::object_type::PRIVATE_KEY,
            ));
        }
        if functions.contains(&kmip::query::SERVER_INFORMATION) {
            let f = &self.token.facts;
            let mut vendor = format!(
                "kmip2pkcs11 {} (hsm-harness relay)",
                env!("CARGO_PKG_VERSION")
            );
            if let Some(m) = self.mimic {
                vendor.push_str(&format!(", mimicking the {}", m.describe()));
            }
            fields.push(Item::text(tag::VENDOR_IDENTIFICATION, vendor));
            let info = if !self.authenticated {
                vec![Item::text(tag::X_TOKEN, f.label.clone())]
            } else {
                vec![
                    Item::text(tag::X_PKCS11_LIBRARY, f.library.clone()),
                    Item::text(
                        tag::X_TOKEN,
                        format!(
                            "{} ({} {}, serial {}) in {}",
                            f.label, f.manufacturer, f.model, f.serial, f.slot
                        ),
                    ),
                ]
            };
            fields.push(Item::structure(tag::SERVER_INFORMATION, info));
        }
        Ok(payload(fields))
    }

    /// The object an item names: its Unique Identifier or the ID Placeholder.
    fn object_id(&self, p: &Item, placeholder: &Option<String>) -> Result<ObjectId, KmipError> {
        let text = match p.opt_text(tag::UNIQUE_IDENTIFIER, "Unique Identifier") {
            Ok(Some(t)) => t.to_string(),
            Ok(None) => placeholder.clone().ok_or_else(|| {
                KmipError::missing(
                    "Unique Identifier is required (no ID Placeholder in this batch)",
                )
            })?,
            Err(e) => return Err(e),
        };
        ObjectId::parse_as(&text, self.style()).ok_or_else(|| {
            let shown: String = text.chars().take(80).collect();
            KmipError::not_found(format!("{shown:?} is not an identifier of this relay"))
        })
    }

    fn create_key_pair(
        &self,
        p: &Item,
        placeholder: &mut Option<String>,
    ) -> Result<Item, KmipError> {
        let mut req = KeyRequest::default();
        for (t, which) in [
            (tag::COMMON_TEMPLATE_ATTRIBUTE, Which::Common),
            (tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE, Which::Private),
            (tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE, Which::Public),
        ] {
            if let Some(template) = p.child(t) {
                req.read(template, which)?;
            }
        }
        let spec = req.spec()?;
        let may_sign = req.private_usage.is_none_or(|m| m & kmip::USAGE_SIGN != 0);
        self.generate(
            spec,
            req.private_name.as_deref(),
            req.public_name.as_deref(),
            may_sign,
            placeholder,
        )
    }

    /// Create Key Pair as the released seed-003 relay reads it (see [`crate::mimic`]).
    fn create_key_pair_as_seed003(
        &self,
        p: &Item,
        placeholder: &mut Option<String>,
    ) -> Result<Item, KmipError> {
        let req = mimic::KeyRequest::read(p)?;
        let spec = req.spec()?;
        self.generate(
            spec,
            req.private_name.as_deref(),
            req.public_name.as_deref(),
            true,
            placeholder,
        )
    }

    /// Creates the key pair; answers its identifiers and sets the ID Placeholder.
    fn generate(
        &self,
        spec: KeySpec,
        private_name: Option<&str>,
        public_name: Option<&str>,
        may_sign: bool,
        placeholder: &mut Option<String>,
    ) -> Result<Item, KmipError> {
        let needed = match spec {
            KeySpec::Rsa(_) => MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            KeySpec::Ec(_) => MechanismType::ECC_KEY_PAIR_GEN,
        };
        if !self.token.has(needed) {
            return Err(KmipError::new(
                ResultReason::FeatureNotSupported,
                format!("the token has no {needed}"),
            ));
        }
        let id = self
            .token
            .run(|s| Token::generate(s, spec, private_name, public_name, may_sign))?;
        let private = ObjectId::new(Half::Private, &id)
            .styled(self.style())
            .to_string();
        let public = ObjectId::new(Half::Public, &id)
            .styled(self.style())
            .to_string();
        *placeholder = Some(private.clone());
        Ok(payload(vec![
            Item::text(tag::PRIVATE_KEY_UNIQUE_IDENTIFIER, private),
            Item::text(tag::PUBLIC_KEY_UNIQUE_IDENTIFIER, public),
        ]))
    }

    fn get(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        let format = p.opt_enum(tag::KEY_FORMAT_TYPE, "Key Format Type")?;
        if p.child(0x420047).is_some() {
            return Err(KmipError::new(
                ResultReason::FeatureNotSupported,
                "key wrapping is not supported",
            ));
        }
        let material = self.token.run(|s| {
            let h = Token::find(s, &id)?;
            if id.half == Half::Private {
                return Err(KmipError::denied(
                    "private keys are sensitive and never leave the token",
                )
                .into());
            }
            Token::material(s, h)
        })?;
        let bits = material.bits();
        let formats::Encoded {
            format,
            material: key_material,
            algorithm,
        } = formats::public_key(
            &material,
            format,
            self.mimic.map_or(formats::Offer::Relay, Mimic::offer),
        )?;
        Ok(payload(vec![
            Item::enumeration(tag::OBJECT_TYPE, kmip::object_type::PUBLIC_KEY),
            Item::text(tag::UNIQUE_IDENTIFIER, id.to_string()),
            Item::structure(
                tag::PUBLIC_KEY,
                vec![Item::structure(
                    tag::KEY_BLOCK,
                    vec![
                        Item::enumeration(tag::KEY_FORMAT_TYPE, format),
                        Item::structure(tag::KEY_VALUE, vec![key_material]),
                        Item::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, algorithm),
                        Item::integer(tag::CRYPTOGRAPHIC_LENGTH, bits),
                    ],
                )],
            ),
        ]))
    }

    fn uid_payload(id: &ObjectId) -> Item {
        payload(vec![Item::text(tag::UNIQUE_IDENTIFIER, id.to_string())])
    }

    fn activate(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        self.token.run(|s| Token::find(s, &id).map(|_| ()))?;
        Ok(Self::uid_payload(&id))
    }

    fn revoke(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        let result = self.token.run(|s| {
            let h = Token::find(s, &id)?;
            if id.half == Half::Private {
                s.update_attributes(h, &[Attribute::Sign(false)])
                    .map_err(|e| crate::token::classify("clearing CKA_SIGN", &e))?;
            }
            Ok(())
        });
        self.token.forget(&id);
        result?;
        Ok(Self::uid_payload(&id))
    }

    fn destroy(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        let result = self.token.run(|s| {
            let h = Token::find(s, &id)?;
            s.destroy_object(h)
                .map_err(|e| crate::token::classify("destroying the key", &e))
        });
        self.token.forget(&id);
        result?;
        Ok(Self::uid_payload(&id))
    }

    /// Add Attribute (`add`) or Modify Attribute for Name, onto CKA_LABEL. A PKCS#11
    /// object has one label: adding a Name to an object that has one is Illegal
    /// Operation, modifying one on an object without one is Item Not Found, and an
    /// Attribute Index above 0 is Item Not Found.
    fn edit_name(
        &self,
        p: &Item,
        placeholder: &mut Option<String>,
        add: bool,
    ) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        let a = p.required(tag::ATTRIBUTE, "Attribute")?;
        let (name, index, value) = attribute(a)?;
        if name != "Name" {
            return Err(KmipError::invalid_field(format!(
                "only the Name attribute can be {} through this relay, not {name:?}",
                if add { "added" } else { "modified" }
            )));
        }
        if index.is_some_and(|i| i != 0) {
            return Err(KmipError::not_found("objects here have one Name (index 0)"));
        }
        let text = name_value(value)?;
        let result = self.token.run(|s: &Session| {
            let h = Token::find(s, &id)?;
            let current = Token::label(s, h)?;
            if add && current.is_some() {
                return Err(Failure::from(KmipError::new(
                    ResultReason::IllegalOperation,
                    "the object already has a Name and PKCS#11 keeps one label: use Modify Attribute",
                )));
            }
            if !add && current.is_none() {
                return Err(KmipError::not_found("the object has no Name to modify").into());
            }
            s.update_attributes(h, &[Attribute::Label(text.as_bytes().to_vec())])
                .map_err(|e| crate::token::classify("setting CKA_LABEL", &e))
        });
        self.token.forget(&id);
        result?;
        Ok(payload(vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id.to_string()),
            Item::structure(
                tag::ATTRIBUTE,
                vec![Item::text(tag::ATTRIBUTE_NAME, "Name"), name_item(&text)],
            ),
        ]))
    }

    /// Get Attributes, of the one attribute objects here have besides what Get gives:
    /// Name (CKA_LABEL). The object's Name when it has a label and the request asks
    /// for Name or for no attribute in particular; an attribute asked for that is not
    /// there (any other name) is left out of the answer, as KMIP 1.2 has it.
    fn get_attributes(
        &self,
        p: &Item,
        placeholder: &mut Option<String>,
    ) -> Result<Item, KmipError> {
        let id = self.object_id(p, placeholder)?;
        let mut asked = Vec::new();
        for a in p.all(tag::ATTRIBUTE_NAME) {
            match &a.value {
                Value::TextString(t) => asked.push(t.as_str()),
                _ => {
                    return Err(KmipError::invalid_field(
                        "an Attribute Name must be a Text String",
                    ))
                }
            }
        }
        let label = self.token.run(|s: &Session| {
            let h = Token::find(s, &id)?;
            Token::label(s, h)
        })?;
        let mut fields = vec![Item::text(tag::UNIQUE_IDENTIFIER, id.to_string())];
        if asked.is_empty() || asked.contains(&"Name") {
            if let Some(label) = label {
                fields.push(Item::structure(
                    tag::ATTRIBUTE,
                    vec![Item::text(tag::ATTRIBUTE_NAME, "Name"), name_item(&label)],
                ));
            }
        }
        Ok(payload(fields))
    }

    fn locate(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let max = match p.opt_int(tag::MAXIMUM_ITEMS, "Maximum Items")? {
            Some(m) if m <= 0 => {
                return Err(KmipError::invalid_field("Maximum Items must be positive"))
            }
            Some(m) => m as usize,
            None => 1000,
        };
        let mut label = None;
        let mut halves = vec![Half::Private, Half::Public];
        for a in p.all(tag::ATTRIBUTE) {
            let (name, _, value) = attribute(a)?;
            match name {
                "Name" => {
                    if label.is_some() {
                        return Err(KmipError::invalid_field("Locate takes one Name at most"));
                    }
                    label = Some(name_value(value)?);
                }
                "Object Type" => {
                    halves.retain(|h| {
                        let want = enum_value(value, name).ok();
                        want == Some(match h {
                            Half::Private => kmip::object_type::PRIVATE_KEY,
                            Half::Public => kmip::object_type::PUBLIC_KEY,
                        })
                    });
                    enum_value(value, name)?;
                }
                other => {
                    return Err(KmipError::invalid_field(format!(
                        "Locate filters by Name and Object Type only, not {other:?}"
                    )))
                }
            }
        }
        let found = self
            .token
            .run(|s| Token::locate(s, &halves, label.as_deref(), max))?;
        if let [one] = found.as_slice() {
            *placeholder = Some(one.to_string());
        }
        Ok(payload(
            found
                .iter()
                .map(|id| Item::text(tag::UNIQUE_IDENTIFIER, id.to_string()))
                .collect(),
        ))
    }

    /// What a Sign names: the private key, its Cryptographic Parameters and the data.
    fn sign_inputs<'a>(
        &self,
        p: &'a Item,
        placeholder: &mut Option<String>,
    ) -> Result<(ObjectId, Option<&'a Item>, &'a [u8]), KmipError> {
        let id = self.object_id(p, placeholder)?;
        if id.half != Half::Private {
            return Err(KmipError::invalid_field(format!(
                "{id} is a public key: Sign needs a private key"
            )));
        }
        let params = p.child(tag::CRYPTOGRAPHIC_PARAMETERS);
        let data = p
            .opt_bytes(tag::DATA, "Data")?
            .ok_or_else(|| KmipError::missing("Data is required"))?;
        Ok((id, params, data))
    }

    /// Runs a Sign's PKCS#11 part, `attempt(session, handle, kind, check_sign)`, on
    /// the private key `id`. A key a Sign succeeded with before is remembered
    /// ([`Token::remembered`]): its handle and kind are used as they are and its CKA_SIGN
    /// is not read again (the relay forgets the key when it revokes, destroys or edits
    /// it). Any failure on a remembered key (the key destroyed or replaced behind the
    /// relay, so its handle is invalid; its CKA_SIGN cleared by another application, so
    /// the module refuses C_SignInit; a logout) forgets it and runs the Sign again as
    /// for a key not remembered: C_FindObjects, its key material, then `attempt` with
    /// CKA_SIGN read. The answer is then the one a lookup on every Sign would give.
    fn sign_on_key<T>(
        &self,
        s: &Session,
        id: &ObjectId,
        attempt: impl Fn(&Session, ObjectHandle, SigningKey, bool) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        if let Some((h, key)) = self.token.remembered(id) {
            match attempt(s, h, key, false) {
                Ok(v) => return Ok(v),
                Err(f) if f.lost => return Err(f),
                Err(_) => self.token.forget(id),
            }
        }
        let h = Token::find(s, id)?;
        let key = Token::signing_key(s, h)?;
        let signed = attempt(s, h, key, true)?;
        self.token.remember(id, h, key);
        Ok(signed)
    }

    /// Refuses a mechanism the token lacks and, with `check_sign`, a key that may not
    /// sign (CKA_SIGN false).
    fn may_sign(
        &self,
        s: &Session,
        h: ObjectHandle,
        check_sign: bool,
        mtype: MechanismType,
    ) -> Result<(), Failure> {
        if !self.token.has(mtype) {
            return Err(KmipError::new(
                ResultReason::FeatureNotSupported,
                format!("the token has no {mtype}"),
            )
            .into());
        }
        if check_sign && Token::flag(s, h, AttributeType::Sign)? == Some(false) {
            return Err(KmipError::denied(
                "the key may not sign (revoked, or created without Sign usage)",
            )
            .into());
        }
        Ok(())
    }

    fn sign(&self, p: &Item, placeholder: &mut Option<String>) -> Result<Item, KmipError> {
        let (id, params, data) = self.sign_inputs(p, placeholder)?;
        let signature = self.token.run(|s| {
            self.sign_on_key(s, &id, |s, h, key, check_sign| {
                let scheme = scheme(params, key)?;
                let (mech, mtype) = mechanism(scheme);
                if let (Scheme::RsaPss(hash), Some(bare)) = (scheme, bare_pss(&mech)) {
                    if !self.token.has(mtype) && self.token.has(MechanismType::RSA_PKCS_PSS) {
                        self.may_sign(s, h, check_sign, MechanismType::RSA_PKCS_PSS)?;
                        return s
                            .sign(&bare, h, &digest(hash, data))
                            .map_err(|e| crate::token::classify("signing", &e));
                    }
                }
                self.may_sign(s, h, check_sign, mtype)?;
                match scheme {
                    Scheme::Ecdsa(hash) => {
                        let raw = s
                            .sign(&mech, h, &digest(hash, data))
                            .map_err(|e| crate::token::classify("signing", &e))?;
                        der::ecdsa_signature(&raw).ok_or_else(|| {
                            Failure::from(KmipError::general(
                                "the token's ECDSA signature is malformed",
                            ))
                        })
                    }
                    _ => s
                        .sign(&mech, h, data)
                        .map_err(|e| crate::token::classify("signing", &e)),
                }
            })
        })?;
        Ok(payload(vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id.to_string()),
            Item::bytes(tag::SIGNATURE_DATA, signature),
        ]))
    }

    /// Sign as the released seed-003 relay does (see [`crate::mimic`]): SHA-256 hashed
    /// here, the digest signed with CKM_RSA_PKCS (over its DigestInfo) or CKM_ECDSA.
    fn sign_as_seed003(
        &self,
        p: &Item,
        placeholder: &mut Option<String>,
    ) -> Result<Item, KmipError> {
        let (id, params, data) = self.sign_inputs(p, placeholder)?;
        let signature = self.token.run(|s| {
            self.sign_on_key(s, &id, |s, h, key, check_sign| {
                let how = mimic::signature(params, key)?;
                let (mech, mtype) = match how {
                    mimic::Signature::RsaPkcs1Sha256 => {
                        (Mechanism::RsaPkcs, MechanismType::RSA_PKCS)
                    }
                    mimic::Signature::EcdsaSha256 => (Mechanism::Ecdsa, MechanismType::ECDSA),
                };
                self.may_sign(s, h, check_sign, mtype)?;
                let hash: [u8; 32] = sha2::Sha256::digest(data).into();
                match how {
                    mimic::Signature::RsaPkcs1Sha256 => s
                        .sign(&mech, h, &der::sha256_digest_info(&hash))
                        .map_err(|e| crate::token::classify("signing", &e)),
                    mimic::Signature::EcdsaSha256 => {
                        let raw = s
                            .sign(&mech, h, &hash)
                            .map_err(|e| crate::token::classify("signing", &e))?;
                        der::ecdsa_signature(&raw).ok_or_else(|| {
                            Failure::from(KmipError::general(
                                "the token's ECDSA signature is malformed",
                            ))
                        })
                    }
                }
            })
        })?;
        Ok(payload(vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id.to_string()),
            Item::bytes(tag::SIGNATURE_DATA, signature),
        ]))
    }

    fn rng_retrieve(&self, p: &Item) -> Result<Item, KmipError> {
        if !self.token.has_rng {
            return Err(KmipError::unsupported(
                "RNG Retrieve: the PKCS#11 module has no C_GenerateRandom",
            ));
        }
        let len = p
            .opt_int(tag::DATA_LENGTH, "Data Length")?
            .ok_or_else(|| KmipError::missing("Data Length is required"))?;
        if !(1..=MAX_RANDOM).contains(&len) {
            return Err(KmipError::invalid_field(format!(
                "Data Length {len} is out of range: 1 to {MAX_RANDOM}"
            )));
        }
        let data = self.token.run(|s| {
            s.generate_random_vec(len as u32)
                .map_err(|e| crate::token::classify("C_GenerateRandom", &e))
        })?;
        Ok(payload(vec![Item::bytes(tag::DATA, data)]))
    }
}
