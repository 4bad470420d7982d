//! `hsm-harness signer`: the configured signers from the shell, like pkcs11-tool but
//! through the signer stack. Results are JSON on stdout (`public-key` prints PEM);
//! errors go to stderr with exit code 1, configuration errors with exit code 2.
//! PINs and passwords are read from the configuration's `env:`/`file:` sources, never
//! from the command line.

use std::io::Write;
use std::path::PathBuf;

use base64::Engine;
use clap::{Args, Subcommand};
use hsm_signers::{Algorithm, KeyIdentifier, Router, SignerError, SignerSetup};
use serde_json::json;

use crate::cli::{init_logging, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

#[derive(Args)]
pub struct SignerArgs {
    /// Signer configuration (seed 001 `[[signers]]` format). Without it: one OpenSSL signer.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for what the signers persist (OpenSSL key files, ...).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    #[command(subcommand)]
    command: SignerCommand,
}

#[derive(Subcommand)]
enum SignerCommand {
    /// Create a key pair with the default signer; prints its key identifier.
    CreateKey {
        /// rsa2048, rsa2048-pss, ecdsa-p256, ecdsa-p384 or ed25519.
        #[arg(long, value_name = "ALG")]
        alg: Algorithm,
    },
    /// Sign the bytes of a file with a key; writes the signature (ECDSA: DER) to a file.
    Sign {
        #[arg(long, value_name = "KEY_ID")]
        key: KeyIdentifier,
        #[arg(long, value_name = "ALG")]
        alg: Algorithm,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// Print a key's public key as PEM (SubjectPublicKeyInfo).
    PublicKey {
        #[arg(long, value_name = "KEY_ID")]
        key: KeyIdentifier,
    },
    /// Destroy a key pair.
    Destroy {
        #[arg(long, value_name = "KEY_ID")]
        key: KeyIdentifier,
    },
    /// List the keys every signer holds.
    List,
    /// Random bytes (hex) from the default signer, or the OpenSSL signer if it has no RNG.
    Random {
        #[arg(long, value_name = "N")]
        bytes: usize,
    },
    /// Each signer's role and state (connects to each).
    Status,
}

pub fn main(args: SignerArgs) -> i32 {
    init_logging();
    let setup = match &args.config {
        Some(path) => match SignerSetup::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        None => SignerSetup::implicit(),
    };
    if let Err(e) = std::fs::create_dir_all(&args.state) {
        eprintln!("error: cannot create {}: {e}", args.state.display());
        return EXIT_FAILED;
    }
    let router = Router::new(&setup, &args.state);
    match execute(&router, args.command) {
        Ok(output) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(output.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn to_json(v: serde_json::Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

fn execute(router: &Router, command: SignerCommand) -> Result<String, SignerError> {
    Ok(match command {
        SignerCommand::CreateKey { alg } => {
            let k = router.create_key(alg)?;
            to_json(json!({
                "key": k.id,
                "alg": alg,
                "signer": router.default_signer().name(),
            }))
        }
        SignerCommand::Sign {
            key,
            alg,
            input,
            output,
        } => {
            let data = std::fs::read(&input)
                .map_err(|e| SignerError::io(format!("reading {}", input.display()), e))?;
            let owner = router.owner(&key)?;
            let sig = owner.sign(&key, alg, &data)?;
            std::fs::write(&output, &sig)
                .map_err(|e| SignerError::io(format!("writing {}", output.display()), e))?;
            to_json(json!({
                "key": key,
                "alg": alg,
                "signer": owner.name(),
                "signature_bytes": sig.len(),
                "out": output,
            }))
        }
        SignerCommand::PublicKey { key } => pem(&router.public_key(&key)?),
        SignerCommand::Destroy { key } => {
            let owner = router.owner(&key)?;
            owner.destroy_key(&key)?;
            to_json(json!({ "destroyed": key, "signer": owner.name() }))
        }
        SignerCommand::List => {
            let (keys, errors) = router.list();
            let errors: Vec<_> = errors
                .into_iter()
                .map(|(signer, e)| json!({ "signer": signer, "error": e.to_string() }))
                .collect();
            to_json(json!({ "keys": keys, "errors": errors }))
        }
        SignerCommand::Random { bytes } => {
            let r = router.random(bytes)?;
            to_json(json!({ "bytes": r.len(), "hex": hex::encode(r) }))
        }
        SignerCommand::Status => {
            let default = router.default_signer().name().to_string();
            let one_off = router.one_off_signer().name().to_string();
            let signers: Vec<_> = router
                .signers()
                .iter()
                .map(|s| {
                    let mut roles = Vec::new();
                    if s.name() == default {
                        roles.push("default");
                    }
                    if s.name() == one_off {
                        roles.push("one-off");
                    }
                    match s.info() {
                        Ok(info) => json!({
                            "name": s.name(),
                            "type": info.signer_type,
                            "roles": roles,
                            "state": "usable",
                            "details": info.details.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect::<serde_json::Map<_, _>>(),
                        }),
                        Err(e) => json!({
                            "name": s.name(),
                            "roles": roles,
                            "state": "unusable",
                            "error": e.to_string(),
                        }),
                    }
                })
                .collect();
            to_json(json!({ "signers": signers }))
        }
    })
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}
