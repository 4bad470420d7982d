//! SoftHSMv2 tokens as the harness administers them, through PKCS#11 sessions of its
//! own beside the signer under test (as an operator with pkcs11-tool would): a token
//! directory per cell, fresh tokens with random labels and PINs, wipes, PIN changes,
//! inventories and impostor keys. Used by every provider that keeps keys on a
//! SoftHSMv2 token (`softhsm`, and `relay` behind its KMIP server).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_signers::{Algorithm, KeyIdentifier, KeyType, Secret};
use oracle::public_key::{self, Curve};

use super::container;
use super::server::Runtime;
use super::shim::{self, ShimSpec};
use super::{log_line, random_hex};
use crate::oracle_terms;

/// Where Debian and other systems put the SoftHSMv2 module.
pub const SOFTHSM_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSMv2 module: `configured` if given (it must exist), else the first of
/// [`SOFTHSM_MODULE_PATHS`] that exists. The error says what to install.
pub fn softhsm_module(configured: Option<&Path>) -> Result<PathBuf, String> {
    match configured {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => Err(format!(
            "SoftHSMv2 module {} not found (install softhsm2)",
            p.display()
        )),
        None => SOFTHSM_MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                format!(
                    "SoftHSMv2 module not found in {} (install softhsm2)",
                    SOFTHSM_MODULE_PATHS.join(", ")
                )
            }),
    }
}

pub(crate) fn ck(what: &str) -> impl Fn(CkError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e}")
}

/// One cell's SoftHSMv2 module: a token directory of the cell's own, and the PKCS#11
/// shim the signers may load in front of the module.
pub struct Module {
    real: PathBuf,
    workdir: PathBuf,
    /// The shim library, once [`Module::use_shim`] put it in front.
    shim: Option<PathBuf>,
    /// The container serving the cell's tokens, under a container runtime.
    container: Option<container::Running>,
    /// The shim's settings in force, and how often it was told to reconnect.
    shim_spec: Option<ShimSpec>,
    reconnects: u64,
}

impl Module {
    /// The cell's SoftHSMv2: locally, the module with `SOFTHSM2_CONF` pointing at a
    /// token directory in `workdir`; under a container runtime, a `softhsm2` container
    /// serving its tokens on a socket in `workdir`, reached through p11-kit's client
    /// module (`P11_KIT_SERVER_ADDRESS`). Either way the environment is set here, so
    /// this must run before the module is first loaded in this process.
    pub fn prepare(
        configured: Option<&Path>,
        workdir: &Path,
        runtime: &Runtime,
    ) -> anyhow::Result<Module> {
        if let Some(engine) = runtime.engine() {
            if let Some(m) = configured {
                bail!(
                    "module {} is for local runs: under the container provider the module is the softhsm2 image's",
                    m.display()
                );
            }
            let real = container::p11_kit_client().map_err(|e| anyhow!(e))?;
            let dir = workdir.join("softhsm");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let socket = dir.join("p11-kit.sock");
            let running = container::start_softhsm(engine, &socket)?;
            // Read by p11-kit's client on its first load, here or in a relay's
            // container (which gets it forwarded).
            std::env::set_var(
                "P11_KIT_SERVER_ADDRESS",
                format!("unix:path={}", socket.display()),
            );
            return Ok(Module {
                real,
                workdir: workdir.to_path_buf(),
                shim: None,
                container: Some(running),
                shim_spec: None,
                reconnects: 0,
            });
        }
        let real = softhsm_module(configured).map_err(|e| anyhow!(e))?;
        let dir = workdir.join("softhsm");
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .with_context(|| format!("creating {}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        // SoftHSMv2 reads its configuration from the environment only; the relay
        // inherits it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Ok(Module {
            real,
            workdir: workdir.to_path_buf(),
            shim: None,
            container: None,
            shim_spec: None,
            reconnects: 0,
        })
    }

    /// Any other PKCS#11 module at `path`, as it is: nothing in the environment is
    /// set here (an external module reads its own configuration), and no token is
    /// made ([`Module::new_token`] is for SoftHSMv2 only). The shim can go in front.
    pub fn external(path: &Path, workdir: &Path) -> Module {
        Module {
            real: path.to_path_buf(),
            workdir: workdir.to_path_buf(),
            shim: None,
            container: None,
            shim_spec: None,
            reconnects: 0,
        }
    }

    /// The real module (the harness's own sessions always use it).
    pub fn path(&self) -> &Path {
        &self.real
    }

    /// The module the signers load: the shim when there is one, else the real module.
    pub fn signer_module(&self) -> PathBuf {
        self.shim.clone().unwrap_or_else(|| self.real.clone())
    }

    /// The shim library in front, if any.
    pub fn shim_library(&self) -> Option<&Path> {
        self.shim.as_deref()
    }

    /// Loads the real module in this process.
    pub fn p11(&self) -> anyhow::Result<Pkcs11> {
        hsm_signers::pkcs11::module(&self.real).map_err(|e| anyhow!(e))
    }

    /// Puts the PKCS#11 shim, with `spec`'s settings, in front of the module for the
    /// signers of this cell: the PKCS#11 signer (in this process) or the relay (in its
    /// own) loads `libp11shim.so`, which forwards to the real module and traces to
    /// [`shim::TRACE_FILE`] in the work directory.
    pub fn use_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        let library = shim::library().map_err(|e| anyhow!(e))?;
        let dir = self.workdir.join("shim");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("p11shim.toml");
        let trace = self.workdir.join(shim::TRACE_FILE);
        std::fs::write(&config, spec.config(&self.real, Some(&trace)).to_toml())
            .with_context(|| format!("writing {}", config.display()))?;
        self.shim_spec = Some(spec.clone());
        // Read by the shim on its first C_GetFunctionList, here or in a relay process
        // (which inherits it).
        std::env::set_var(p11shim::config::CONFIG_VAR, &config);
        log_line(format!(
            "  PKCS#11 shim {} in front of {}{}",
            library.display(),
            self.real.display(),
            if spec.is_transparent() {
                " (nothing injected)".to_string()
            } else {
                format!(
                    " (hidden mechanisms: [{}]; rules: {})",
                    spec.hide_mechanisms.join(", "),
                    spec.rules.len()
                )
            }
        ));
        self.shim = Some(library);
        Ok(())
    }

    /// Replaces the running shim's settings: the file is written anew (atomically), and
    /// the shim reads it on its next call, in this process or the relay's.
    pub fn update_shim(&mut self, spec: &ShimSpec) -> anyhow::Result<()> {
        if self.shim.is_none() {
            anyhow::bail!("this cell's signers do not run through the PKCS#11 shim");
        }
        self.shim_spec = Some(spec.clone());
        self.rewrite_shim_config()?;
        log_line(format!(
            "  PKCS#11 shim settings now: hidden mechanisms [{}]; rules: {}",
            spec.hide_mechanisms.join(", "),
            spec.rules.len()
        ));
        Ok(())
    }

    /// Writes the shim's configuration anew (atomically) from the settings in force.
    fn rewrite_shim_config(&self) -> anyhow::Result<()> {
        let Some(spec) = &self.shim_spec else {
            return Ok(());
        };
        let dir = self.workdir.join("shim");
        let config = dir.join("p11shim.toml");
        let trace = self.workdir.join(shim::TRACE_FILE);
        let tmp = dir.join("p11shim.toml.tmp");
        let mut c = spec.config(&self.real, Some(&trace));
        c.reconnect = self.reconnects;
        std::fs::write(&tmp, c.to_toml()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &config).with_context(|| format!("replacing {}", config.display()))
    }

    /// What a restarted signer process would get: a module connection of its own made
    /// now. Only the signers' shim in front of a container's p11-kit client needs it
    /// (that connection's view of tokens and PINs is fixed when it connects; the
    /// harness's own sessions and unshimmed signers share one connection, and a local
    /// module is one instance for everybody), so only there is the shim told to
    /// reconnect its module.
    pub fn renew_signer_connection(&mut self) -> anyhow::Result<()> {
        if self.container.is_none() || self.shim.is_none() {
            return Ok(());
        }
        self.reconnects += 1;
        self.rewrite_shim_config()?;
        log_line("  the shim reconnects its p11-kit client on the next call".to_string());
        Ok(())
    }

    /// The shim's trace of this cell, when the signers run through the shim.
    pub fn trace_path(&self) -> Option<PathBuf> {
        self.shim
            .as_ref()
            .map(|_| self.workdir.join(shim::TRACE_FILE))
    }

    /// Whether the tokens are served from a container (the shim library must then be
    /// mounted into a relay's container).
    pub fn in_container(&self) -> bool {
        self.container.is_some()
    }

    /// Facts for the report: the module and the shim.
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut props = vec![("module".to_string(), self.real.display().to_string())];
        if self.container.is_some() {
            props.push((
                "softhsm_container".to_string(),
                "softhsm2 image through p11-kit server".to_string(),
            ));
        }
        if let Some(s) = &self.shim {
            props.push(("pkcs11_shim".to_string(), s.display().to_string()));
        }
        props
    }

    /// A fresh token with a random label and PINs for instance `name`; the user PIN
    /// goes to a file of the cell's own (mode 0600) that the signer configuration
    /// names: never argv, logs or the environment (which server processes inherit).
    pub fn new_token(&self, name: &str) -> anyhow::Result<Token> {
        let label = format!("hsm-harness-{name}-{}", random_hex(3));
        let so_pin = random_hex(8);
        let user_pin = random_hex(8);
        let p11 = self.p11()?;
        let slot = free_slot(&p11)?;
        init_token(&p11, slot, &label, &so_pin, &user_pin)?;
        let pins = self.workdir.join("softhsm").join("pins");
        std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
        let token = Token {
            module: self.real.clone(),
            label,
            so_pin,
            user_pin,
            pin_file: pins.join(format!("{name}.pin")),
        };
        token.write_pin_file()?;
        Ok(token)
    }
}

/// A SoftHSMv2 token made for an instance.
pub struct Token {
    module: PathBuf,
    pub label: String,
    so_pin: String,
    user_pin: String,
    /// The file the signer configuration reads the user PIN from.
    pub pin_file: PathBuf,
}

impl Token {
    fn p11(&self) -> anyhow::Result<Pkcs11> {
        hsm_signers::pkcs11::module(&self.module).map_err(|e| anyhow!(e))
    }

    /// Empties the token: C_InitToken again with the same label and PINs, so the
    /// signer configuration still reaches it. Whoever holds sessions on it (a relay)
    /// must be stopped first.
    pub fn wipe(&self) -> anyhow::Result<()> {
        let p11 = self.p11()?;
        let slot = slot_of(&p11, &self.label)?;
        init_token(&p11, slot, &self.label, &self.so_pin, &self.user_pin)
    }

    /// A new user PIN (C_SetPIN); the PIN file follows.
    pub fn change_pin(&mut self) -> anyhow::Result<()> {
        let p11 = self.p11()?;
        let new_pin = random_hex(8);
        let slot = slot_of(&p11, &self.label)?;
        let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        session
            .set_pin(
                &AuthPin::from(self.user_pin.clone()),
                &AuthPin::from(new_pin.clone()),
            )
            .map_err(ck("C_SetPIN"))?;
        drop(session);
        self.user_pin = new_pin;
        self.write_pin_file()
    }

    /// Writes the user PIN to its file, mode 0600, atomically (a reader sees the old
    /// PIN or the new one).
    fn write_pin_file(&self) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.pin_file.with_extension("pin.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(self.user_pin.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.pin_file)
            .with_context(|| format!("replacing {}", self.pin_file.display()))
    }

    /// The user PIN, for clients that log in with it (the oracle's KMIP client before
    /// a relay standing in for seed 003).
    pub fn user_pin(&self) -> &str {
        &self.user_pin
    }

    /// The signer configuration's source of the user PIN.
    pub fn pin_source(&self) -> Secret {
        Secret::File(self.pin_file.clone())
    }

    /// The identifiers of the complete key pairs on the token, computed by the oracle
    /// from their public key material.
    pub fn inventory(&self) -> anyhow::Result<Vec<KeyIdentifier>> {
        let p11 = self.p11()?;
        let session = user_session(&p11, &self.label, &self.user_pin)?;
        let mut ids: Vec<KeyIdentifier> = pairs(&session)?
            .into_iter()
            .filter(|p| p.private.is_some())
            .map(|p| p.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The algorithms the token's mechanism list offers (key generation and signing
    /// mechanism, as the PKCS#11 signer uses them), and whether C_GenerateRandom works.
    pub fn probe(&self) -> anyhow::Result<Vec<super::Observed>> {
        let p11 = self.p11()?;
        let slot = slot_of(&p11, &self.label)?;
        probe_slot(&p11, slot)
    }

    /// What the module and the token say about themselves (see [`describe_slot`]).
    pub fn describe(&self) -> anyhow::Result<super::Description> {
        let p11 = self.p11()?;
        let slot = slot_of(&p11, &self.label)?;
        describe_slot(&p11, &self.module, slot)
    }
}

/// What the token in `slot` offers: the algorithms its mechanism list has (key
/// generation and signing mechanism, as the PKCS#11 signer uses them), and whether
/// C_GenerateRandom works.
pub(crate) fn probe_slot(p11: &Pkcs11, slot: Slot) -> anyhow::Result<Vec<super::Observed>> {
    use super::Observed;
    use crate::model::suite::Capability;
    use cryptoki::mechanism::MechanismType as M;
    let mechanisms = p11
        .get_mechanism_list(slot)
        .map_err(ck("C_GetMechanismList"))?;
    // PSS counts as offered with either the hash-and-sign mechanism or the bare
    // one over a digest computed by the caller (what p11-kit 0.24 passes).
    let pairs: [(Capability, M, M, Option<M>); 5] = [
        (
            Capability::Rsa2048,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::SHA256_RSA_PKCS,
            None,
        ),
        (
            Capability::Rsa2048Pss,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::SHA256_RSA_PKCS_PSS,
            Some(M::RSA_PKCS_PSS),
        ),
        (Capability::EcdsaP256, M::ECC_KEY_PAIR_GEN, M::ECDSA, None),
        (Capability::EcdsaP384, M::ECC_KEY_PAIR_GEN, M::ECDSA, None),
        (
            Capability::Ed25519,
            M::ECC_EDWARDS_KEY_PAIR_GEN,
            M::EDDSA,
            None,
        ),
    ];
    let mut seen: Vec<Observed> = pairs
        .into_iter()
        .map(|(capability, generate, sign, bare)| {
            let signs = mechanisms.contains(&sign) || bare.is_some_and(|b| mechanisms.contains(&b));
            let has = mechanisms.contains(&generate) && signs;
            Observed::exact(
                capability,
                has,
                format!(
                    "C_GetMechanismList {} {generate} and {sign}",
                    if has {
                        "offers"
                    } else {
                        "does not offer both of"
                    }
                ),
            )
        })
        .collect();
    let session = p11.open_ro_session(slot).map_err(ck("C_OpenSession"))?;
    let random = session.generate_random_vec(16);
    seen.push(Observed::exact(
        Capability::Random,
        random.is_ok(),
        match random {
            Ok(_) => "C_GenerateRandom gave 16 bytes".to_string(),
            Err(e) => format!("C_GenerateRandom: {e}"),
        },
    ));
    Ok(seen)
}

/// What the module and the token in `slot` say about themselves: C_GetInfo,
/// C_GetSlotInfo, C_GetTokenInfo, every mechanism of C_GetMechanismList with its
/// C_GetMechanismInfo (key sizes and flags), and whether C_GenerateRandom answers.
/// Read-only: a public session, no login.
pub(crate) fn describe_slot(
    p11: &Pkcs11,
    module: &Path,
    slot: Slot,
) -> anyhow::Result<super::Description> {
    let mut d = super::Description::default();
    let row = |k: &str, v: String| (k.to_string(), v);
    let info = p11.get_library_info().map_err(ck("C_GetInfo"))?;
    d.section(
        "library",
        vec![
            row(
                "manufacturer",
                info.manufacturer_id().trim_end().to_string(),
            ),
            row(
                "description",
                info.library_description().trim_end().to_string(),
            ),
            row("library version", info.library_version().to_string()),
            row("cryptoki version", info.cryptoki_version().to_string()),
        ],
    );
    let slot_info = p11.get_slot_info(slot).map_err(ck("C_GetSlotInfo"))?;
    let token = p11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
    let flags = [
        (token.rng(), "rng"),
        (token.login_required(), "login-required"),
        (token.user_pin_initialized(), "user-pin-initialized"),
        (token.token_initialized(), "token-initialized"),
        (token.write_protected(), "write-protected"),
        (
            token.protected_authentication_path(),
            "protected-authentication-path",
        ),
        (token.user_pin_locked(), "user-pin-locked"),
    ];
    let flags: Vec<&str> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    d.section(
        "token",
        vec![
            row(
                "slot",
                format!(
                    "{} ({})",
                    slot.id(),
                    slot_info.slot_description().trim_end()
                ),
            ),
            row("label", token.label().trim_end().to_string()),
            row(
                "manufacturer",
                token.manufacturer_id().trim_end().to_string(),
            ),
            row("model", token.model().trim_end().to_string()),
            row(
                "serial number",
                token.serial_number().trim_end().to_string(),
            ),
            row("hardware version", token.hardware_version().to_string()),
            row("firmware version", token.firmware_version().to_string()),
            row(
                "PIN length",
                format!("{}-{}", token.min_pin_length(), token.max_pin_length()),
            ),
            row("flags", flags.join(" ")),
        ],
    );
    let rows = raw_mechanisms(module, slot)?
        .into_iter()
        .map(|(code, info)| {
            let name = cryptoki::mechanism::MechanismType::try_from(code)
                .map(|m| m.to_string())
                .unwrap_or_else(|_| unnamed_mechanism(code));
            let details = match info {
                Ok(i) => {
                    use cryptoki_sys as sys;
                    let flags = [
                        (sys::CKF_HW, "hw"),
                        (sys::CKF_ENCRYPT, "encrypt"),
                        (sys::CKF_DECRYPT, "decrypt"),
                        (sys::CKF_DIGEST, "digest"),
                        (sys::CKF_SIGN, "sign"),
                        (sys::CKF_SIGN_RECOVER, "sign-recover"),
                        (sys::CKF_VERIFY, "verify"),
                        (sys::CKF_VERIFY_RECOVER, "verify-recover"),
                        (sys::CKF_GENERATE, "generate"),
                        (sys::CKF_GENERATE_KEY_PAIR, "generate-key-pair"),
                        (sys::CKF_WRAP, "wrap"),
                        (sys::CKF_UNWRAP, "unwrap"),
                        (sys::CKF_DERIVE, "derive"),
                    ];
                    let flags: Vec<&str> = flags
                        .iter()
                        .filter(|(bit, _)| i.flags & bit != 0)
                        .map(|(_, n)| *n)
                        .collect();
                    format!(
                        "0x{code:08x}; key sizes {}-{}; {}",
                        i.ulMinKeySize,
                        i.ulMaxKeySize,
                        flags.join(" ")
                    )
                }
                Err(rv) => format!("0x{code:08x}; C_GetMechanismInfo: 0x{rv:x}"),
            };
            (name, details)
        })
        .collect();
    d.section("mechanisms", rows);
    let random = p11
        .open_ro_session(slot)
        .map_err(ck("C_OpenSession"))?
        .generate_random_vec(32);
    d.section(
        "random",
        vec![row(
            "C_GenerateRandom",
            match random {
                Ok(b) => format!("CKR_OK, {} bytes", b.len()),
                Err(e) => e.to_string(),
            },
        )],
    );
    Ok(d)
}

/// The name of a mechanism cryptoki has none for: vendor-defined ones relative to
/// CKM_VENDOR_DEFINED, others by number.
fn unnamed_mechanism(code: u64) -> String {
    let vendor = cryptoki_sys::CKM_VENDOR_DEFINED;
    if code >= vendor {
        format!("CKM_VENDOR_DEFINED+0x{:x}", code - vendor)
    } else {
        format!("CKM_0x{code:08x}")
    }
}

/// What C_GetMechanismInfo said of one mechanism: its info, or the CKR_ value.
type MechanismInfo = Result<cryptoki_sys::CK_MECHANISM_INFO, u64>;

/// Every mechanism of `slot` as the module lists it, with its C_GetMechanismInfo.
/// Asked through the module's own function list because cryptoki's
/// `get_mechanism_list` drops the types it has no name for (vendor-defined ones, and
/// older ones such as CKM_DES2_KEY_GEN), which a probe must not hide. The module is
/// already loaded and initialised in this process (by the caller's context), so
/// loading it again only takes another reference.
fn raw_mechanisms(module: &Path, slot: Slot) -> anyhow::Result<Vec<(u64, MechanismInfo)>> {
    use cryptoki_sys as sys;
    let slot_id: sys::CK_SLOT_ID = slot.id();
    // SAFETY: the library is a PKCS#11 module (cryptoki loaded it already); the calls
    // follow the PKCS#11 2.40 signatures, with buffers sized from the module's count.
    unsafe {
        let lib = libloading::Library::new(module)
            .with_context(|| format!("loading {}", module.display()))?;
        let get: libloading::Symbol<
            unsafe extern "C" fn(*mut *mut sys::CK_FUNCTION_LIST) -> sys::CK_RV,
        > = lib.get(b"C_GetFunctionList\0")?;
        let mut list: *mut sys::CK_FUNCTION_LIST = std::ptr::null_mut();
        let rv = get(&mut list);
        if rv != sys::CKR_OK || list.is_null() {
            bail!("C_GetFunctionList: 0x{rv:x}");
        }
        let f = &*list;
        let (Some(mechanism_list), Some(mechanism_info)) =
            (f.C_GetMechanismList, f.C_GetMechanismInfo)
        else {
            bail!("the module's function list has no C_GetMechanismList or C_GetMechanismInfo");
        };
        let mut count: sys::CK_ULONG = 0;
        let rv = mechanism_list(slot_id, std::ptr::null_mut(), &mut count);
        if rv != sys::CKR_OK {
            bail!("C_GetMechanismList: 0x{rv:x}");
        }
        let mut codes: Vec<sys::CK_MECHANISM_TYPE> = vec![0; count as usize];
        let rv = mechanism_list(slot_id, codes.as_mut_ptr(), &mut count);
        if rv != sys::CKR_OK {
            bail!("C_GetMechanismList: 0x{rv:x}");
        }
        codes.truncate(count as usize);
        Ok(codes
            .into_iter()
            .map(|code| {
                let mut info: sys::CK_MECHANISM_INFO = std::mem::zeroed();
                let rv = mechanism_info(slot_id, code, &mut info);
                (code, if rv == sys::CKR_OK { Ok(info) } else { Err(rv) })
            })
            .collect())
    }
}

impl Token {
    /// Replaces key pair `id` by a new one of `alg`'s key type with the same CKA_ID
    /// and labels: whoever finds keys by them finds the impostor.
    pub fn replace_key(&self, id: &KeyIdentifier, alg: Algorithm) -> anyhow::Result<()> {
        let p11 = self.p11()?;
        let session = user_session(&p11, &self.label, &self.user_pin)?;
        replace_pair(&session, &self.label, id, alg)
    }
}

/// Replaces key pair `id` seen by `session` (logged in) by a new one of `alg`'s key
/// type with the same CKA_ID and labels (see [`Token::replace_key`]).
pub(crate) fn replace_pair(
    session: &Session,
    token: &str,
    id: &KeyIdentifier,
    alg: Algorithm,
) -> anyhow::Result<()> {
    let pair = pairs(session)?
        .into_iter()
        .find(|p| p.id == *id)
        .ok_or_else(|| anyhow!("no key pair {id} on token '{token}'"))?;
    session
        .destroy_object(pair.public)
        .map_err(ck("C_DestroyObject"))?;
    let private_label = match pair.private {
        Some((h, label)) => {
            session.destroy_object(h).map_err(ck("C_DestroyObject"))?;
            label
        }
        None => pair.public_label.clone(),
    };
    generate_with_id(
        session,
        alg.key_type(),
        &pair.cka_id,
        &pair.public_label,
        &private_label,
    )
}

/// A key pair on a token, identified by its public key material (not by CKA_ID,
/// which a server such as the relay chooses itself).
pub(crate) struct Pair {
    pub(crate) id: KeyIdentifier,
    cka_id: Vec<u8>,
    pub(crate) public: ObjectHandle,
    public_label: Vec<u8>,
    pub(crate) private: Option<(ObjectHandle, Vec<u8>)>,
}

/// Every key pair on the token whose private half is there too.
pub(crate) fn pairs(session: &Session) -> anyhow::Result<Vec<Pair>> {
    let publics = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
        .map_err(ck("C_FindObjects"))?;
    let mut out = Vec::new();
    for h in publics {
        let attrs = session
            .get_attributes(
                h,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let (mut cka_id, mut label, mut n, mut e, mut params, mut point) =
            (Vec::new(), Vec::new(), None, None, None, None);
        for a in attrs {
            match a {
                Attribute::Id(v) => cka_id = v,
                Attribute::Label(v) => label = v,
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        // Keys on curves the harness does not know are not counted.
        let Some(id) = public_key_identifier(n, e, params, point) else {
            continue;
        };
        let id = id.map_err(|e| anyhow!("public key with CKA_ID {}: {e}", hex::encode(&cka_id)))?;
        let private = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(cka_id.clone()),
            ])
            .map_err(ck("C_FindObjects"))?
            .into_iter()
            .next()
            .map(|h| {
                let label = session
                    .get_attributes(h, &[AttributeType::Label])
                    .ok()
                    .and_then(|a| {
                        a.into_iter().find_map(|a| match a {
                            Attribute::Label(v) => Some(v),
                            _ => None,
                        })
                    })
                    .unwrap_or_default();
                (h, label)
            });
        out.push(Pair {
            id,
            cka_id,
            public: h,
            public_label: label,
            private,
        });
    }
    Ok(out)
}

/// The identifier the oracle computes for a public key given by its attributes (RSA
/// modulus and exponent, or EC parameters and point); `None` for keys of a kind or
/// curve the harness does not know.
pub(crate) fn public_key_identifier(
    n: Option<Vec<u8>>,
    e: Option<Vec<u8>>,
    params: Option<Vec<u8>>,
    point: Option<Vec<u8>>,
) -> Option<anyhow::Result<KeyIdentifier>> {
    let spki = match (n, e, params, point) {
        (Some(n), Some(e), _, _) => public_key::rsa(&n, &e),
        (_, _, Some(params), Some(point)) => {
            public_key::ec(Curve::from_ec_params(&params)?, &point)
        }
        _ => return None,
    };
    Some(spki.map_err(|e| anyhow!("{e}")).and_then(|spki| {
        oracle::KeyId::of_spki(&spki)
            .map(oracle_terms::key_identifier)
            .map_err(|e| anyhow!("{e}"))
    }))
}

fn free_slot(p11: &Pkcs11) -> anyhow::Result<Slot> {
    p11.get_slots_with_token()
        .map_err(ck("C_GetSlotList"))?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| !t.token_initialized())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("the module offers no uninitialised token slot"))
}

/// The slot of the token labelled `label` (SoftHSMv2 moves tokens to new slot ids).
fn slot_of(p11: &Pkcs11, label: &str) -> anyhow::Result<Slot> {
    p11.get_slots_with_token()
        .map_err(ck("C_GetSlotList"))?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .map(|t| t.label().trim_end() == label)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("no token labelled '{label}'"))
}

/// C_InitToken (a fresh or wiped token), then the user PIN.
fn init_token(
    p11: &Pkcs11,
    slot: Slot,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> anyhow::Result<()> {
    p11.init_token(slot, &AuthPin::from(so_pin.to_string()), label)
        .map_err(ck("C_InitToken"))?;
    let slot = slot_of(p11, label)?;
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    session
        .login(UserType::So, Some(&AuthPin::from(so_pin.to_string())))
        .map_err(ck("C_Login(SO)"))?;
    session
        .init_pin(&AuthPin::from(user_pin.to_string()))
        .map_err(ck("C_InitPIN"))?;
    session.logout().map_err(ck("C_Logout"))?;
    Ok(())
}

/// A R/W session logged in as user. Never logs out: logging out would log out the
/// signer's sessions too (login state is per token, not per session).
pub(crate) fn user_session(p11: &Pkcs11, label: &str, pin: &str) -> anyhow::Result<Session> {
    let slot = slot_of(p11, label)?;
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(anyhow!("C_Login: {e}")),
    }
}

fn generate_with_id(
    session: &Session,
    kt: KeyType,
    id: &[u8],
    public_label: &[u8],
    private_label: &[u8],
) -> anyhow::Result<()> {
    let id = id.to_vec();
    let (mech, mut public) = match kt {
        KeyType::Rsa2048 => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
        KeyType::EcP256 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(Curve::P256.ec_params())],
        ),
        KeyType::EcP384 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(Curve::P384.ec_params())],
        ),
        KeyType::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(Curve::Ed25519.ec_params())],
        ),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Id(id.clone()),
        Attribute::Label(public_label.to_vec()),
    ]);
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id),
        Attribute::Label(private_label.to_vec()),
    ];
    session
        .generate_key_pair(&mech, &public, &private)
        .map_err(ck("C_GenerateKeyPair"))?;
    Ok(())
}
