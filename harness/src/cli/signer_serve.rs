//! `hsm-harness signer serve`: our router behind the signer protocol
//! (`docs/signer-protocol.md`): JSON lines on stdin and stdout, one response per
//! request, in order. Logging goes to stderr.
//!
//! Refused, with an `invalid-input` error and the process going on: a line that is not
//! JSON, a request without `id` or `op`, an unknown `op`, a request before `hello`. A
//! line longer than [`MAX_LINE`] ends the process (exit 2): nothing after it can be
//! trusted to be framed right.

use std::io::{BufRead, Read, Write};

use hsm_signers::{Algorithm, ErrorKind, KeyIdentifier, Router, SignerError};
use serde::Serialize;
use serde_json::Value;

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::signer_protocol::{self as protocol, Op, B64, MAX_LINE, PROTOCOL};

/// What `hello` says this implementation offers.
const FEATURES: &[&str] = &[
    "one-off", "random", "owners", "orphans", "status", "info", "identity",
];

/// Serves requests from `input` until `shutdown` or its end; `router` is what the
/// configuration gave (an error is every answer's, `hello`'s included, and exit 1).
pub fn serve(
    router: Result<Router, SignerError>,
    mut input: impl BufRead,
    mut output: impl Write,
) -> i32 {
    let mut greeted = false;
    loop {
        let mut line = Vec::new();
        match input
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return EXIT_OK,
            Ok(_) if line.len() > MAX_LINE => {
                eprintln!("error: a request line is longer than {MAX_LINE} bytes");
                return EXIT_BAD_INPUT;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading requests: {e}");
                return EXIT_FAILED;
            }
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let (id, answer, done) = match serde_json::from_str::<Value>(&text) {
            Ok(request) => {
                let id = request.get("id").cloned().unwrap_or(Value::Null);
                let op = serde_json::from_value::<Op>(request);
                let name = op.as_ref().map_or("", |o| o.name());
                let answer = match op {
                    _ if !id.is_u64() => Err(invalid("a request needs a numeric `id`")),
                    Err(e) => Err(invalid(format!("not a request this signer knows: {e}"))),
                    Ok(_) if !greeted && name != "hello" => {
                        Err(invalid("the first request must be `hello`"))
                    }
                    Ok(op) => match &router {
                        Ok(router) => handle(router, op),
                        Err(e) => Err(e.clone()),
                    },
                };
                greeted |= name == "hello" && answer.is_ok();
                (id, answer, name == "shutdown")
            }
            Err(e) => (
                Value::Null,
                Err(invalid(format!("not a JSON request: {e}"))),
                false,
            ),
        };
        let response = match answer {
            Ok(fields) => protocol::ok_line(id, fields),
            Err(e) => protocol::error_line(id, e.kind.name(), &e.message),
        };
        if writeln!(output, "{response}")
            .and_then(|()| output.flush())
            .is_err()
        {
            return EXIT_FAILED;
        }
        if done {
            return EXIT_OK;
        }
        if router.is_err() {
            return EXIT_FAILED;
        }
    }
}

fn invalid(message: impl Into<String>) -> SignerError {
    SignerError::invalid_input(message)
}

fn key(text: &str) -> Result<KeyIdentifier, SignerError> {
    text.parse()
        .map_err(|e| invalid(format!("`key` '{text}' is not a key identifier: {e}")))
}

fn alg(text: &str) -> Result<Algorithm, SignerError> {
    text.parse()
        .map_err(|e| invalid(format!("`alg` '{text}': {e}")))
}

fn json(answer: impl Serialize) -> Value {
    serde_json::to_value(answer).expect("an answer serialises")
}

/// One request's answer fields (`id` and `ok` are added by the caller).
fn handle(router: &Router, op: Op) -> Result<Value, SignerError> {
    Ok(match op {
        Op::Hello { protocol: asked } => {
            if asked < PROTOCOL {
                return Err(SignerError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "this signer speaks protocol {PROTOCOL}; the harness asked for {asked}"
                    ),
                ));
            }
            json(protocol::Hello {
                protocol: PROTOCOL,
                implementation: protocol::Implementation {
                    name: "hsm-harness router".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                algorithms: Algorithm::ALL.iter().map(|a| a.to_string()).collect(),
                features: FEATURES.iter().map(|f| f.to_string()).collect(),
            })
        }
        Op::CreateKey { alg: a, signer } => {
            let default = router.default_signer().name().to_string();
            if signer.as_ref().is_some_and(|s| *s != default) {
                return Err(SignerError::unsupported(format!(
                    "`signer` in create_key: this router creates keys with its default signer '{default}'"
                )));
            }
            let made = router.create_key(alg(&a)?)?;
            json(protocol::Created {
                key: made.id.to_string(),
                public_key: B64(made.public_key),
                signer: router.owner_name(&made.id)?,
            })
        }
        Op::Sign {
            key: k,
            alg: a,
            data,
        } => json(protocol::Signed {
            signature: B64(router.sign(&key(&k)?, alg(&a)?, &data.0)?),
        }),
        Op::PublicKey { key: k } => json(protocol::PublicKey {
            public_key: B64(router.public_key(&key(&k)?)?),
        }),
        Op::Destroy { key: k } => json(protocol::Destroyed {
            signer: router.destroy_key_of(&key(&k)?)?,
        }),
        Op::List { orphans } => {
            let keys = router
                .list()?
                .into_iter()
                .map(|l| protocol::Listed {
                    key: l.key.to_string(),
                    alg: Some(l.alg.to_string()),
                    signer: Some(l.signer),
                    signer_id: Some(l.signer_id),
                })
                .collect();
            let orphans = orphans.then(|| {
                router
                    .orphans()
                    .into_iter()
                    .map(|(signer, found)| match found {
                        Ok(keys) => protocol::Orphans {
                            signer,
                            keys: Some(keys.iter().map(|k| k.to_string()).collect()),
                            error: None,
                        },
                        Err(e) => protocol::Orphans {
                            signer,
                            keys: None,
                            error: Some(protocol::ErrorBody {
                                kind: e.kind.name().into(),
                                message: e.message,
                            }),
                        },
                    })
                    .collect()
            });
            json(protocol::Listing { keys, orphans })
        }
        Op::Random { bytes } => {
            let (random, source) = router.random_with_source(bytes)?;
            json(protocol::Random {
                random: B64(random),
                source: json(source).as_str().unwrap_or_default().to_string(),
            })
        }
        Op::Status => {
            router.connect_all();
            let signers: Vec<Value> = router.status().into_iter().map(json).collect();
            serde_json::json!({ "signers": signers })
        }
        Op::Info { signer } => {
            let name = signer.unwrap_or_else(|| router.default_signer().name().to_string());
            let s = router.signers().find(|s| s.name() == name).ok_or_else(|| {
                SignerError::new(ErrorKind::NotFound, format!("no signer named '{name}'"))
            })?;
            let info = s.info()?;
            json(protocol::Info {
                name: info.name,
                signer_type: info.signer_type,
                details: info.details.into_iter().collect(),
            })
        }
        Op::Identity { signer } => {
            let map = router.keymap();
            let id = map.bound_name(&signer)?.ok_or_else(|| {
                SignerError::new(
                    ErrorKind::NotFound,
                    format!("signer '{signer}' has never been bound"),
                )
            })?;
            let record = map.signer(&id)?.ok_or_else(|| {
                SignerError::new(ErrorKind::NotFound, format!("no record of signer id {id}"))
            })?;
            json(protocol::Identity {
                signer_id: record.signer_id,
                identity_key: record.identity_key.to_string(),
                identity_alg: record.identity_alg.to_string(),
            })
        }
        Op::SignOneOff { alg: a, data } => {
            let (signature, public_key) = router.sign_one_off(alg(&a)?, &data.0)?;
            json(protocol::OneOff {
                signature: B64(signature),
                public_key: B64(public_key),
                signer: router.one_off_signer().name().to_string(),
            })
        }
        Op::Shutdown => json(protocol::Empty {}),
    })
}
