//! The PKCS#11 side: the module, the one token the relay serves, and the calls each
//! KMIP operation needs.
//!
//! Contract:
//!
//! - [`Token::open`] loads the module and calls C_Initialize once (the relay is one
//!   process per module; a module someone already initialised in this process is used
//!   as is), finds the slot by id or token label (all labels seen are listed when none
//!   matches), reads what the module can do (C_GetInfo, C_GetSlotInfo, C_GetTokenInfo,
//!   C_GetMechanismList, and whether C_GenerateRandom works) and opens the session
//!   pool. With a user PIN it logs in once; a wrong PIN stops the start with an error
//!   that does not contain the PIN.
//! - Keys are found by CKA_CLASS and CKA_ID ([`ObjectId`]). No object is Item Not Found;
//!   several objects with the same class and id are Item Not Found too (the relay will
//!   not guess which one a client meant).
//! - New private keys are token objects, private, sensitive, not extractable, and may
//!   sign only when the request's usage mask (if any) allows Sign.
//! - PKCS#11 errors become KMIP errors for that item: PIN and permission errors are
//!   Permission Denied, missing functions (CKR_FUNCTION_NOT_SUPPORTED,
//!   CKR_RANDOM_NO_RNG) Operation Not Supported, bad handles Item Not Found, bad
//!   mechanisms, sizes, curves or data Invalid Field, anything else General Failure
//!   naming the function and the CKR code. A lost session is replaced (see [`Pool`]).
//! - Sign remembers the handle and kind of each private key it signed with
//!   ([`Token::remembered`]), so a later Sign with it costs C_SignInit and C_Sign alone,
//!   not a C_FindObjects and two C_GetAttributeValue calls more (in SoftHSMv2 each one
//!   a check of the object's file, and a template built). The relay forgets a key when
//!   it destroys, revokes or edits it, and when a Sign with the remembered handle
//!   fails for any reason: that Sign is then run again with the key looked up and its
//!   CKA_SIGN read, as before (see `Dispatcher::sign_on_key`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

use crate::config::{CredentialMode, Pkcs11Config, SlotSelector};
use crate::identifiers::{Half, ObjectId};
use crate::kmip::ResultReason;
use crate::logins::{LoginPolicy, Throttle};
use crate::message::{Credential, KmipError};
use crate::pool::{Failure, Pool};

/// What the module and token say about themselves, for Query's Server Information.
#[derive(Clone, Debug)]
pub struct TokenFacts {
    pub library: String,
    /// C_GetSlotInfo's description of the slot.
    pub slot: String,
    pub label: String,
    pub model: String,
    pub manufacturer: String,
    pub serial: String,
}

/// The curves the relay creates and reads keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    pub fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => crate::der::OID_P256,
            Curve::P384 => crate::der::OID_P384,
        }
    }
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
    pub fn bits(self) -> i32 {
        (self.field_len() * 8) as i32
    }
    fn from_params(params: &[u8]) -> Option<Curve> {
        match params {
            p if p == crate::der::OID_P256 => Some(Curve::P256),
            p if p == crate::der::OID_P384 => Some(Curve::P384),
            _ => None,
        }
    }
}

/// What kind of key pair to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(u32),
    Ec(Curve),
}

/// What a key object holds that the operations need.
#[derive(Clone, Debug)]
pub enum KeyMaterial {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
}

impl KeyMaterial {
    /// Key size in bits (RSA modulus bits, EC field bits).
    pub fn bits(&self) -> i32 {
        match self {
            KeyMaterial::Rsa { modulus, .. } => bit_len(modulus) as i32,
            KeyMaterial::Ec { curve, .. } => curve.bits(),
        }
    }
}

fn bit_len(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (n.len() - i - 1) * 8 + (8 - n[i].leading_zeros() as usize),
    }
}

/// Key type of a private key object, for choosing and checking mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    Rsa { bits: usize },
    Ec(Curve),
}

/// The verified-PIN state in credential mode `token` (see [`Token::authenticate`]).
struct LoginState {
    /// SHA-256(salt || PIN) of the PIN the token accepted.
    digest: Option<[u8; 32]>,
    salt: [u8; 16],
    /// Bounds the C_Logins made before the first good PIN.
    throttle: Throttle,
}

/// The token the relay serves.
pub struct Token {
    pub facts: TokenFacts,
    mechanisms: Vec<MechanismType>,
    pub has_rng: bool,
    pool: Pool,
    mode: CredentialMode,
    login: Mutex<LoginState>,
    /// Private keys' handles and kinds, found by earlier Signs (see the module
    /// documentation).
    keys: Mutex<HashMap<Vec<u8>, (ObjectHandle, SigningKey)>>,
}

/// Whether two digests are equal, in time that does not depend on where they differ
/// (no early exit, and the fold is hidden from the optimiser): the digests are of
/// salted passwords, so neither their length nor a matching prefix tells a guesser
/// anything.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// "C_Sign answered CKR_GENERAL_ERROR" (cryptoki names in PKCS#11 spelling).
pub fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{} answered {}", function_name(*f), rv_name(*rv)),
        other => other.to_string(),
    }
}

fn function_name(f: Function) -> String {
    format!("C_{f:?}")
}

fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(c) => format!("CKR_VENDOR_DEFINED+{c:#x}"),
        RvError::UnknownErrorCode(c) => format!("unknown CKR {c:#x}"),
        other => {
            let mut name = String::from("CKR");
            for ch in format!("{other:?}").chars() {
                if ch.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(ch.to_ascii_uppercase());
            }
            name
        }
    }
}

/// The KMIP error for a PKCS#11 error (see the module documentation).
pub fn classify(what: &str, e: &CkError) -> Failure {
    let text = format!("{what}: {}", describe(e));
    let CkError::Pkcs11(rv, _) = e else {
        return KmipError::general(text).into();
    };
    let lost = matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::CryptokiNotInitialized
    );
    let reason = match rv {
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinLocked
        | RvError::PinExpired
        | RvError::UserNotLoggedIn
        | RvError::UserPinNotInitialized
        | RvError::KeyFunctionNotPermitted
        | RvError::AttributeReadOnly
        | RvError::AttributeSensitive
        | RvError::ActionProhibited
        | RvError::TokenWriteProtected => ResultReason::PermissionDenied,
        RvError::FunctionNotSupported | RvError::RandomNoRng => ResultReason::OperationNotSupported,
        RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => ResultReason::ItemNotFound,
        RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::KeySizeRange
        | RvError::CurveNotSupported
        | RvError::DomainParamsInvalid
        | RvError::KeyTypeInconsistent
        | RvError::DataLenRange
        | RvError::DataInvalid
        | RvError::TemplateInconsistent
        | RvError::TemplateIncomplete
        | RvError::AttributeValueInvalid
        | RvError::ArgumentsBad => ResultReason::InvalidField,
        _ => ResultReason::GeneralFailure,
    };
    Failure {
        error: KmipError::new(reason, text),
        lost,
    }
}

trait Ck<T> {
    fn ck(self, what: &str) -> Result<T, Failure>;
}

impl<T> Ck<T> for Result<T, CkError> {
    fn ck(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| classify(what, &e))
    }
}

fn trimmed(s: &str) -> String {
    s.trim_end_matches([' ', '\0']).to_string()
}

fn class_of(half: Half) -> ObjectClass {
    match half {
        Half::Private => ObjectClass::PRIVATE_KEY,
        Half::Public => ObjectClass::PUBLIC_KEY,
    }
}

impl Token {
    /// Loads the module, finds the token, logs in (mode `none` with a PIN) and opens
    /// the pool. Errors never contain the PIN.
    pub fn open(
        config: &Pkcs11Config,
        mode: CredentialMode,
        pool_wait: Duration,
    ) -> Result<Token, String> {
        let pkcs11 = Pkcs11::new(&config.lib_path).map_err(|e| {
            format!(
                "cannot load PKCS#11 module {}: {e}",
                config.lib_path.display()
            )
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(describe(&e)),
        }
        let info = pkcs11.get_library_info().map_err(|e| describe(&e))?;
        let slots = pkcs11.get_slots_with_token().map_err(|e| describe(&e))?;
        let mut seen = Vec::new();
        let mut found = None;
        for slot in slots {
            let ti = pkcs11.get_token_info(slot).map_err(|e| describe(&e))?;
            let label = trimmed(ti.label());
            let hit = match &config.slot {
                SlotSelector::Id(id) => slot.id() == *id,
                SlotSelector::Label(l) => *l == label,
            };
            if hit {
                found = Some((slot, ti));
                break;
            }
            seen.push(format!("{label:?} (slot {})", slot.id()));
        }
        let Some((slot, ti)) = found else {
            return Err(format!(
                "no token matches slot {:?}; tokens seen: {}",
                config.slot,
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ));
        };
        let slot_info = pkcs11.get_slot_info(slot).map_err(|e| describe(&e))?;
        let facts = TokenFacts {
            library: format!(
                "{} {} {} (Cryptoki {})",
                trimmed(info.manufacturer_id()),
                trimmed(info.library_description()),
                info.library_version(),
                info.cryptoki_version()
            ),
            slot: format!(
                "{} (slot {})",
                trimmed(slot_info.slot_description()),
                slot.id()
            ),
            label: trimmed(ti.label()),
            model: trimmed(ti.model()),
            manufacturer: trimmed(ti.manufacturer_id()),
            serial: trimmed(ti.serial_number()),
        };
        let mechanisms = pkcs11.get_mechanism_list(slot).map_err(|e| describe(&e))?;
        let pool = Pool::open(&pkcs11, slot, config.pool_size, pool_wait)
            .map_err(|e| format!("cannot open PKCS#11 sessions: {}", describe(&e)))?;
        if mode == CredentialMode::None {
            if let Some(secret) = &config.user_pin {
                let pin: AuthPin = secret.resolve().map_err(|e| e.to_string())?;
                pool.with_session(|s| match s.login(UserType::User, Some(&pin)) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
                    Err(e) => Err(classify("user login", &e)),
                })
                .map_err(|e| e.message)?;
            }
        }
        let has_rng = pool
            .with_session(|s| match s.generate_random_vec(1) {
                Ok(_) => Ok(true),
                Err(CkError::Pkcs11(RvError::FunctionNotSupported | RvError::RandomNoRng, _)) => {
                    Ok(false)
                }
                Err(e) => Err(classify("C_GenerateRandom probe", &e)),
            })
            .unwrap_or(false);
        Ok(Token {
            facts,
            mechanisms,
            has_rng,
            pool,
            mode,
            login: Mutex::new(LoginState {
                digest: None,
                salt: rand::random(),
                throttle: Throttle::new(LoginPolicy::default()),
            }),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Abandons and replaces sessions whose PKCS#11 calls run longer than `deadline`
    /// (see [`crate::pool`]).
    pub fn with_operation_deadline(mut self, deadline: Duration) -> Self {
        self.pool = self.pool.with_deadline(deadline);
        self
    }

    /// Bounds C_Login for KMIP clients by `policy` (see [`crate::logins`]) instead of
    /// the defaults.
    pub fn with_login_policy(self, policy: LoginPolicy) -> Self {
        self.login
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .throttle = Throttle::new(policy);
        self
    }

    /// Whether the token offers a mechanism.
    pub fn has(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&m)
    }

    /// Checks a KMIP credential in mode `token`: the username must be the token label
    /// and the password the user PIN. The first good PIN logs the relay in (C_Login);
    /// later requests are compared with a salted digest of that PIN, because PKCS#11
    /// login state is shared by all sessions of the process and cannot be re-checked
    /// with C_Login while logged in. From then on no password, right or wrong, reaches
    /// the module. Before that, each C_Login must be admitted by the login throttle
    /// ([`crate::logins`]: growing per-client and global delays after failures, a cap
    /// per minute); an attempt it refuses is Permission Denied without a C_Login.
    /// Every request is checked anew: a connection is never trusted because another
    /// one logged in. Failures are Permission Denied and never echo the password.
    pub fn authenticate(
        &self,
        cred: Option<&Credential>,
        client: Option<IpAddr>,
    ) -> Result<(), KmipError> {
        if self.mode == CredentialMode::None {
            return Ok(());
        }
        let denied = || KmipError::denied("authentication failed: wrong or missing credentials");
        let Some(cred) = cred else {
            return Err(KmipError::denied(
                "this relay requires a Username and Password credential",
            ));
        };
        let Some(password) = &cred.password else {
            return Err(denied());
        };
        if cred.username != self.facts.label {
            return Err(denied());
        }
        let mut state = self.login.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = {
            let mut h = Sha256::new();
            h.update(state.salt);
            h.update(password.as_bytes());
            let d: [u8; 32] = h.finalize().into();
            d
        };
        if let Some(known) = state.digest {
            return if same_digest(&known, &digest) {
                Ok(())
            } else {
                Err(denied())
            };
        }
        if let Err(wait) = state.throttle.admit(client, Instant::now()) {
            return Err(KmipError::denied(format!(
                "authentication refused: too many failed logins, retry in {} ms",
                wait.as_millis()
            )));
        }
        let pin = AuthPin::from(password.clone());
        let result = self.pool.with_session(|s| {
            match s.login(UserType::User, Some(&pin)) {
                Ok(()) => Ok(()),
                Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                    // Logged in with a PIN we never saw: log out and check this one.
                    let _ = s.logout();
                    s.login(UserType::User, Some(&pin)).ck("user login")
                }
                Err(e) => Err(classify("user login", &e)),
            }
        });
        match result {
            Ok(()) => {
                state.digest = Some(digest);
                state.throttle.succeeded();
                Ok(())
            }
            Err(e) => {
                let wait = state.throttle.failed(client, Instant::now());
                tracing::warn!(
                    "KMIP login for token {:?} from {} refused by the token (C_Login: {}); \
                     next C_Login for it in {} ms at the earliest",
                    cred.username,
                    client.map_or_else(|| "an unknown address".to_string(), |c| c.to_string()),
                    e.message,
                    wait.as_millis()
                );
                if e.reason == ResultReason::PermissionDenied {
                    Err(denied())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The handle and kind of private key `id` a Sign found before, if any.
    pub fn remembered(&self, id: &ObjectId) -> Option<(ObjectHandle, SigningKey)> {
        if id.half != Half::Private {
            return None;
        }
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id.id)
            .copied()
    }

    /// Remembers the handle and kind of private key `id`.
    pub fn remember(&self, id: &ObjectId, h: ObjectHandle, key: SigningKey) {
        if id.half == Half::Private {
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.id.clone(), (h, key));
        }
    }

    /// Forgets what [`Token::remember`] kept of `id` (any half), so the next Sign looks
    /// it up again.
    pub fn forget(&self, id: &ObjectId) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id.id);
    }

    /// Runs `op` on a pooled session.
    pub fn run<T>(&self, op: impl FnOnce(&Session) -> Result<T, Failure>) -> Result<T, KmipError> {
        self.pool.with_session(op)
    }

    /// The one object named by `id`.
    pub fn find(s: &Session, id: &ObjectId) -> Result<ObjectHandle, Failure> {
        let found = s
            .find_objects(&[
                Attribute::Class(class_of(id.half)),
                Attribute::Id(id.id.clone()),
            ])
            .ck("finding the key")?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(KmipError::not_found(format!("no object {id}")).into()),
            many => Err(KmipError::not_found(format!(
                "{} objects share the identifier {id}; refusing to guess",
                many.len()
            ))
            .into()),
        }
    }

    /// Creates a key pair; returns its CKA_ID.
    pub fn generate(
        s: &Session,
        spec: KeySpec,
        private_label: Option<&str>,
        public_label: Option<&str>,
        may_sign: bool,
    ) -> Result<Vec<u8>, Failure> {
        let id: [u8; 16] = rand::random();
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Id(id.to_vec()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(may_sign),
            Attribute::Decrypt(false),
            Attribute::Id(id.to_vec()),
        ];
        if let Some(l) = public_label {
            public.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(l) = private_label {
            private.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        let mechanism = match spec {
            KeySpec::Rsa(bits) => {
                public.push(Attribute::ModulusBits((bits as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeySpec::Ec(curve) => {
                public.push(Attribute::EcParams(curve.oid().to_vec()));
                Mechanism::EccKeyPairGen
            }
        };
        s.generate_key_pair(&mechanism, &public, &private)
            .ck("generating the key pair")?;
        Ok(id.to_vec())
    }

    /// The public material of a key object (either half: RSA private keys carry the
    /// modulus and exponent, EC private keys only the curve).
    pub fn material(s: &Session, h: ObjectHandle) -> Result<KeyMaterial, Failure> {
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .ck("reading the key")?;
        let (mut kt, mut n, mut e, mut params, mut point) = (None, None, None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => kt = Some(t),
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        let unsupported =
            |m: String| Failure::from(KmipError::new(ResultReason::FeatureNotSupported, m));
        match kt {
            Some(t) if t == KeyType::RSA => Ok(KeyMaterial::Rsa {
                modulus: n.unwrap_or_default(),
                exponent: e.unwrap_or_default(),
            }),
            Some(t) if t == KeyType::EC => {
                let params = params.unwrap_or_default();
                let curve = Curve::from_params(&params).ok_or_else(|| {
                    unsupported(format!(
                        "EC key on a curve this relay does not handle ({})",
                        hex::encode(&params)
                    ))
                })?;
                Ok(KeyMaterial::Ec {
                    curve,
                    point: point.unwrap_or_default(),
                })
            }
            Some(t) => Err(unsupported(format!("keys of type {t} are not handled"))),
            None => Err(unsupported("the object has no CKA_KEY_TYPE".into())),
        }
    }

    /// Reads one boolean attribute; `None` when the token does not say.
    pub fn flag(
        s: &Session,
        h: ObjectHandle,
        which: AttributeType,
    ) -> Result<Option<bool>, Failure> {
        let attrs = s.get_attributes(h, &[which]).ck("reading the key")?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Sensitive(b)
            | Attribute::Extractable(b)
            | Attribute::Sign(b)
            | Attribute::Verify(b) => Some(b),
            _ => None,
        }))
    }

    /// The object's CKA_LABEL, `None` when it has none (or an empty one).
    pub fn label(s: &Session, h: ObjectHandle) -> Result<Option<String>, Failure> {
        let attrs = s
            .get_attributes(h, &[AttributeType::Label])
            .ck("reading the label")?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Label(v) if !v.is_empty() => Some(String::from_utf8_lossy(&v).into_owned()),
            _ => None,
        }))
    }

    /// Key objects (public and/or private) with a CKA_ID, optionally with a label.
    pub fn locate(
        s: &Session,
        halves: &[Half],
        label: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectId>, Failure> {
        let mut out = Vec::new();
        for &half in halves {
            let mut template = vec![Attribute::Class(class_of(half))];
            if let Some(l) = label {
                template.push(Attribute::Label(l.as_bytes().to_vec()));
            }
            for h in s.find_objects(&template).ck("searching objects")? {
                if out.len() >= max {
                    return Ok(out);
                }
                let attrs = s
                    .get_attributes(h, &[AttributeType::Id])
                    .ck("reading CKA_ID")?;
                if let Some(Attribute::Id(id)) = attrs.into_iter().next() {
                    if !id.is_empty() && id.len() <= crate::identifiers::MAX_ID_BYTES {
                        let oid = ObjectId::new(half, &id);
                        if !out.contains(&oid) {
                            out.push(oid);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// What kind of signing key a private key object is.
    pub fn signing_key(s: &Session, h: ObjectHandle) -> Result<SigningKey, Failure> {
        Ok(match Self::material(s, h)? {
            KeyMaterial::Rsa { modulus, .. } => SigningKey::Rsa {
                bits: bit_len(&modulus),
            },
            KeyMaterial::Ec { curve, .. } => SigningKey::Ec(curve),
        })
    }
}
