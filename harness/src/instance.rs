//! Backend instances of one cell: each `on: a`, `on: b` in a suite is a fresh backend
//! of the cell's kind (a SoftHSMv2 token with its own label and PINs, or a keys
//! directory), made on first use and gone with the cell's work directory.
//!
//! The harness reaches instances through sessions of its own, never the signer's:
//! inventories, wipes, PIN changes and impostor keys are done here, beside the signer
//! under test, as an operator with pkcs11-tool would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_signers::config::{OpenSslConfig, Pkcs11Config, SignerKind, SlotSelector};
use hsm_signers::software::SoftwareSigner;
use hsm_signers::{Algorithm, KeyIdentifier, KeyType, Secret, Signer};

use crate::backend::{random_hex, softhsm_module, Backend, Provider};

/// One instance of the cell's backend.
enum Instance {
    Software {
        keys_dir: PathBuf,
    },
    Token {
        label: String,
        so_pin: String,
        user_pin: String,
        /// The environment variable the signer configuration reads the PIN from.
        pin_env: String,
    },
}

/// The instances of one cell.
pub struct Instances {
    backend: Backend,
    workdir: PathBuf,
    module: Option<PathBuf>,
    made: BTreeMap<String, Instance>,
}

fn ck(what: &str) -> impl Fn(CkError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e}")
}

impl Instances {
    /// Prepares the cell's backend; for SoftHSMv2 this points `SOFTHSM2_CONF` at a
    /// token directory of the cell's own, so it must run before any module loads.
    pub fn new(backend: &Backend, workdir: &Path) -> anyhow::Result<Self> {
        let module = match &backend.provider {
            Provider::Software => None,
            Provider::Softhsm { module } => {
                let module = softhsm_module(module.as_deref()).map_err(|e| anyhow!(e))?;
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
                std::env::set_var("SOFTHSM2_CONF", &conf);
                Some(module)
            }
        };
        Ok(Instances {
            backend: backend.clone(),
            workdir: workdir.to_path_buf(),
            module,
            made: BTreeMap::new(),
        })
    }

    fn p11(&self) -> anyhow::Result<Pkcs11> {
        let path = self
            .module
            .as_ref()
            .ok_or_else(|| anyhow!("no PKCS#11 module"))?;
        hsm_signers::pkcs11::module(path).map_err(|e| anyhow!(e))
    }

    /// Facts for the report: the module and the token labels made so far.
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        if let Some(m) = &self.module {
            props.push(("module".to_string(), m.display().to_string()));
        }
        for (name, inst) in &self.made {
            if let Instance::Token { label, .. } = inst {
                props.push((format!("token_label.{name}"), label.clone()));
            }
        }
        props
    }

    fn ensure(&mut self, name: &str) -> anyhow::Result<&Instance> {
        if !self.made.contains_key(name) {
            let inst = match &self.backend.provider {
                Provider::Software => Instance::Software {
                    keys_dir: self.workdir.join("instances").join(name).join("keys"),
                },
                Provider::Softhsm { .. } => {
                    let label = format!("hsm-harness-{name}-{}", random_hex(3));
                    let so_pin = random_hex(8);
                    let user_pin = random_hex(8);
                    let p11 = self.p11()?;
                    let slot = free_slot(&p11)?;
                    init_token(&p11, slot, &label, &so_pin, &user_pin)?;
                    let pin_env = format!(
                        "HSM_HARNESS_PIN_{}",
                        name.to_uppercase()
                            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    );
                    // The PIN reaches the signer through the environment, never argv or logs.
                    std::env::set_var(&pin_env, &user_pin);
                    Instance::Token {
                        label,
                        so_pin,
                        user_pin,
                        pin_env,
                    }
                }
            };
            self.made.insert(name.to_string(), inst);
        }
        Ok(&self.made[name])
    }

    /// The signer configuration that reaches instance `name`.
    pub fn signer_kind(&mut self, name: &str) -> anyhow::Result<SignerKind> {
        let module = self.module.clone();
        Ok(match self.ensure(name)? {
            Instance::Software { keys_dir } => SignerKind::OpenSsl(OpenSslConfig {
                keys_dir: Some(keys_dir.clone()),
            }),
            Instance::Token { label, pin_env, .. } => SignerKind::Pkcs11(Pkcs11Config {
                lib_path: module.ok_or_else(|| anyhow!("no module"))?,
                slot: SlotSelector::Label(label.clone()),
                user_pin: Some(Secret::Env(pin_env.clone())),
                login: true,
            }),
        })
    }

    /// Empties instance `name` and initialises it again with the same label and PINs
    /// (the signer configuration still reaches it; its content is new).
    pub fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
        let p11 = if self.module.is_some() {
            Some(self.p11()?)
        } else {
            None
        };
        match self.ensure(name)? {
            Instance::Software { keys_dir } => {
                if keys_dir.exists() {
                    std::fs::remove_dir_all(keys_dir)
                        .with_context(|| format!("wiping {}", keys_dir.display()))?;
                }
                Ok(())
            }
            Instance::Token {
                label,
                so_pin,
                user_pin,
                ..
            } => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let slot = slot_of(&p11, label)?;
                init_token(&p11, slot, label, so_pin, user_pin)
            }
        }
    }

    /// Gives instance `name` a new user PIN (C_SetPIN); the signer configuration's PIN
    /// source follows.
    pub fn change_pin(&mut self, name: &str) -> anyhow::Result<()> {
        let p11 = self.p11()?;
        self.ensure(name)?;
        let Some(Instance::Token {
            label,
            user_pin,
            pin_env,
            ..
        }) = self.made.get_mut(name)
        else {
            bail!("instance '{name}' has no credentials to change");
        };
        let new_pin = random_hex(8);
        let slot = slot_of(&p11, label)?;
        let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        session
            .set_pin(
                &AuthPin::from(user_pin.clone()),
                &AuthPin::from(new_pin.clone()),
            )
            .map_err(ck("C_SetPIN"))?;
        *user_pin = new_pin;
        std::env::set_var(pin_env, user_pin.as_str());
        Ok(())
    }

    /// The key identifiers (CKA_ID / file names) of the private keys instance `name`
    /// holds, read through a session of the harness's own.
    pub fn inventory(&mut self, name: &str) -> anyhow::Result<Vec<KeyIdentifier>> {
        if name == "software" {
            return software_inventory(&self.workdir.join("state").join("keys"));
        }
        let p11 = if self.module.is_some() {
            Some(self.p11()?)
        } else {
            None
        };
        match self.ensure(name)? {
            Instance::Software { keys_dir } => software_inventory(keys_dir),
            Instance::Token {
                label, user_pin, ..
            } => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let session = user_session(&p11, label, user_pin)?;
                let handles = session
                    .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                    .map_err(ck("C_FindObjects"))?;
                let mut ids = Vec::new();
                for h in handles {
                    if let Some(id) = cka_id(&session, h)? {
                        ids.push(id);
                    }
                }
                ids.sort();
                Ok(ids)
            }
        }
    }

    /// Replaces the key pair `id` in instance `name` by a new key pair of the same
    /// type under the same identifier: same handle, other key material.
    pub fn replace_key(
        &mut self,
        name: &str,
        id: &KeyIdentifier,
        alg: Algorithm,
    ) -> anyhow::Result<()> {
        let p11 = if self.module.is_some() {
            Some(self.p11()?)
        } else {
            None
        };
        let workdir = self.workdir.clone();
        match self.ensure(name)? {
            Instance::Software { keys_dir } => replace_software_key(&workdir, keys_dir, id, alg),
            Instance::Token {
                label, user_pin, ..
            } => {
                let p11 = p11.ok_or_else(|| anyhow!("no module"))?;
                let session = user_session(&p11, label, user_pin)?;
                let objects = session
                    .find_objects(&[Attribute::Id(id.as_bytes().to_vec())])
                    .map_err(ck("C_FindObjects"))?;
                for o in objects {
                    session.destroy_object(o).map_err(ck("C_DestroyObject"))?;
                }
                generate_with_id(&session, alg.key_type(), id)
            }
        }
    }
}

/// Puts the key file of a new key pair where key `id` was: same name, other key.
fn replace_software_key(
    workdir: &Path,
    keys_dir: &Path,
    id: &KeyIdentifier,
    alg: Algorithm,
) -> anyhow::Result<()> {
    let scratch = workdir.join("impostor");
    let other = SoftwareSigner::new("impostor", scratch.clone());
    let made = other.create_key(alg).map_err(|e| anyhow!("{e}"))?;
    std::fs::copy(
        scratch.join(format!("{}.key", made.id)),
        keys_dir.join(format!("{id}.key")),
    )
    .context("putting the impostor key in place")?;
    Ok(())
}

fn software_inventory(dir: &Path) -> anyhow::Result<Vec<KeyIdentifier>> {
    let mut ids: Vec<KeyIdentifier> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".key")?.parse().ok()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(anyhow!("listing {}: {e}", dir.display())),
    };
    ids.sort();
    Ok(ids)
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
fn user_session(p11: &Pkcs11, label: &str, pin: &str) -> anyhow::Result<Session> {
    let slot = slot_of(p11, label)?;
    let session = p11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(anyhow!("C_Login: {e}")),
    }
}

fn cka_id(session: &Session, h: ObjectHandle) -> anyhow::Result<Option<KeyIdentifier>> {
    let attrs = session
        .get_attributes(h, &[AttributeType::Id])
        .map_err(ck("C_GetAttributeValue"))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Id(id) => <[u8; 20]>::try_from(id.as_slice())
            .ok()
            .map(KeyIdentifier::from_bytes),
        _ => None,
    }))
}

fn generate_with_id(session: &Session, kt: KeyType, id: &KeyIdentifier) -> anyhow::Result<()> {
    let id = id.as_bytes().to_vec();
    let (mech, mut public) = match kt {
        KeyType::Rsa2048 => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
        KeyType::EcP256 | KeyType::EcP384 => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(
                hsm_signers::encoding::ec_params_der(kt)
                    .ok_or_else(|| anyhow!("no curve for {kt}"))?
                    .to_vec(),
            )],
        ),
        KeyType::Ed25519 => (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(
                hsm_signers::encoding::OID_ED25519.to_vec(),
            )],
        ),
    };
    public.extend([
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Id(id.clone()),
        Attribute::Label(b"impostor".to_vec()),
    ]);
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id),
        Attribute::Label(b"impostor".to_vec()),
    ];
    session
        .generate_key_pair(&mech, &public, &private)
        .map_err(ck("C_GenerateKeyPair"))?;
    Ok(())
}
