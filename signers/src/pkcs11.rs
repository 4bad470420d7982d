//! The PKCS#11 signer: key pairs on a token, reached through a PKCS#11 module.
//!
//! Contract, beyond [`Signer`]'s:
//!
//! - Lazy: [`Pkcs11Signer::new`] touches nothing. The first call that needs the token
//!   loads the module, finds the slot, opens a read/write session and logs in as the
//!   user (when `login` is on). Every later call reuses that session, one call at a
//!   time (a PKCS#11 session must not be used by two threads at once). Signing is the
//!   exception: a sign that finds the session busy (another thread's call) signs on
//!   another session of the same connection, opened when first needed and kept for
//!   the next (the login is the token's, so they are logged in too). A caller that
//!   signs from one thread uses the one session only.
//! - A key's private object handle and key type are looked up (C_FindObjects,
//!   C_GetAttributeValue) on its first sign and kept for the connection's life, so a
//!   later sign is C_SignInit and C_Sign alone. They are forgotten when the key is
//!   destroyed through this signer, when the session is lost, and when the module
//!   calls the handle invalid (a key destroyed or replaced behind the signer's back):
//!   that sign looks the key up again, as the first did.
//! - One module load per process: modules are kept in a process-wide registry keyed by
//!   library path, so signers on the same library share one `C_Initialize` (a second
//!   one is at best refused and at worst crashes the module). A module someone else in
//!   the process already initialised (CKR_CRYPTOKI_ALREADY_INITIALIZED) is used as is.
//!   Modules are never finalised.
//! - The login is per token and per process in PKCS#11: a second signer on a token
//!   that is already logged in is told CKR_USER_ALREADY_LOGGED_IN, which counts as
//!   success, whatever PIN it holds.
//! - Keys are found by CKA_ID (the 20-byte [`KeyIdentifier`]) and CKA_CLASS. New keys
//!   are token objects labelled `hsm-harness`; the private half is private, sensitive,
//!   not extractable and may only sign.
//!
//! Refused, and why:
//!
//! - A module that cannot be loaded, a wrong, locked or malformed PIN:
//!   [`ErrorKind::Unusable`], fatal: retrying cannot help, and retrying a wrong PIN
//!   can lock the token. No message ever holds the PIN.
//! - A module that cannot be initialised, a slot id without a token, a token label no
//!   slot has (the message lists the labels seen): [`ErrorKind::Unavailable`], since
//!   tokens come and go.
//! - `login = true` without a `user_pin`, on a token without a protected
//!   authentication path: [`ErrorKind::Config`].
//! - Signing with an algorithm whose key type is not the key's (by CKA_KEY_TYPE, the
//!   curve in CKA_EC_PARAMS and the RSA modulus size): [`ErrorKind::InvalidInput`],
//!   before the token sees it (SoftHSM answers CKR_GENERAL_ERROR for ECDSA with an RSA
//!   key, which says nothing).
//! - A key whose private half is not on the token: [`ErrorKind::NotFound`].
//! - A module without a function seed 001 requires ([`REQUIRED_FUNCTIONS`]; its
//!   "C_DeleteObject" is C_DestroyObject): [`ErrorKind::Unusable`], the message naming
//!   the function and saying it is required. Most are used while connecting (C_Initialize,
//!   C_GetInfo, C_GetSlotList, C_GetSlotInfo, C_GetTokenInfo, C_OpenSession, C_Login) or
//!   by the connect-time *probe*, which searches for, creates, reads and destroys one
//!   session object (CKO_DATA, CKA_TOKEN false, labelled `hsm-harness-probe`): C_FindObjectsInit,
//!   C_FindObjects, C_FindObjectsFinal (a search it did not end makes the next
//!   C_FindObjectsInit answer CKR_OPERATION_ACTIVE), C_GetAttributeValue and
//!   C_DestroyObject. C_SignInit and C_Sign are found missing when the router proves
//!   the identity key, before the signer is bound. With `force = true` a module without
//!   C_GetInfo or C_GetSlotInfo (details left out) or C_DestroyObject (`destroy_key`
//!   is then [`ErrorKind::Unsupported`]) is used anyway, with a warning. A module
//!   without C_CreateObject cannot be probed for C_DestroyObject: a warning, and
//!   `destroy_key` finds out. C_Finalize is never called (modules stay loaded for the
//!   life of the process, see above), so a module without it loses nothing.
//! - CKR_FUNCTION_NOT_SUPPORTED from other functions, CKR_RANDOM_NO_RNG,
//!   CKR_MECHANISM_INVALID and CKR_CURVE_NOT_SUPPORTED: [`ErrorKind::Unsupported`].
//! - A lost session (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//!   CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN,
//!   CKR_CRYPTOKI_NOT_INITIALIZED): [`ErrorKind::Unavailable`]; the connection is
//!   dropped and the next call connects afresh.
//! - Every other PKCS#11 error: [`ErrorKind::Backend`], naming the function and the
//!   CKR code.
//!
//! ECDSA is hashed here (SHA-256 or SHA-384) and signed with CKM_ECDSA, because tokens
//! such as SoftHSM 2.6 offer no CKM_ECDSA_SHA256; the `r || s` the token returns is
//! re-encoded as DER. RSA uses CKM_SHA256_RSA_PKCS and CKM_SHA256_RSA_PKCS_PSS
//! (MGF1-SHA-256, salt 32), Ed25519 CKM_EDDSA without parameters. Where a module
//! offers PSS only as CKM_RSA_PKCS_PSS (p11-kit 0.24's RPC passes no hash-and-sign PSS),
//! the SHA-256 is computed here and signed with that.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::config::{Pkcs11Config, SlotSelector};
use crate::encoding::{self, ec_spki_der, ed25519_spki_der, rsa_spki_der};
use crate::{
    Algorithm, CreatedKey, ErrorKind, KeyIdentifier, KeyType, Signer, SignerError, SignerInfo,
};

/// The CKA_LABEL put on both halves of every key pair this signer creates.
pub const KEY_LABEL: &str = "hsm-harness";

/// Modules loaded in this process, by canonical library path. Never emptied: a module
/// is initialised once and stays loaded for the life of the process.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// The module at `path`, loaded and initialised once per process.
///
/// Public so that a test harness can open its own sessions on the same module (for an
/// inventory read through a session that is not the signer's) without a second
/// C_Initialize or a C_Finalize under the signer's feet.
pub fn module(path: &Path) -> Result<Pkcs11, String> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // Held across loading and C_Initialize: parallel initialisation crashes some
    // modules (rust-cryptoki #260).
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, m)) = modules.iter().find(|(p, _)| *p == key) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path)
        .map_err(|e| format!("cannot load PKCS#11 module {}: {e}", path.display()))?;
    initialize(&m).map_err(|e| format!("{} ({})", describe(&e), path.display()))?;
    modules.push((key, m.clone()));
    Ok(m)
}

/// C_Initialize with OS locking; a module already initialised in this process is fine.
fn initialize(m: &Pkcs11) -> Result<(), CkError> {
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `C_Sign`, from cryptoki's `Function::Sign`.
fn function_name(f: Function) -> String {
    format!("C_{f:?}")
}

/// The PKCS#11 functions a module must have (seed 001's table; its "C_DeleteObject" is
/// C_DestroyObject). C_Finalize is in the table but never called (see the module
/// documentation).
pub const REQUIRED_FUNCTIONS: [&str; 15] = [
    "C_DestroyObject",
    "C_Finalize",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_FindObjectsInit",
    "C_GetAttributeValue",
    "C_GetInfo",
    "C_GetSlotInfo",
    "C_GetSlotList",
    "C_GetTokenInfo",
    "C_Initialize",
    "C_Login",
    "C_OpenSession",
    "C_Sign",
    "C_SignInit",
];

/// The label of the connect-time probe's session object.
const PROBE_LABEL: &str = "hsm-harness-probe";

/// The function a required-function failure names: CKR_FUNCTION_NOT_SUPPORTED from
/// one of [`REQUIRED_FUNCTIONS`].
fn missing_required(e: &CkError) -> Option<String> {
    match e {
        CkError::Pkcs11(RvError::FunctionNotSupported, f) => {
            let name = function_name(*f);
            REQUIRED_FUNCTIONS.contains(&name.as_str()).then_some(name)
        }
        _ => None,
    }
}

/// What to say about a module that lacks a required function.
fn required_text(function: &str) -> String {
    format!(
        "the module does not support {function}, which the PKCS#11 signer requires \
         (seed 001's list of required PKCS#11 functions)"
    )
}

/// `CKR_PIN_INCORRECT`, from cryptoki's `RvError::PinIncorrect`.
fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("vendor-defined CKR {code:#x}"),
        RvError::UnknownErrorCode(code) => format!("unknown CKR {code:#x}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// "C_Sign answered CKR_GENERAL_ERROR", or cryptoki's own words for other errors; a
/// required function the module lacks is said to be required.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => {
            let mut text = format!("{} answered {}", function_name(*f), rv_name(*rv));
            if let Some(function) = missing_required(e) {
                text = format!("{text}: {}", required_text(&function));
            }
            text
        }
        other => other.to_string(),
    }
}

/// Errors after which the session cannot be trusted: drop it and reconnect next time.
fn is_connection_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
    )
}

/// An error inside an operation, with whether the connection must be dropped.
struct OpError {
    error: SignerError,
    lost: bool,
}

impl From<SignerError> for OpError {
    fn from(error: SignerError) -> Self {
        Self { error, lost: false }
    }
}

/// Turns cryptoki results into [`OpError`]s, with what was being done.
trait CkContext<T> {
    fn ck(self, signer: &str, what: &str) -> Result<T, OpError>;
}

impl<T> CkContext<T> for Result<T, CkError> {
    fn ck(self, signer: &str, what: &str) -> Result<T, OpError> {
        self.map_err(|e| classify(signer, what, &e))
    }
}

/// The generic mapping of a PKCS#11 error; callers handle their special cases first.
fn classify(signer: &str, what: &str, e: &CkError) -> OpError {
    let text = format!("signer '{signer}': {what}: {}", describe(e));
    let CkError::Pkcs11(rv, _) = e else {
        return SignerError::backend(text).into();
    };
    if is_connection_lost(*rv) {
        return OpError {
            error: SignerError::unavailable(format!(
                "{text}; the session is dropped and the next call reconnects"
            )),
            lost: true,
        };
    }
    if missing_required(e).is_some() {
        return SignerError::unusable(text).into();
    }
    let kind = match rv {
        RvError::FunctionNotSupported
        | RvError::RandomNoRng
        | RvError::MechanismInvalid
        | RvError::CurveNotSupported => ErrorKind::Unsupported,
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    };
    SignerError::new(kind, text).into()
}

/// The most idle extra signing sessions a connection keeps.
const SPARE_SESSIONS: usize = 16;

/// A live connection, shared by the calls in flight: the primary session (every
/// operation; signs when it is free), extra sessions for concurrent signs, and the
/// handles of keys signed with so far.
struct Live {
    primary: Mutex<Connection>,
    module: Pkcs11,
    slot: Slot,
    spare: Mutex<Vec<Session>>,
    keys: Mutex<HashMap<KeyIdentifier, (ObjectHandle, KeyType)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection: the module, the slot, and the logged-in session.
struct Connection {
    module: Pkcs11,
    slot: Slot,
    token_label: String,
    session: Session,
    /// The module lacks C_DestroyObject and `force` is on: keys cannot be destroyed.
    no_destroy: bool,
}

/// The key-generation and signing mechanisms an algorithm needs.
fn mechanisms(alg: Algorithm) -> (MechanismType, MechanismType) {
    match alg {
        Algorithm::Rsa2048Pkcs1Sha256 => (
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS,
        ),
        Algorithm::Rsa2048PssSha256 => (
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS_PSS,
        ),
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
            (MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA)
        }
        Algorithm::Ed25519 => (
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            MechanismType::EDDSA,
        ),
    }
}

/// The key size (in bits, as PKCS#11 counts for RSA and EC) a key type needs.
fn key_bits(kt: KeyType) -> usize {
    match kt {
        KeyType::Rsa2048 => 2048,
        KeyType::EcP256 | KeyType::Ed25519 => 256,
        KeyType::EcP384 => 384,
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_len(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (n.len() - i - 1) * 8 + (8 - n[i].leading_zeros() as usize),
    }
}

/// What one key object says about itself: the attributes needed for its type and its
/// public key. Attributes the token does not have (or hides) are `None`.
#[derive(Default)]
struct KeyFacts {
    key_type: Option<CkKeyType>,
    modulus: Option<Vec<u8>>,
    exponent: Option<Vec<u8>>,
    ec_params: Option<Vec<u8>>,
    ec_point: Option<Vec<u8>>,
}

impl KeyFacts {
    fn read(session: &Session, handle: ObjectHandle) -> Result<Self, CkError> {
        let attrs = session.get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        )?;
        let mut facts = KeyFacts::default();
        for a in attrs {
            match a {
                Attribute::KeyType(t) => facts.key_type = Some(t),
                Attribute::Modulus(v) => facts.modulus = Some(v),
                Attribute::PublicExponent(v) => facts.exponent = Some(v),
                Attribute::EcParams(v) => facts.ec_params = Some(v),
                Attribute::EcPoint(v) => facts.ec_point = Some(v),
                _ => {}
            }
        }
        Ok(facts)
    }

    /// Our key type, `Ok(None)` when the object does not say enough (no modulus, no
    /// curve), or `Err` describing a key we do not handle.
    fn our_key_type(&self) -> Result<Option<KeyType>, String> {
        let Some(t) = self.key_type else {
            return Ok(None);
        };
        if t == CkKeyType::RSA {
            return match self.modulus.as_deref().map(bit_len) {
                None => Ok(None),
                Some(2048) => Ok(Some(KeyType::Rsa2048)),
                Some(bits) => Err(format!("an RSA-{bits} key")),
            };
        }
        let curve = self
            .ec_params
            .as_deref()
            .map(|p| (encoding::key_type_from_ec_params(p), hex::encode(p)));
        if t == CkKeyType::EC {
            return match curve {
                None => Ok(None),
                Some((Some(kt @ (KeyType::EcP256 | KeyType::EcP384)), _)) => Ok(Some(kt)),
                Some((_, hex)) => Err(format!("an EC key on a curve we do not handle ({hex})")),
            };
        }
        if t == CkKeyType::EC_EDWARDS {
            return match curve {
                None | Some((Some(KeyType::Ed25519), _)) => Ok(Some(KeyType::Ed25519)),
                Some((_, hex)) => Err(format!("an EdDSA key on another curve ({hex})")),
            };
        }
        Err(format!("a key of type {t}"))
    }

    /// The SubjectPublicKeyInfo, from a public key object's attributes.
    fn spki(&self) -> Result<Vec<u8>, SignerError> {
        let missing = |what: &str| {
            SignerError::backend(format!("the public key object has no readable {what}"))
        };
        match self.key_type {
            Some(t) if t == CkKeyType::RSA => {
                let n = self
                    .modulus
                    .as_deref()
                    .ok_or_else(|| missing("CKA_MODULUS"))?;
                let e = self
                    .exponent
                    .as_deref()
                    .ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
                if bit_len(n) == 0 || bit_len(e) == 0 {
                    return Err(SignerError::backend("the RSA public key is zero"));
                }
                Ok(rsa_spki_der(n, e))
            }
            Some(_) => {
                let kt = self
                    .our_key_type()
                    .map_err(|what| SignerError::unsupported(format!("the key is {what}")))?
                    .ok_or_else(|| missing("CKA_EC_PARAMS"))?;
                let point = self
                    .ec_point
                    .as_deref()
                    .ok_or_else(|| missing("CKA_EC_POINT"))?;
                match kt {
                    KeyType::Ed25519 => ed25519_spki_der(point),
                    curve => ec_spki_der(curve, point),
                }
            }
            None => Err(missing("CKA_KEY_TYPE")),
        }
    }
}

/// Attributes of a private key object, for tests that check how keys are made.
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivateKeyAttributes {
    pub token: Option<bool>,
    pub private: Option<bool>,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
    pub always_sensitive: Option<bool>,
    pub never_extractable: Option<bool>,
    pub sign: Option<bool>,
    pub id: Option<Vec<u8>>,
    pub label: Option<Vec<u8>>,
}

/// A signer whose keys live on a PKCS#11 token. See the module documentation for the
/// contract.
pub struct Pkcs11Signer {
    name: String,
    config: Pkcs11Config,
    conn: Mutex<Option<Arc<Live>>>,
    /// The first fatal connect error (a wrong PIN, a module that does not load): every
    /// later call answers it without touching the module, whoever calls (the router
    /// latches it too, but `info` may be asked directly), so a wrong PIN is tried once.
    fatal: Mutex<Option<SignerError>>,
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("name", &self.name)
            .field("lib_path", &self.config.lib_path)
            .field("slot", &self.config.slot)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// A signer for `config`. Loads nothing and connects to nothing: that happens on
    /// the first call that needs the token.
    pub fn new(name: &str, config: &Pkcs11Config) -> Self {
        Self {
            name: name.to_string(),
            config: config.clone(),
            conn: Mutex::new(None),
            fatal: Mutex::new(None),
        }
    }

    fn unavailable(&self, message: impl fmt::Display) -> SignerError {
        SignerError::unavailable(format!("signer '{}': {message}", self.name))
    }

    /// Fatal: retrying cannot help and may hurt (a wrong PIN retried locks tokens).
    fn unusable(&self, message: impl fmt::Display) -> SignerError {
        SignerError::unusable(format!("signer '{}': {message}", self.name))
    }

    /// The live connection, connecting first if needed (one thread connects; the
    /// others wait for it).
    fn live(&self) -> Result<Arc<Live>, SignerError> {
        let mut guard = lock(&self.conn);
        if let Some(live) = &*guard {
            return Ok(live.clone());
        }
        let mut fatal = lock(&self.fatal);
        if let Some(e) = &*fatal {
            return Err(e.clone());
        }
        match self.connect() {
            Ok(c) => {
                let live = Arc::new(Live {
                    module: c.module.clone(),
                    slot: c.slot,
                    primary: Mutex::new(c),
                    spare: Mutex::new(Vec::new()),
                    keys: Mutex::new(HashMap::new()),
                });
                *guard = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                if e.kind == ErrorKind::Unusable {
                    *fatal = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// Drops `live` (a lost session): the next call connects afresh.
    fn forget(&self, live: &Arc<Live>, error: &SignerError) {
        tracing::warn!(signer = %self.name, "dropping the PKCS#11 session: {error}");
        let mut guard = lock(&self.conn);
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, live)) {
            *guard = None;
        }
        lock(&live.keys).clear();
    }

    /// Runs `op` on the connection's primary session, connecting first if needed;
    /// drops the connection when `op` reports it lost.
    fn with_conn<T>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, OpError>,
    ) -> Result<T, SignerError> {
        let live = self.live()?;
        let conn = lock(&live.primary);
        match op(&conn) {
            Err(OpError { error, lost: true }) => {
                drop(conn);
                self.forget(&live, &error);
                Err(error)
            }
            other => other.map_err(|e| e.error),
        }
    }

    /// A connect-time failure: fatal when the module lacks a required function (it will
    /// not grow one on a retry), else transient.
    fn connect_error(&self, what: &str, e: &CkError) -> SignerError {
        if missing_required(e).is_some() {
            self.unusable(format!("{what}: {}", describe(e)))
        } else {
            self.unavailable(format!("{what}: {}", describe(e)))
        }
    }

    /// A required function the signer can do without: `Ok` with a warning under
    /// `force`, else the connect error.
    fn forced(&self, what: &str, e: &CkError) -> Result<(), SignerError> {
        if missing_required(e).is_some() && self.config.force {
            tracing::warn!(
                signer = %self.name,
                "{what}: {}; going on because force = true",
                describe(e)
            );
            return Ok(());
        }
        Err(self.connect_error(what, e))
    }

    /// Loads the module, finds the slot, opens a R/W session, logs in and probes the
    /// object functions (see the module documentation).
    fn connect(&self) -> Result<Connection, SignerError> {
        let path = &self.config.lib_path;
        // A module that does not load will not load on a retry either.
        let module = module(path).map_err(|e| self.unusable(e))?;
        match module.get_library_info() {
            Ok(info) => tracing::debug!(
                signer = %self.name,
                library = %info.library_description(),
                version = %info.library_version(),
                "module information (C_GetInfo)"
            ),
            Err(e) => self.forced("reading the library information", &e)?,
        }
        let slots = match module.get_slots_with_token() {
            // Someone finalised the module behind our back: initialise again, once.
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                initialize(&module).map_err(|e| self.unavailable(describe(&e)))?;
                module.get_slots_with_token()
            }
            other => other,
        }
        .map_err(|e| self.connect_error("listing slots", &e))?;

        let (slot, token) = self.find_slot(&module, &slots)?;
        match module.get_slot_info(slot) {
            Ok(info) => tracing::debug!(
                signer = %self.name,
                slot = %slot,
                description = %info.slot_description(),
                "slot information (C_GetSlotInfo)"
            ),
            Err(e) => self.forced(&format!("reading the information of slot {slot}"), &e)?,
        }
        let session = module.open_rw_session(slot).map_err(|e| {
            self.connect_error(
                &format!("opening a session on token '{}'", token.label()),
                &e,
            )
        })?;
        if self.config.login {
            self.login(&session, &token)?;
        }
        let no_destroy = !self.probe(&session)?;
        tracing::debug!(signer = %self.name, slot = %slot, token = token.label(), "connected");
        Ok(Connection {
            module,
            slot,
            token_label: token.label().to_string(),
            session,
            no_destroy,
        })
    }

    /// The connect-time probe: finds, creates, reads, finds again and destroys one
    /// session object, so that a module without C_FindObjects*, C_GetAttributeValue or
    /// C_DestroyObject is found out before the signer is used. `Ok(false)`: the module
    /// has no C_DestroyObject and `force` is on.
    fn probe(&self, session: &Session) -> Result<bool, SignerError> {
        let what = "probing the object functions with a session object";
        let search = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(PROBE_LABEL.as_bytes().to_vec()),
        ];
        // A search the module did not end (C_FindObjectsFinal missing) shows in the
        // next C_FindObjectsInit.
        let find = |session: &Session| match session.find_objects(&search) {
            Err(CkError::Pkcs11(RvError::OperationActive, Function::FindObjectsInit)) => Err(self
                .unusable(format!(
                    "{what}: C_FindObjectsInit answered CKR_OPERATION_ACTIVE after a \
                     search: the search was not ended, C_FindObjectsFinal failed; {}",
                    required_text("C_FindObjectsFinal")
                ))),
            Err(e) => Err(self.connect_error(what, &e)),
            Ok(found) => Ok(found),
        };
        find(session)?;
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Label(PROBE_LABEL.as_bytes().to_vec()),
        ];
        let object = match session.create_object(&template) {
            Ok(h) => h,
            Err(e) => {
                find(session)?;
                tracing::warn!(
                    signer = %self.name,
                    "{what}: {}; C_DestroyObject is not probed (destroying a key will \
                     find out)",
                    describe(&e)
                );
                return Ok(true);
            }
        };
        let read = session.get_attributes(object, &[AttributeType::Label]);
        let found = find(session);
        let destroyed = session.destroy_object(object);
        read.map_err(|e| self.connect_error(what, &e))?;
        if !found?.contains(&object) {
            tracing::warn!(signer = %self.name, "{what}: the search did not find the new object");
        }
        match destroyed {
            Ok(()) => {
                tracing::debug!(
                    signer = %self.name,
                    "probe: C_FindObjects*, C_CreateObject, C_GetAttributeValue and \
                     C_DestroyObject work"
                );
                Ok(true)
            }
            Err(e) if missing_required(&e).is_some() => {
                self.forced(what, &e)?;
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(signer = %self.name, "{what}: {}", describe(&e));
                Ok(true)
            }
        }
    }

    fn find_slot(
        &self,
        module: &Pkcs11,
        slots: &[Slot],
    ) -> Result<(Slot, cryptoki::slot::TokenInfo), SignerError> {
        let lib = self.config.lib_path.display();
        let mut seen = Vec::new();
        for &slot in slots {
            match module.get_token_info(slot) {
                Ok(info) => {
                    let wanted = match &self.config.slot {
                        SlotSelector::Id(id) => slot.id() == *id,
                        SlotSelector::Label(label) => info.label() == label,
                    };
                    if wanted {
                        return Ok((slot, info));
                    }
                    seen.push(format!("'{}' (slot {:#x})", info.label(), slot.id()));
                }
                Err(e) if missing_required(&e).is_some() => {
                    return Err(self.connect_error("reading the token information", &e));
                }
                Err(e) => {
                    seen.push(format!("slot {:#x}: {}", slot.id(), describe(&e)));
                }
            }
        }
        let seen = if seen.is_empty() {
            "no slot has a token".to_string()
        } else {
            format!("tokens seen: {}", seen.join(", "))
        };
        Err(self.unavailable(format!(
            "no token with {} in {lib} ({seen})",
            self.config.slot
        )))
    }

    fn login(
        &self,
        session: &Session,
        token: &cryptoki::slot::TokenInfo,
    ) -> Result<(), SignerError> {
        let pin = match &self.config.user_pin {
            Some(secret) => Some(secret.resolve()?),
            None if token.protected_authentication_path() => None,
            None => {
                return Err(SignerError::config(format!(
                    "signer '{}': login is on but no user_pin is configured \
                     (token '{}' has no protected authentication path)",
                    self.name,
                    token.label()
                )))
            }
        };
        let label = token.label();
        match session.login(UserType::User, pin.as_ref()) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(self.unusable(format!(
                "token '{label}' refused the login: wrong PIN (CKR_PIN_INCORRECT; \
                     PIN from {})",
                self.pin_source()
            ))),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(self.unusable(format!(
                "token '{label}' refused the login: the user PIN is locked (CKR_PIN_LOCKED)"
            ))),
            Err(CkError::Pkcs11(rv @ (RvError::PinLenRange | RvError::PinInvalid), _)) => Err(self
                .unusable(format!(
                    "token '{label}' refused the login: the PIN from {} is not a valid PIN \
                     for this token ({})",
                    self.pin_source(),
                    rv_name(rv)
                ))),
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => Err(self.unavailable(
                format!("token '{label}' has no user PIN set (CKR_USER_PIN_NOT_INITIALIZED)"),
            )),
            Err(e) => Err(self.connect_error(&format!("logging in to token '{label}'"), &e)),
        }
    }

    /// Where the PIN comes from, never the PIN.
    fn pin_source(&self) -> String {
        self.config.user_pin.as_ref().map_or_else(
            || "the protected authentication path".into(),
            |s| s.to_string(),
        )
    }

    /// The objects of `class` with CKA_ID = `key`.
    fn find(
        &self,
        session: &Session,
        class: ObjectClass,
        key: &KeyIdentifier,
    ) -> Result<Vec<ObjectHandle>, OpError> {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(key.as_bytes().to_vec()),
            ])
            .ck(&self.name, &format!("finding {class} objects of key {key}"))
    }

    fn private_key(&self, session: &Session, key: &KeyIdentifier) -> Result<ObjectHandle, OpError> {
        self.find(session, ObjectClass::PRIVATE_KEY, key)?
            .into_iter()
            .next()
            .ok_or_else(|| SignerError::key_not_found(&self.name, key).into())
    }

    /// The key type of `key`, from its private object, or its public object when the
    /// private one does not say (hidden modulus, no EC params).
    fn key_type_of(
        &self,
        session: &Session,
        key: &KeyIdentifier,
        private: ObjectHandle,
    ) -> Result<KeyType, OpError> {
        let what = format!("reading the attributes of key {key}");
        let unhandled =
            |w: String| OpError::from(SignerError::unsupported(format!("key {key} is {w}")));
        let facts = KeyFacts::read(session, private).ck(&self.name, &what)?;
        if let Some(kt) = facts.our_key_type().map_err(unhandled)? {
            return Ok(kt);
        }
        for public in self.find(session, ObjectClass::PUBLIC_KEY, key)? {
            let facts = KeyFacts::read(session, public).ck(&self.name, &what)?;
            if let Some(kt) = facts.our_key_type().map_err(unhandled)? {
                return Ok(kt);
            }
        }
        // An RSA key that hides its modulus everywhere: the token will judge the size.
        if facts.key_type == Some(CkKeyType::RSA) {
            return Ok(KeyType::Rsa2048);
        }
        Err(SignerError::backend(format!(
            "signer '{}': cannot tell the type of key {key} from its attributes",
            self.name
        ))
        .into())
    }

    /// Signs on `s` with `key`'s remembered handle, or looks the key up (and
    /// remembers it) when there is none or the module calls it invalid.
    fn sign_on(
        &self,
        live: &Live,
        s: &Session,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, OpError> {
        let known = lock(&live.keys).get(key).copied();
        if let Some((private, kt)) = known {
            match self.sign_with(s, key, private, kt, alg, data) {
                // Destroyed or replaced behind our back: look it up again.
                Err(e) if !e.lost && e.error.kind == ErrorKind::NotFound => {
                    lock(&live.keys).remove(key);
                }
                other => return other,
            }
        }
        let private = self.private_key(s, key)?;
        let kt = self.key_type_of(s, key, private)?;
        lock(&live.keys).insert(*key, (private, kt));
        self.sign_with(s, key, private, kt, alg, data)
    }

    /// Signs with the private key object `private` of type `kt`.
    fn sign_with(
        &self,
        s: &Session,
        key: &KeyIdentifier,
        private: ObjectHandle,
        kt: KeyType,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, OpError> {
        if kt != alg.key_type() {
            return Err(SignerError::invalid_input(format!(
                "key {key} is a {kt} key; {alg} needs a {} key",
                alg.key_type()
            ))
            .into());
        }
        let what = format!("signing with key {key} ({alg})");
        match alg {
            Algorithm::Rsa2048Pkcs1Sha256 => s
                .sign(&Mechanism::Sha256RsaPkcs, private, data)
                .ck(&self.name, &what),
            Algorithm::Rsa2048PssSha256 => {
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                };
                match s.sign(&Mechanism::Sha256RsaPkcsPss(params), private, data) {
                    // Hash here and sign with the bare PSS mechanism.
                    Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {
                        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
                        s.sign(&Mechanism::RsaPkcsPss(params), private, digest.as_ref())
                            .ck(&self.name, &what)
                    }
                    other => other.ck(&self.name, &what),
                }
            }
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => {
                let (digest_alg, field) = if alg == Algorithm::EcdsaP256Sha256 {
                    (&aws_lc_rs::digest::SHA256, 32)
                } else {
                    (&aws_lc_rs::digest::SHA384, 48)
                };
                let digest = aws_lc_rs::digest::digest(digest_alg, data);
                let raw = s
                    .sign(&Mechanism::Ecdsa, private, digest.as_ref())
                    .ck(&self.name, &what)?;
                if raw.len() != 2 * field && !encoding::is_der_ecdsa_signature(&raw) {
                    return Err(SignerError::backend(format!(
                        "signer '{}': {what}: the token returned {} bytes, expected \
                         r||s of {} bytes",
                        self.name,
                        raw.len(),
                        2 * field
                    ))
                    .into());
                }
                Ok(encoding::ecdsa_raw_to_der(&raw)?)
            }
            Algorithm::Ed25519 => {
                let params = EddsaParams::new(EddsaSignatureScheme::Pure);
                s.sign(&Mechanism::Eddsa(params), private, data)
                    .ck(&self.name, &what)
            }
        }
    }

    fn generate(
        &self,
        session: &Session,
        alg: Algorithm,
    ) -> Result<(ObjectHandle, ObjectHandle), OpError> {
        let label = || Attribute::Label(KEY_LABEL.as_bytes().to_vec());
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            // Signing keys only: the module's defaults may allow more.
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            label(),
        ];
        let public_base = || {
            vec![
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
                label(),
            ]
        };
        let what = format!("generating a {} key pair", alg.key_type());
        match alg.key_type() {
            KeyType::Rsa2048 => {
                let mut public = public_base();
                public.push(Attribute::ModulusBits(2048.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                session
                    .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                    .ck(&self.name, &what)
            }
            kt @ (KeyType::EcP256 | KeyType::EcP384) => {
                let mut public = public_base();
                let params = encoding::ec_params_der(kt).unwrap_or_default();
                public.push(Attribute::EcParams(params.to_vec()));
                session
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                    .ck(&self.name, &what)
            }
            KeyType::Ed25519 => {
                // PKCS#11 3.0 names the curve by OID or by the PrintableString
                // "edwards25519"; tokens differ in which they take. Try the OID first.
                let mut last = None;
                for params in [encoding::OID_ED25519, encoding::EC_PARAMS_EDWARDS25519_NAME] {
                    let mut public = public_base();
                    public.push(Attribute::EcParams(params.to_vec()));
                    match session.generate_key_pair(
                        &Mechanism::EccEdwardsKeyPairGen,
                        &public,
                        &private,
                    ) {
                        Ok(pair) => return Ok(pair),
                        Err(
                            e @ CkError::Pkcs11(
                                RvError::AttributeValueInvalid
                                | RvError::CurveNotSupported
                                | RvError::DomainParamsInvalid
                                | RvError::TemplateInconsistent,
                                _,
                            ),
                        ) => last = Some(e),
                        Err(e) => return Err(classify(&self.name, &what, &e)),
                    }
                }
                Err(match last {
                    Some(e) => classify(&self.name, &what, &e),
                    None => SignerError::backend(what).into(),
                })
            }
        }
    }

    /// After generation: read the public key, compute the identifier, set CKA_ID on
    /// both halves.
    fn finish_key(
        &self,
        session: &Session,
        public: ObjectHandle,
        private: ObjectHandle,
    ) -> Result<CreatedKey, OpError> {
        let facts = KeyFacts::read(session, public).ck(&self.name, "reading the new public key")?;
        let spki = facts.spki()?;
        let id = KeyIdentifier::from_spki_der(&spki)
            .map_err(|e| SignerError::backend(format!("the new public key is not usable: {e}")))?;
        let set_id = [Attribute::Id(id.as_bytes().to_vec())];
        for (half, handle) in [("public", public), ("private", private)] {
            session
                .update_attributes(handle, &set_id)
                .ck(&self.name, &format!("setting CKA_ID on the new {half} key"))?;
        }
        Ok(CreatedKey {
            id,
            public_key: spki,
            // CKA_ID is the key identifier: found by it, so the handle is the same.
            handle: id.to_string(),
        })
    }

    /// Attributes of the private half of `key`, for tests.
    #[doc(hidden)]
    pub fn private_key_attributes(
        &self,
        key: &KeyIdentifier,
    ) -> Result<PrivateKeyAttributes, SignerError> {
        self.with_conn(|c| {
            let handle = self.private_key(&c.session, key)?;
            let attrs = c
                .session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Sign,
                        AttributeType::Id,
                        AttributeType::Label,
                    ],
                )
                .ck(&self.name, &format!("reading the attributes of key {key}"))?;
            let mut out = PrivateKeyAttributes::default();
            for a in attrs {
                match a {
                    Attribute::Token(b) => out.token = Some(b),
                    Attribute::Private(b) => out.private = Some(b),
                    Attribute::Sensitive(b) => out.sensitive = Some(b),
                    Attribute::Extractable(b) => out.extractable = Some(b),
                    Attribute::AlwaysSensitive(b) => out.always_sensitive = Some(b),
                    Attribute::NeverExtractable(b) => out.never_extractable = Some(b),
                    Attribute::Sign(b) => out.sign = Some(b),
                    Attribute::Id(v) => out.id = Some(v),
                    Attribute::Label(v) => out.label = Some(v),
                    _ => {}
                }
            }
            Ok(out)
        })
    }
}

impl Signer for Pkcs11Signer {
    fn name(&self) -> &str {
        &self.name
    }

    /// Library (C_GetInfo), slot and token facts; connects if needed.
    fn info(&self) -> Result<SignerInfo, SignerError> {
        self.with_conn(|c| {
            let lib = match c.module.get_library_info() {
                // Only with force: without, the connect refused the module.
                Err(e) if missing_required(&e).is_some() && self.config.force => None,
                other => Some(other.ck(&self.name, "reading the library information")?),
            };
            let token = c
                .module
                .get_token_info(c.slot)
                .ck(&self.name, "reading the token information")?;
            let mut details = vec![("lib_path", self.config.lib_path.display().to_string())];
            if let Some(lib) = lib {
                details.extend([
                    ("library", lib.library_description().to_string()),
                    ("library_version", lib.library_version().to_string()),
                    ("library_manufacturer", lib.manufacturer_id().to_string()),
                    ("cryptoki_version", lib.cryptoki_version().to_string()),
                ]);
            }
            if c.no_destroy {
                details.push(("missing_functions_forced", "C_DestroyObject".to_string()));
            }
            details.extend([
                ("slot", format!("{:#x}", c.slot.id())),
                ("token_label", c.token_label.clone()),
                ("token_manufacturer", token.manufacturer_id().to_string()),
                ("token_model", token.model().to_string()),
                ("token_serial", token.serial_number().to_string()),
                ("firmware_version", token.firmware_version().to_string()),
                ("hardware_version", token.hardware_version().to_string()),
            ]);
            Ok(SignerInfo {
                name: self.name.clone(),
                signer_type: "PKCS#11".into(),
                details: details
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
        })
    }

    /// True when the slot's mechanism list (C_GetMechanismList) has both the
    /// key-generation and the signing mechanism `alg` needs, and the key-generation
    /// mechanism's key size range (when the token gives one) holds the key size.
    fn supports(&self, alg: Algorithm) -> Result<bool, SignerError> {
        self.with_conn(|c| {
            let list = c
                .module
                .get_mechanism_list(c.slot)
                .ck(&self.name, "listing the token's mechanisms")?;
            let (keygen, sign) = mechanisms(alg);
            let signs = list.contains(&sign)
                || (alg == Algorithm::Rsa2048PssSha256
                    && list.contains(&MechanismType::RSA_PKCS_PSS));
            if !list.contains(&keygen) || !signs {
                return Ok(false);
            }
            // A token that cannot describe the mechanism gets the benefit of the doubt.
            let Ok(info) = c.module.get_mechanism_info(c.slot, keygen) else {
                return Ok(true);
            };
            let bits = key_bits(alg.key_type());
            let (min, max) = (info.min_key_size(), info.max_key_size());
            Ok(min == 0 && max == 0 || (min..=max).contains(&bits))
        })
    }

    /// C_GenerateKeyPair, then CKA_ID := the key identifier on both halves. When
    /// anything after generation fails, both halves are destroyed again.
    fn create_key(&self, alg: Algorithm) -> Result<CreatedKey, SignerError> {
        self.with_conn(|c| {
            let (public, private) = self.generate(&c.session, alg)?;
            self.finish_key(&c.session, public, private)
                .inspect_err(|e| {
                    for (half, handle) in [("public", public), ("private", private)] {
                        if let Err(d) = c.session.destroy_object(handle) {
                            tracing::warn!(
                                signer = %self.name,
                                "could not destroy the {half} half of a failed new key ({}) \
                                 after: {}",
                                describe(&d),
                                e.error
                            );
                        }
                    }
                })
        })
    }

    /// The SPKI rebuilt from the public key object (CKA_MODULUS and
    /// CKA_PUBLIC_EXPONENT, or CKA_EC_PARAMS and CKA_EC_POINT). A key without a public
    /// object is NotFound.
    fn public_key(&self, key: &KeyIdentifier) -> Result<Vec<u8>, SignerError> {
        self.with_conn(|c| {
            let public = self
                .find(&c.session, ObjectClass::PUBLIC_KEY, key)?
                .into_iter()
                .next()
                .ok_or_else(|| SignerError::key_not_found(&self.name, key))?;
            let facts = KeyFacts::read(&c.session, public)
                .ck(&self.name, &format!("reading the public key of {key}"))?;
            Ok(facts.spki()?)
        })
    }

    fn sign(
        &self,
        key: &KeyIdentifier,
        alg: Algorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let live = self.live()?;
        // The primary session when it is free (always, for a caller on one thread);
        // else a spare one, so concurrent signs run side by side.
        let primary = match live.primary.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(conn) = primary {
            let result = self.sign_on(&live, &conn.session, key, alg, data);
            drop(conn);
            return match result {
                Err(OpError { error, lost: true }) => {
                    self.forget(&live, &error);
                    Err(error)
                }
                other => other.map_err(|e| e.error),
            };
        }
        let spare = lock(&live.spare).pop();
        let session = match spare {
            Some(s) => s,
            None => live.module.open_rw_session(live.slot).map_err(|e| {
                let e = classify(&self.name, "opening another session to sign", &e);
                if e.lost {
                    self.forget(&live, &e.error);
                }
                e.error
            })?,
        };
        match self.sign_on(&live, &session, key, alg, data) {
            Err(OpError { error, lost: true }) => {
                drop(session);
                self.forget(&live, &error);
                Err(error)
            }
            other => {
                let mut spare = lock(&live.spare);
                if spare.len() < SPARE_SESSIONS {
                    spare.push(session);
                }
                other.map_err(|e| e.error)
            }
        }
    }

    /// Destroys every private and public key object with the key's CKA_ID. Unsupported
    /// when the module has no C_DestroyObject (only with `force`).
    fn destroy_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        if let Some(live) = lock(&self.conn).as_ref() {
            lock(&live.keys).remove(key);
        }
        self.with_conn(|c| {
            if c.no_destroy {
                return Err(SignerError::unsupported(format!(
                    "signer '{}': cannot destroy key {key}: the module does not support \
                     C_DestroyObject (found at connect; the signer goes on without it \
                     because force = true)",
                    self.name
                ))
                .into());
            }
            let mut objects = self.find(&c.session, ObjectClass::PRIVATE_KEY, key)?;
            objects.extend(self.find(&c.session, ObjectClass::PUBLIC_KEY, key)?);
            if objects.is_empty() {
                return Err(SignerError::key_not_found(&self.name, key).into());
            }
            for handle in objects {
                c.session
                    .destroy_object(handle)
                    .ck(&self.name, &format!("destroying key {key}"))?;
            }
            Ok(())
        })
    }

    /// C_GenerateRandom. A token without a generator (CKR_RANDOM_NO_RNG,
    /// CKR_FUNCTION_NOT_SUPPORTED) is Unsupported; more than 2^32-1 bytes at once is
    /// InvalidInput.
    fn random(&self, len: usize) -> Result<Vec<u8>, SignerError> {
        let n = u32::try_from(len).map_err(|_| {
            SignerError::invalid_input(format!("{len} random bytes is more than one request"))
        })?;
        if n == 0 {
            return Ok(Vec::new());
        }
        self.with_conn(|c| {
            c.session
                .generate_random_vec(n)
                .ck(&self.name, &format!("generating {n} random bytes"))
        })
    }

    /// The distinct 20-byte CKA_IDs of the private key objects, sorted. Objects with
    /// other IDs (keys this harness did not make) are left out.
    fn list_keys(&self) -> Result<Vec<KeyIdentifier>, SignerError> {
        self.with_conn(|c| {
            let what = "listing private keys";
            let handles = c
                .session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .ck(&self.name, what)?;
            let mut keys = Vec::new();
            for h in handles {
                let attrs = c
                    .session
                    .get_attributes(h, &[AttributeType::Id])
                    .ck(&self.name, what)?;
                for a in attrs {
                    if let Attribute::Id(id) = a {
                        if let Ok(bytes) = <[u8; 20]>::try_from(id.as_slice()) {
                            keys.push(KeyIdentifier::from_bytes(bytes));
                        }
                    }
                }
            }
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    #[test]
    fn return_values_get_their_ckr_names() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(
            rv_name(RvError::VendorDefined(0x8000_0001)),
            "vendor-defined CKR 0x80000001"
        );
        assert_eq!(function_name(Function::GenerateRandom), "C_GenerateRandom");
    }

    #[test]
    fn errors_are_classified() {
        let e = |rv| CkError::Pkcs11(rv, Function::Sign);
        let c = classify("s", "signing", &e(RvError::SessionHandleInvalid));
        assert!(c.lost);
        assert_eq!(c.error.kind, ErrorKind::Unavailable);
        let c = classify("s", "random", &e(RvError::RandomNoRng));
        assert_eq!((c.error.kind, c.lost), (ErrorKind::Unsupported, false));
        let c = classify("s", "signing", &e(RvError::GeneralError));
        assert_eq!(c.error.kind, ErrorKind::Backend);
        assert!(
            c.error
                .message
                .contains("C_Sign answered CKR_GENERAL_ERROR"),
            "{}",
            c.error
        );
    }

    #[test]
    fn a_missing_required_function_is_unusable_and_named() {
        for f in [Function::Login, Function::SignInit, Function::DestroyObject] {
            let c = classify(
                "s",
                "doing",
                &CkError::Pkcs11(RvError::FunctionNotSupported, f),
            );
            assert_eq!(c.error.kind, ErrorKind::Unusable, "{}", c.error);
            let name = function_name(f);
            assert!(
                c.error.message.contains(&format!(
                    "does not support {name}, which the PKCS#11 signer requires"
                )),
                "{}",
                c.error
            );
        }
        // Not in seed 001's table: the operation is unsupported, the signer is fine.
        for f in [Function::GenerateRandom, Function::GetMechanismList] {
            let c = classify(
                "s",
                "doing",
                &CkError::Pkcs11(RvError::FunctionNotSupported, f),
            );
            assert_eq!(c.error.kind, ErrorKind::Unsupported, "{}", c.error);
            assert!(!c.error.message.contains("requires"), "{}", c.error);
        }
        for name in REQUIRED_FUNCTIONS {
            assert!(name.starts_with("C_"));
        }
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[0, 1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        let mut n = vec![0u8; 257];
        n[1] = 0xc5;
        assert_eq!(bit_len(&n), 2048);
    }

    #[test]
    fn new_touches_nothing_and_a_missing_module_is_unusable() {
        let config = Pkcs11Config {
            lib_path: PathBuf::from("/nonexistent/libnothing-pkcs11.so"),
            slot: SlotSelector::Label("x".into()),
            user_pin: Some(Secret::Literal("123456".into())),
            login: true,
            force: false,
        };
        let signer = Pkcs11Signer::new("missing", &config);
        assert_eq!(signer.name(), "missing");
        let e = signer.random(4).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unusable);
        assert!(
            e.message.contains("/nonexistent/libnothing-pkcs11.so"),
            "{e}"
        );
        assert!(!e.message.contains("123456"), "{e}");
        // Still no module: the failure is not cached as success.
        assert_eq!(signer.list_keys().unwrap_err().kind, ErrorKind::Unusable);
    }
}
