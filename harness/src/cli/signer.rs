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

use super::{init_logging, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

#[derive(Args)]
pub struct SignerArgs {
    /// Signer configuration (seed 001 `[[signers]]` format). Without it: one OpenSSL signer.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory for what the signers persist (OpenSSL key files, ...).
    #[arg(long, value_name = "DIR", global = true)]
    state: Option<PathBuf>,
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
    /// List the keys in the key map with their owners; `--orphans` also lists keys the
    /// backends hold that the key map does not know (connects to every signer).
    List {
        #[arg(long)]
        orphans: bool,
    },
    /// Random bytes (hex) from the default signer, or the OpenSSL signer if it has no RNG.
    Random {
        #[arg(long, value_name = "N")]
        bytes: usize,
    },
    /// Each signer's roles and state: bound (with its signer id), waiting to retry, or
    /// unusable with the reason. Connects to each signer first.
    Status,
    /// Serve the signer protocol (docs/signer-protocol.md) on stdin and stdout: JSON
    /// lines, one response per request, until `shutdown` or the end of stdin. This is
    /// what `run --signer-cmd` drives.
    Serve,
    /// Create a one-off key with the one-off signer, sign a file, destroy the key.
    /// Writes the signature and prints the public key (PEM) in the JSON.
    SignOneOff {
        #[arg(long, value_name = "ALG")]
        alg: Algorithm,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
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
    let Some(state) = args.state.clone() else {
        eprintln!("error: --state DIR is required (where the signers keep what they persist)");
        return EXIT_BAD_INPUT;
    };
    if let Err(e) = std::fs::create_dir_all(&state) {
        eprintln!("error: cannot create {}: {e}", state.display());
        return EXIT_FAILED;
    }
    if let SignerCommand::Serve = args.command {
        let router = Router::new(&setup, &state);
        return super::signer_serve::serve(
            router,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        );
    }
    let router = match Router::new(&setup, &state) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
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
            let data = read(&input)?;
            let sig = router.sign(&key, alg, &data)?;
            write(&output, &sig)?;
            to_json(json!({
                "key": key,
                "alg": alg,
                "signer": router.owner_name(&key)?,
                "signature_bytes": sig.len(),
                "out": output,
            }))
        }
        SignerCommand::PublicKey { key } => pem(&router.public_key(&key)?),
        SignerCommand::Destroy { key } => {
            // Also a key the map does not know: an orphan of one signer (a pending pair).
            let owner = router.destroy_key_of(&key)?;
            to_json(json!({ "destroyed": key, "signer": owner }))
        }
        SignerCommand::List { orphans } => {
            let keys = router.list()?;
            if orphans {
                // `pending`: pairs whose creation was interrupted (a kill between a KMIP
                // Create Key Pair and its naming); `destroy` removes them.
                let orphans: Vec<_> = router
                    .orphans_with_state()
                    .into_iter()
                    .map(|(signer, found)| match found {
                        Ok(keys) => {
                            let pending: Vec<_> =
                                keys.iter().filter(|(_, p)| *p).map(|(k, _)| k).collect();
                            let keys: Vec<_> = keys.iter().map(|(k, _)| k).collect();
                            json!({ "signer": signer, "keys": keys, "pending": pending })
                        }
                        Err(e) => json!({ "signer": signer, "error": e.to_string() }),
                    })
                    .collect();
                to_json(json!({ "keys": keys, "orphans": orphans }))
            } else {
                to_json(json!({ "keys": keys }))
            }
        }
        SignerCommand::Random { bytes } => {
            let r = router.random(bytes)?;
            to_json(json!({ "bytes": r.len(), "hex": hex::encode(r) }))
        }
        SignerCommand::Status => {
            router.connect_all();
            let signers: Vec<_> = router
                .status()
                .into_iter()
                .map(|status| {
                    let name = status.name.clone();
                    let mut v = serde_json::to_value(&status).unwrap_or_else(
                        |e| json!({ "name": name, "error": format!("cannot show status: {e}") }),
                    );
                    // What a bound signer says about its backend (module, TLS version,
                    // server); a signer that cannot answer has its state say why.
                    // Only a bound signer is asked: asking an unusable one would
                    // connect again (a second login with a wrong PIN).
                    let bound = v["state"] == "bound";
                    let signer = router.signers().find(|s| bound && s.name() == name);
                    if let (Some(Ok(info)), Some(obj)) =
                        (signer.map(|s| s.info()), v.as_object_mut())
                    {
                        let details: serde_json::Map<String, serde_json::Value> = info
                            .details
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect();
                        obj.insert("details".into(), details.into());
                    }
                    v
                })
                .collect();
            to_json(json!({ "signers": signers }))
        }
        SignerCommand::Serve => {
            return Err(SignerError::config("`serve` runs before a router is built"))
        }
        SignerCommand::SignOneOff { alg, input, output } => {
            let data = read(&input)?;
            let (sig, spki) = router.sign_one_off(alg, &data)?;
            write(&output, &sig)?;
            to_json(json!({
                "alg": alg,
                "signer": router.one_off_signer().name(),
                "signature_bytes": sig.len(),
                "out": output,
                "public_key_pem": pem(&spki),
            }))
        }
    })
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, SignerError> {
    std::fs::read(path).map_err(|e| SignerError::io(format!("reading {}", path.display()), e))
}

fn write(path: &std::path::Path, data: &[u8]) -> Result<(), SignerError> {
    std::fs::write(path, data)
        .map_err(|e| SignerError::io(format!("writing {}", path.display()), e))
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
