//! Steps on keys and signatures: `create_key`, `sign`, `verify`, `public_key`,
//! `destroy_key`, `sign_one_off`.

use hsm_signers::Algorithm;
use oracle::verify::VerifyError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    log, CellContext, CheckContext, CheckError, Expect, KeyEntry, Needs, SignatureEntry, StepError,
    StepKind, DEFAULT_DATA,
};
use crate::model::schema::{AlgorithmName, KeyName, NewName, SignatureName};
use crate::model::suite::Capability;
use crate::oracle_terms;

/// Create a key pair with the default signer and bind it to a name. Checks that the
/// public key is a DER SubjectPublicKeyInfo and that the key identifier is the SHA-1 of
/// its key bits (computed by the harness, not taken from the signer), that the key map
/// holds the key, owned by the default signer, and that the default signer's backend
/// instance holds the key pair (seen through the harness's own session or client).
/// Unless it expects an error, the case requires the algorithm's capability.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The key's algorithm; later sign steps default to it.
    #[schemars(with = "AlgorithmName")]
    pub alg: Algorithm,
    /// The name later steps use for this key (`key: NAME`). Not bound if the step
    /// expects an error.
    #[serde(rename = "as")]
    #[schemars(with = "NewName")]
    pub name: String,
    #[serde(default)]
    pub expect: Expect,
}

impl StepKind for CreateKey {
    fn keyword(&self) -> &'static str {
        "create_key"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        if self.expect.error.is_none() && !ctx.keys.insert(self.name.clone()) {
            return Err(format!("key name '{}' is already bound", self.name).into());
        }
        Ok(())
    }

    fn requires(&self, needs: &mut Needs) {
        // A step expected to fail does not need the algorithm.
        if self.expect.error.is_none() {
            needs.add(Capability::of(self.alg));
        }
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let signer = cell.signer()?;
        let Some(created) = self.expect.judge(signer.create_key(self.alg)?)? else {
            return Ok(());
        };
        // Recompute the identifier here rather than trusting the signer's.
        let expected = oracle::KeyId::of_spki(&created.public_key)
            .map_err(|e| StepError::Failed(format!("the signer's public key: {e}")))?;
        if created.id.as_bytes() != expected.as_bytes() {
            return Err(StepError::Failed(format!(
                "key identifier {} is not the SHA-1 of the key bits ({expected})",
                created.id
            )));
        }
        log(format!(
            "  created {} key {} as '{}'",
            self.alg, created.id, self.name
        ));
        // The key map holds the key, owned by the default signer, and the backend
        // itself (seen through the harness's own session or client) holds the key pair.
        let default = cell.default_signer_name();
        let owner = created.owner.map_err(|e| {
            StepError::Failed(format!(
                "the key map does not hold the new key {}: {e}",
                created.id
            ))
        })?;
        if owner != default {
            return Err(StepError::Failed(format!(
                "the key map gives the new key {} to '{owner}', not to the default signer \
                 '{default}'",
                created.id
            )));
        }
        let instance = cell.instance_of(&owner)?;
        let held = cell
            .instances
            .inventory(&instance)
            .map_err(|e| StepError::Harness(format!("{e:#}")))?;
        if !held.contains(&created.id) {
            return Err(StepError::Failed(format!(
                "the signer reported key {} created, but instance '{instance}' does not hold it",
                created.id
            )));
        }
        cell.bindings.keys.insert(
            self.name.clone(),
            KeyEntry {
                id: created.id,
                alg: self.alg,
                spki: created.public_key,
            },
        );
        Ok(())
    }
}

/// Sign data with a key through the signer router: the configured signer bound to the
/// key's owner signs, whatever the default signer is now.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    #[schemars(with = "KeyName")]
    pub key: Spanned<String>,
    /// The algorithm to sign with; default: the key's algorithm. Unless the step
    /// expects an error, the case requires its capability.
    #[serde(default)]
    #[schemars(with = "Option<AlgorithmName>")]
    pub alg: Option<Algorithm>,
    /// The data to sign, as UTF-8 text; default: "hsm-harness test payload".
    #[serde(default)]
    pub data: Option<String>,
    /// Bind the signature to this name for later verify steps. Not bound if the step
    /// expects an error.
    #[serde(default, rename = "as")]
    #[schemars(with = "Option<NewName>")]
    pub name: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

impl StepKind for Sign {
    fn keyword(&self) -> &'static str {
        "sign"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        ctx.key(&self.key)?;
        match (&self.name, &self.expect.error) {
            (Some(n), None) => ctx.bind_signature(n),
            _ => Ok(()),
        }
    }

    fn requires(&self, needs: &mut Needs) {
        if let (Some(alg), None) = (self.alg, &self.expect.error) {
            needs.add(Capability::of(alg));
        }
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let key = &self.key.value;
        let entry = cell.key(key)?;
        let alg = self.alg.unwrap_or(entry.alg);
        let data = self
            .data
            .as_deref()
            .unwrap_or(DEFAULT_DATA)
            .as_bytes()
            .to_vec();
        let signer = cell.signer()?;
        let Some(sig) = self.expect.judge(signer.sign(&entry.id, alg, &data)?)? else {
            return Ok(());
        };
        log(format!(
            "  {alg} signature of {} bytes with key '{key}'",
            sig.len()
        ));
        if let Some(name) = &self.name {
            let spki = entry.spki.clone();
            cell.bindings.signatures.insert(
                name.clone(),
                SignatureEntry {
                    key: Some(key.clone()),
                    spki,
                    alg,
                    data,
                    bytes: sig,
                },
            );
        }
        Ok(())
    }
}

/// Verify a signature independently (RustCrypto code, not the backend or the software
/// signer), with the algorithm it was made with, and compare the verdict with
/// `expect`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    #[schemars(with = "SignatureName")]
    pub signature: Spanned<String>,
    /// Verify with this key instead of the one that signed (for wrong-key checks); it
    /// must be usable for the signature's algorithm.
    #[serde(default)]
    #[schemars(with = "Option<KeyName>")]
    pub key: Option<Spanned<String>>,
    /// Verify over this UTF-8 text instead of the data that was signed (for
    /// tampered-data checks).
    #[serde(default)]
    pub data: Option<String>,
    /// The expected verdict; default: valid.
    #[serde(default)]
    pub expect: Verdict,
}

/// The independent verifier's verdict, as a `verify` step expects it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The signature verifies (the default).
    #[default]
    Valid,
    /// Well-formed, but does not verify (tampered data, wrong key).
    Mismatch,
    /// Not in the algorithm's encoding (e.g. raw r||s where DER is required, wrong
    /// length).
    BadEncoding,
}

impl StepKind for Verify {
    fn keyword(&self) -> &'static str {
        "verify"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        let signature = &self.signature;
        if !ctx.signatures.contains(&signature.value) {
            let mut e = CheckContext::unknown("signature", &signature.value, &ctx.signatures);
            e.at = Some(signature.referenced);
            return Err(e);
        }
        if let Some(k) = &self.key {
            ctx.key(k)?;
        }
        Ok(())
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let name = &self.signature.value;
        let sig = cell
            .bindings
            .signatures
            .get(name)
            .ok_or_else(|| StepError::Harness(format!("no signature is bound to '{name}'")))?;
        let (key_name, spki) = match &self.key {
            Some(k) => (k.value.clone(), &cell.key(&k.value)?.spki),
            None => (
                sig.key.clone().unwrap_or_else(|| "(one-off key)".into()),
                &sig.spki,
            ),
        };
        let data = self
            .data
            .as_ref()
            .map_or(sig.data.clone(), |d| d.as_bytes().to_vec());
        let got = oracle::verify::verify(spki, oracle_terms::algorithm(sig.alg), &data, &sig.bytes);
        let verdict = match &got {
            Ok(()) => Verdict::Valid,
            Err(VerifyError::Mismatch { .. }) => Verdict::Mismatch,
            Err(VerifyError::BadEncoding { .. }) => Verdict::BadEncoding,
            Err(e @ VerifyError::BadKey { .. }) => {
                return Err(StepError::Failed(format!(
                    "independent verifier refused the key: {e}"
                )))
            }
        };
        let expect = self.expect;
        if verdict != expect {
            return Err(StepError::Failed(match got {
                Ok(()) => format!(
                    "signature '{name}' verified with key '{key_name}', expected {expect:?}"
                ),
                Err(e) => {
                    format!("independent verification of '{name}' with key '{key_name}': {e}")
                }
            }));
        }
        log(format!(
            "  independent verifier: {verdict:?} (as expected) for '{name}' with key '{key_name}'"
        ));
        Ok(())
    }
}

/// Read a key's public key back through the signer and check it equals the one
/// create_key returned.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    #[schemars(with = "KeyName")]
    pub key: Spanned<String>,
    #[serde(default)]
    pub expect: Expect,
}

impl StepKind for PublicKey {
    fn keyword(&self) -> &'static str {
        "public_key"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        ctx.key(&self.key)
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let key = &self.key.value;
        let entry = cell.key(key)?;
        let signer = cell.signer()?;
        let Some(spki) = self.expect.judge(signer.public_key(&entry.id)?)? else {
            return Ok(());
        };
        if spki != entry.spki {
            return Err(StepError::Failed(format!(
                "public key of '{key}' read back differs from the one create_key returned"
            )));
        }
        log(format!("  public key of '{key}' matches"));
        Ok(())
    }
}

/// Destroy a key pair through the signer. The name stays bound, so later steps can
/// check the key is gone (`expect: { error: not-found }`). Unless it expects an error,
/// the case requires `destroy`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyKey {
    #[schemars(with = "KeyName")]
    pub key: Spanned<String>,
    #[serde(default)]
    pub expect: Expect,
}

impl StepKind for DestroyKey {
    fn keyword(&self) -> &'static str {
        "destroy_key"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        ctx.key(&self.key)
    }

    fn requires(&self, needs: &mut Needs) {
        if self.expect.error.is_none() {
            needs.add(Capability::Destroy);
        }
    }

    /// A destroy the router reports as done is checked in the backend: the inventory of
    /// the owner's instance (through the harness's own session or client) must no
    /// longer hold the key. A signer that only forgets the key in its key map fails.
    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let key = &self.key.value;
        let id = cell.key(key)?.id;
        let signer = cell.signer()?;
        // Our router names the owner its key map gave before the destroy (afterwards it
        // no longer knows); another implementation names it in its answer.
        let Some(owner) = self.expect.judge(signer.destroy_key(&id)?)? else {
            return Ok(());
        };
        log(format!("  destroyed '{key}' ({id})"));
        let owner = owner.ok_or_else(|| {
            StepError::Harness(format!(
                "the key map named no owner of '{key}' before the destroy succeeded"
            ))
        })?;
        let instance = cell.instance_of(&owner)?;
        let held = cell
            .instances
            .inventory(&instance)
            .map_err(|e| StepError::Harness(format!("{e:#}")))?;
        if held.contains(&id) {
            return Err(StepError::Failed(format!(
                "the signer reported '{key}' ({id}) destroyed, but instance '{instance}' still \
                 holds it"
            )));
        }
        log(format!("  instance '{instance}' no longer holds '{key}'"));
        Ok(())
    }
}

/// Create a one-off key with the one-off signer, sign data with it and destroy it, in
/// one call. The key is never in the key map. Checks nothing itself; verify the
/// signature (its key is the one-off key), and check with inventory that the key is
/// gone. Unless it expects an error, the case requires the algorithm's capability, and
/// `destroy` when the one-off signer is on the backend.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOneOff {
    /// The one-off key's algorithm.
    #[schemars(with = "AlgorithmName")]
    pub alg: Algorithm,
    /// The data to sign, as UTF-8 text; default: "hsm-harness test payload".
    #[serde(default)]
    pub data: Option<String>,
    /// Bind the signature to this name, for verify and (standing for its key)
    /// inventory steps. Not bound if the step expects an error.
    #[serde(default, rename = "as")]
    #[schemars(with = "Option<NewName>")]
    pub name: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

impl StepKind for SignOneOff {
    fn keyword(&self) -> &'static str {
        "sign_one_off"
    }

    fn check(&self, ctx: &mut CheckContext) -> Result<(), CheckError> {
        self.expect.check()?;
        if let (Some(n), None) = (&self.name, &self.expect.error) {
            ctx.bind_signature(n)?;
            ctx.one_off.insert(n.clone());
        }
        Ok(())
    }

    fn requires(&self, needs: &mut Needs) {
        if self.expect.error.is_none() {
            needs.add(Capability::of(self.alg));
            if needs.one_off_on_backend {
                needs.add(Capability::Destroy);
            }
        }
    }

    fn run(&self, cell: &mut CellContext) -> Result<(), StepError> {
        let data = self
            .data
            .as_deref()
            .unwrap_or(DEFAULT_DATA)
            .as_bytes()
            .to_vec();
        let signer = cell.signer()?;
        let Some((sig, spki, by)) = self.expect.judge(signer.sign_one_off(self.alg, &data)?)?
        else {
            return Ok(());
        };
        let id = oracle::KeyId::of_spki(&spki)
            .map_err(|e| StepError::Failed(format!("the one-off public key: {e}")))?;
        log(format!(
            "  one-off {} signature of {} bytes by '{}' (key {id}, destroyed)",
            self.alg,
            sig.len(),
            by
        ));
        if let Some(name) = &self.name {
            cell.bindings.signatures.insert(
                name.clone(),
                SignatureEntry {
                    key: None,
                    spki,
                    alg: self.alg,
                    data,
                    bytes: sig,
                },
            );
        }
        Ok(())
    }
}
