//! `hsm-harness signer serve`: our router behind the signer protocol
//! (`docs/signer-protocol.md`): JSON lines on stdin and stdout, one response per
//! request, in order. Logging goes to stderr.
//!
//! Refused, with an `invalid-input` error and the process going on: a line that is not
//! JSON, a request without `id` or `op`, an unknown `op`, a request before `hello`. A
//! line longer than [`MAX_LINE`] ends the process (exit 2): nothing after it can be
//! trusted to be framed right.

use std::io::{BufRead, Write};

use base64::Engine;
use hsm_signers::{Algorithm, ErrorKind, KeyIdentifier, Router, SignerError};
use serde_json::{json, Value};

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};

/// The protocol version this program speaks.
pub const PROTOCOL: u64 = 1;

/// The longest request line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// What `hello` says this implementation offers.
const FEATURES: &[&str] = &["one-off", "random", "owners", "orphans", "status"];

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
        match (&mut input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
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
                let op = request.get("op").and_then(Value::as_str).unwrap_or("");
                let answer = if id.is_null() || op.is_empty() {
                    Err(invalid("a request needs `id` and `op`"))
                } else if op != "hello" && !greeted {
                    Err(invalid("the first request must be `hello`"))
                } else {
                    match &router {
                        Ok(router) => handle(router, op, &request),
                        Err(e) => Err(e.clone()),
                    }
                };
                greeted |= op == "hello" && answer.is_ok();
                (id, answer, op == "shutdown")
            }
            Err(e) => (Value::Null, Err(invalid(format!("not a JSON request: {e}"))), false),
        };
        let response = match answer {
            Ok(Value::Object(mut fields)) => {
                fields.insert("id".into(), id);
                fields.insert("ok".into(), true.into());
                Value::Object(fields)
            }
            Ok(_) => json!({ "id": id, "ok": true }),
            Err(e) => json!({
                "id": id,
                "ok": false,
                "error": { "kind": e.kind.name(), "message": e.message },
            }),
        };
        if writeln!(output, "{response}").and_then(|()| output.flush()).is_err() {
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

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn field<'a>(request: &'a Value, name: &str) -> Result<&'a Value, SignerError> {
    request
        .get(name)
        .ok_or_else(|| invalid(format!("`{name}` is missing")))
}

fn key(request: &Value) -> Result<KeyIdentifier, SignerError> {
    serde_json::from_value(field(request, "key")?.clone())
        .map_err(|e| invalid(format!("`key`: {e}")))
}

fn alg(request: &Value) -> Result<Algorithm, SignerError> {
    serde_json::from_value(field(request, "alg")?.clone())
        .map_err(|e| invalid(format!("`alg`: {e}")))
}

fn data(request: &Value, name: &str) -> Result<Vec<u8>, SignerError> {
    let text = field(request, name)?
        .as_str()
        .ok_or_else(|| invalid(format!("`{name}` is not a string")))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| invalid(format!("`{name}` is not base64: {e}")))
}

/// One request's answer fields (`id` and `ok` are added by the caller).
fn handle(router: &Router, op: &str, request: &Value) -> Result<Value, SignerError> {
    Ok(match op {
        "hello" => {
            let asked = field(request, "protocol")?
                .as_u64()
                .ok_or_else(|| invalid("`protocol` is not a number"))?;
            if asked < PROTOCOL {
                return Err(SignerError::new(
                    ErrorKind::Unsupported,
                    format!("this signer speaks protocol {PROTOCOL}; the harness asked for {asked}"),
                ));
            }
            json!({
                "protocol": PROTOCOL,
                "implementation": {
                    "name": "hsm-harness router",
                    "version": env!("CARGO_PKG_VERSION"),
                },
                "algorithms": ["rsa2048", "rsa2048-pss", "ecdsa-p256", "ecdsa-p384", "ed25519"],
                "features": FEATURES,
            })
        }
        "create_key" => {
            if request.get("signer").is_some_and(|s| !s.is_null()) {
                return Err(SignerError::unsupported(
                    "`signer` in create_key: this router creates keys with its default signer",
                ));
            }
            let made = router.create_key(alg(request)?)?;
            json!({
                "key": made.id,
                "public_key": b64(&made.public_key),
                "signer": router.default_signer().name(),
            })
        }
        "sign" => {
            let signature = router.sign(&key(request)?, alg(request)?, &data(request, "data")?)?;
            json!({ "signature": b64(&signature) })
        }
        "public_key" => json!({ "public_key": b64(&router.public_key(&key(request)?)?) }),
        "destroy" => json!({ "signer": router.destroy_key_of(&key(request)?)? }),
        "list" => {
            let keys = router.list()?;
            let mut answer = json!({ "keys": keys });
            if request.get("orphans").and_then(Value::as_bool) == Some(true) {
                let orphans: Vec<Value> = router
                    .orphans()
                    .into_iter()
                    .map(|(signer, found)| match found {
                        Ok(keys) => json!({ "signer": signer, "keys": keys }),
                        Err(e) => json!({
                            "signer": signer,
                            "error": { "kind": e.kind.name(), "message": e.message },
                        }),
                    })
                    .collect();
                answer["orphans"] = orphans.into();
            }
            answer
        }
        "random" => {
            let bytes = field(request, "bytes")?
                .as_u64()
                .ok_or_else(|| invalid("`bytes` is not a number"))?;
            let (random, source) = router.random_with_source(bytes as usize)?;
            json!({ "random": b64(&random), "source": source })
        }
        "status" => {
            router.connect_all();
            json!({ "signers": router.status() })
        }
        "sign_one_off" => {
            let (signature, public_key) = router.sign_one_off(alg(request)?, &data(request, "data")?)?;
            json!({ "signature": b64(&signature), "public_key": b64(&public_key) })
        }
        "shutdown" => json!({}),
        other => return Err(invalid(format!("unknown op `{other}`"))),
    })
}
