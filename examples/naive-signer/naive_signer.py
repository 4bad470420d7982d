#!/usr/bin/python3
"""naive-signer: the hsm-harness signer protocol, version 1, for ONE PKCS#11 token.

A second, deliberately naive implementation of docs/signer-protocol.md, to show the
protocol is not our router in disguise. Run it with Debian's Python (python3-pykcs11):

    /usr/bin/python3 naive_signer.py --config CONFIG --state STATE_DIR

It speaks JSON lines on stdin/stdout and logs to stderr. Keys are token objects
labelled "naive-signer" whose CKA_ID is the key identifier (SHA-1 of the public key's
subjectPublicKey BIT STRING content); every request looks the key up on the token again.

What it deliberately does NOT do:
  - no identity key and no signer id (no `identity` feature): a key made under one
    configuration is used under any other that points at the same token;
  - no key map, nothing in STATE_DIR: the token is the only record;
  - one signer only (the default one, or the only one); `one_off_signer` and every
    other [[signers]] entry are ignored; OpenSSL and KMIP signers are not supported;
  - no retries, no back-off, no TLS; a lost session is simply opened again next time.
The harness's identity-binding suite is expected to catch exactly that; the baseline
signing suites must pass.
"""
import argparse, base64, hashlib, json, os, sys, tomllib
import PyKCS11 as P

LABEL = "naive-signer"  # CKA_LABEL of both halves of every key pair it makes

# --- DER, just enough for SubjectPublicKeyInfo and Ecdsa-Sig-Value ---------------------

def tlv(tag, body):
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body

def seq(*parts):
    return tlv(0x30, b"".join(parts))

def der_uint(b):
    b = bytes(b).lstrip(b"\0") or b"\0"
    return tlv(0x02, b"\0" + b if b[0] & 0x80 else b)

def unwrap_point(b, size):
    """CKA_EC_POINT is a DER OCTET STRING around the point (SoftHSM); some modules give it raw."""
    if len(b) == size:
        return b
    if tlv(0x04, b[-size:]) == b:
        return b[-size:]
    raise Fail("backend", f"CKA_EC_POINT of {len(b)} bytes is not a {size}-byte point, raw or wrapped")

def ecdsa_der(raw):  # CKM_ECDSA gives r || s
    half = len(raw) // 2
    return seq(der_uint(raw[:half]), der_uint(raw[half:]))

# DER pieces: algorithm identifiers and curve OIDs.
OID_RSA = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"  # rsaEncryption, NULL
OID_EC = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
OID_P256 = bytes.fromhex("06082a8648ce3d030107")
OID_P384 = bytes.fromhex("06052b81040022")
OID_ED25519 = bytes.fromhex("06032b6570")
# SoftHSM gives an Ed25519 private key CKA_EC_PARAMS = PrintableString "edwards25519".
CURVES = {OID_P256: "p256", OID_P384: "p384", OID_ED25519: "ed25519",
          tlv(0x13, b"edwards25519"): "ed25519"}
POINT_SIZE = {"p256": 65, "p384": 97, "ed25519": 32}  # 04 || X || Y, or the raw Ed25519 key

# algorithm name -> (key kind, hash for ECDSA)
ALGS = {"rsa2048": ("rsa", None), "rsa2048-pss": ("rsa", None),
        "ecdsa-p256": ("p256", hashlib.sha256), "ecdsa-p384": ("p384", hashlib.sha384),
        "ed25519": ("ed25519", None)}
# key kind -> (generation mechanism, public template without the common attributes)
GEN = {"rsa": (P.CKM_RSA_PKCS_KEY_PAIR_GEN,
               [(P.CKA_MODULUS_BITS, 2048), (P.CKA_PUBLIC_EXPONENT, (1, 0, 1))]),
       "p256": (P.CKM_EC_KEY_PAIR_GEN, [(P.CKA_EC_PARAMS, OID_P256)]),
       "p384": (P.CKM_EC_KEY_PAIR_GEN, [(P.CKA_EC_PARAMS, OID_P384)]),
       "ed25519": (P.CKM_EC_EDWARDS_KEY_PAIR_GEN, [(P.CKA_EC_PARAMS, OID_ED25519)])}
# PKCS#11 errors that mean "the token went away": forget the session, answer unavailable.
GONE = {P.CKR_SESSION_HANDLE_INVALID, P.CKR_SESSION_CLOSED, P.CKR_DEVICE_REMOVED,
        P.CKR_TOKEN_NOT_PRESENT, P.CKR_DEVICE_ERROR, P.CKR_CRYPTOKI_NOT_INITIALIZED}
BAD_PIN = {P.CKR_PIN_INCORRECT, P.CKR_PIN_LOCKED, P.CKR_PIN_LEN_RANGE,
           P.CKR_PIN_INVALID, P.CKR_USER_PIN_NOT_INITIALIZED}

class Fail(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message

def log(*args):
    print("naive-signer:", *args, file=sys.stderr, flush=True)

def ckr(e):  # "CKR_PIN_INCORRECT"
    return P.CKR.get(e.value, hex(e.value)) if e.value >= 0 else str(e)

# --- configuration --------------------------------------------------------------------

def load_config(path):
    """The PKCS#11 entry to use, or raises Fail (config / unsupported)."""
    try:
        with open(path, "rb") as f:
            conf = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise Fail("config", f"{path}: {e}")
    signers = conf.get("signers") or []
    if not signers:
        raise Fail("unsupported", "no [[signers]] configured (an implicit OpenSSL signer): "
                                  "naive-signer only speaks PKCS#11")
    wanted = conf.get("default_signer")
    if wanted is None and len(signers) > 1:
        raise Fail("config", f"{len(signers)} signers but no default_signer")
    entry = next((s for s in signers if wanted is None or s.get("name") == wanted), None)
    if entry is None:
        raise Fail("config", f"default_signer '{wanted}' is not a configured signer")
    if entry.get("type") != "PKCS#11":
        raise Fail("unsupported", f"signer '{entry.get('name')}' is of type "
                                  f"{entry.get('type')!r}: naive-signer only speaks PKCS#11")
    for key in ("name", "lib_path", "slot"):
        if key not in entry:
            raise Fail("config", f"PKCS#11 signer entry without `{key}`")
    return entry

def read_pin(value):
    if value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if value.startswith("env:"):
        if value[4:] not in os.environ:
            raise Fail("config", f"user_pin: environment variable {value[4:]} is not set")
        return os.environ[value[4:]]
    if value.startswith("file:"):
        try:
            with open(value[5:], encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise Fail("config", f"user_pin: cannot read {value[5:]}: {e.strerror}")
        return text[:-1] if text.endswith("\n") else text
    return value

# --- the signer -----------------------------------------------------------------------

class Signer:
    def __init__(self, config_path):
        self.problem, self.conf, self.lib, self.session = None, None, None, None
        try:
            self.conf = load_config(config_path)
            self.name = self.conf["name"]
        except Fail as e:
            self.problem, self.name = e, "(none)"
            log(f"{e.kind}: {e.message}")

    def connect(self):
        if self.problem:
            raise self.problem
        if self.session:
            return self.session
        c = self.conf
        try:
            lib = P.PyKCS11Lib()
            lib.load(c["lib_path"])
        except P.PyKCS11Error as e:
            raise Fail("unavailable", f"cannot load {c['lib_path']}: {e}")
        slot = c["slot"]
        slots = lib.getSlotList(tokenPresent=True)
        if isinstance(slot, str) and slot.lower().startswith("0x"):
            slot = int(slot, 16)
        if isinstance(slot, int):
            if slot not in slots:
                raise Fail("unavailable", f"no token in slot id {slot:#x}")
        else:
            labels = {s: lib.getTokenInfo(s).label.strip() for s in slots}
            found = [s for s, label in labels.items() if label == slot]
            if not found:
                raise Fail("unavailable", f"no token labelled '{slot}' (seen: {sorted(labels.values())})")
            slot = found[0]
        self.token_label = lib.getTokenInfo(slot).label.strip()
        session = lib.openSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION)
        if c.get("login", True):
            pin = read_pin(c.get("user_pin"))
            if pin is None:
                raise Fail("config", f"signer '{self.name}': login = true but no user_pin")
            try:
                session.login(pin)
            except P.PyKCS11Error as e:
                if e.value in BAD_PIN:  # never retried (a token may lock the PIN); never print it
                    self.problem = Fail("unusable", f"token '{self.token_label}' refused the login: {ckr(e)}")
                    raise self.problem
                if e.value != P.CKR_USER_ALREADY_LOGGED_IN:
                    raise
        log(f"connected to token '{self.token_label}' (slot {slot:#x}) via {c['lib_path']}")
        self.lib, self.slot, self.session = lib, slot, session
        return session

    # Keys are found by CKA_ID and our label, both halves alike.
    def objects(self, key, cls=None):
        try:
            cka_id = bytes.fromhex(key)
        except (TypeError, ValueError):
            raise Fail("invalid-input", f"`key` is not hex: {key!r}")
        tmpl = [(P.CKA_ID, cka_id), (P.CKA_LABEL, LABEL)] + ([(P.CKA_CLASS, cls)] if cls is not None else [])
        return self.connect().findObjects(tmpl)

    def half(self, key, cls):
        found = self.objects(key, cls)
        if not found:
            raise Fail("not-found", f"no key {key} on token '{self.token_label}'")
        return found[0]

    def kind(self, h):
        s = self.connect()
        key_type = s.getAttributeValue(h, [P.CKA_KEY_TYPE])[0]
        if key_type == P.CKK_RSA:
            return "rsa"
        params = bytes(s.getAttributeValue(h, [P.CKA_EC_PARAMS], True)[0])
        return CURVES.get(params, "unknown")

    def spki(self, pub):
        """(kind, DER SubjectPublicKeyInfo, key identifier) of a public key object."""
        s, kind = self.connect(), self.kind(pub)
        if kind == "rsa":
            n, e = s.getAttributeValue(pub, [P.CKA_MODULUS, P.CKA_PUBLIC_EXPONENT], True)
            key, alg = seq(der_uint(n), der_uint(e)), seq(OID_RSA)
        elif kind in ("p256", "p384", "ed25519"):
            key = unwrap_point(bytes(s.getAttributeValue(pub, [P.CKA_EC_POINT], True)[0]), POINT_SIZE[kind])
            oid = OID_P256 if kind == "p256" else OID_P384
            alg = seq(OID_ED25519) if kind == "ed25519" else seq(OID_EC, oid)
        else:
            raise Fail("unsupported", "a key of a kind naive-signer does not know")
        return kind, seq(alg, tlv(0x03, b"\0" + key)), hashlib.sha1(key).hexdigest()

    def generate(self, alg, on_token):
        kind = ALGS[alg][0]
        mech, pub = GEN[kind]
        tmp_id = os.urandom(20)
        common = [(P.CKA_TOKEN, on_token), (P.CKA_LABEL, LABEL), (P.CKA_ID, tmp_id)]
        pub = pub + common + [(P.CKA_VERIFY, True)]
        priv = common + [(P.CKA_PRIVATE, True), (P.CKA_SENSITIVE, True),
                         (P.CKA_EXTRACTABLE, False), (P.CKA_SIGN, True)]
        return self.connect().generateKeyPair(pub, priv, P.Mechanism(mech))

    def sign_with(self, priv, alg, data):
        (kind, digest), actual = ALGS[alg], self.kind(priv)
        if actual != kind:
            raise Fail("invalid-input", f"{alg} needs a {kind} key; this one is {actual}")
        s = self.connect()
        if alg == "rsa2048":
            return bytes(s.sign(priv, data, P.Mechanism(P.CKM_SHA256_RSA_PKCS)))
        if alg == "rsa2048-pss":
            mech = P.RSA_PSS_Mechanism(P.CKM_SHA256_RSA_PKCS_PSS, P.CKM_SHA256, P.CKG_MGF1_SHA256, 32)
            return bytes(s.sign(priv, data, mech))
        if alg == "ed25519":
            return bytes(s.sign(priv, data, P.Mechanism(P.CKM_EDDSA)))
        # ECDSA: hash here, CKM_ECDSA on the digest, raw r||s to DER.
        return ecdsa_der(bytes(s.sign(priv, digest(data).digest(), P.Mechanism(P.CKM_ECDSA))))

    # --- ops: each takes the request, returns the result fields ---

    def op_create_key(self, r):
        alg = alg_of(r)
        if r.get("signer") not in (None, self.name):
            raise Fail("unsupported", f"naive-signer makes keys with its one signer '{self.name}' only")
        pub, priv = self.generate(alg, True)
        _, spki, key = self.spki(pub)
        for h in (pub, priv):
            self.session.setAttributeValue(h, [(P.CKA_ID, bytes.fromhex(key))])
        log(f"created {alg} key {key}")
        return {"key": key, "public_key": b64(spki), "signer": self.name}

    def op_sign(self, r):
        alg, data = alg_of(r), unb64(r, "data")
        return {"signature": b64(self.sign_with(self.half(field(r, "key"), P.CKO_PRIVATE_KEY), alg, data))}

    def op_public_key(self, r):
        return {"public_key": b64(self.spki(self.half(field(r, "key"), P.CKO_PUBLIC_KEY))[1])}

    def op_destroy(self, r):
        found = self.objects(field(r, "key"))
        if not found:
            raise Fail("not-found", f"no key {r['key']} on token '{self.token_label}'")
        for h in found:
            self.session.destroyObject(h)
        return {"signer": self.name}

    def op_list(self, r):
        keys = []
        for pub in self.connect().findObjects([(P.CKA_CLASS, P.CKO_PUBLIC_KEY), (P.CKA_LABEL, LABEL)]):
            kind, _, key = self.spki(pub)
            entry = {"key": key, "signer": self.name}
            if kind != "rsa":  # an RSA key may be rsa2048 or rsa2048-pss: without a map we cannot tell
                entry["alg"] = "ed25519" if kind == "ed25519" else "ecdsa-" + kind
            keys.append(entry)
        return {"keys": keys}

    def op_random(self, r):
        n = field(r, "bytes")
        if not isinstance(n, int) or not 0 <= n <= 65536:
            raise Fail("invalid-input", f"`bytes` must be an integer from 0 to 65536, not {n!r}")
        data = bytes(self.connect().generateRandom(n)) if n else b""
        return {"random": b64(data), "source": "default-signer"}

    def op_info(self, r):
        if r.get("signer") not in (None, self.name):
            raise Fail("not-found", f"no configured signer '{r['signer']}' (this one is '{self.name}')")
        self.connect()
        token = self.lib.getTokenInfo(self.slot)
        return {"name": self.name, "type": "PKCS#11", "details": {
            "library": self.conf["lib_path"], "lib_path": self.conf["lib_path"],
            "slot": f"{self.slot:#x}", "token_label": self.token_label,
            "token_serial": token.serialNumber.strip()}}

    def op_sign_one_off(self, r):
        alg, data = alg_of(r), unb64(r, "data")
        pub, priv = self.generate(alg, False)
        try:
            return {"signature": b64(self.sign_with(priv, alg, data)),
                    "public_key": b64(self.spki(pub)[1]), "signer": self.name}
        finally:
            for h in (pub, priv):
                self.session.destroyObject(h)

    def handle(self, r):
        op = r.get("op")
        if op == "hello":
            if not isinstance(r.get("protocol"), int) or r["protocol"] < 1:
                raise Fail("unsupported", f"naive-signer speaks protocol 1, not {r.get('protocol')!r}")
            return {"protocol": 1, "implementation": {"name": "naive-signer", "version": "0.1"},
                    "algorithms": list(ALGS), "features": ["one-off", "random", "owners", "info"]}
        if op == "shutdown":
            return {}
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if fn is None:
            raise Fail("invalid-input", f"unknown op {op!r}")
        try:
            return fn(r)
        except P.PyKCS11Error as e:
            if e.value in GONE:  # no retry: the next request connects again
                self.session = self.lib = None
                raise Fail("unavailable", f"{op}: {ckr(e)}; the session is dropped, the next request connects again")
            raise Fail("backend", f"{op}: {ckr(e)}")

def field(r, name):
    if name not in r:
        raise Fail("invalid-input", f"`{name}` is missing")
    return r[name]

def alg_of(r):
    alg = field(r, "alg")
    if not isinstance(alg, str) or alg not in ALGS:
        raise Fail("unsupported", f"algorithm {alg!r} is not offered (offered: {', '.join(ALGS)})")
    return alg

def b64(b):
    return base64.b64encode(b).decode()

def unb64(r, name):
    try:
        return base64.b64decode(field(r, name), validate=True)
    except (TypeError, ValueError) as e:
        raise Fail("invalid-input", f"`{name}` is not base64: {e}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--state", required=True, help="ignored: naive-signer keeps no state")
    args = ap.parse_args()
    signer = Signer(args.config)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            request = {}
            answer = Fail("invalid-input", f"not a JSON request: {e}")
        else:
            try:
                answer = signer.handle(request)
            except Fail as e:
                answer = e
            except Exception as e:  # a bug here, or a surprise from PyKCS11: say so, go on
                answer = Fail("backend", f"{type(e).__name__}: {e}")
        if isinstance(answer, Fail):
            log(f"{request.get('op')}: {answer.kind}: {answer.message}")
            out = {"id": request.get("id"), "ok": False,
                   "error": {"kind": answer.kind, "message": answer.message}}
        else:
            out = {"id": request.get("id"), "ok": True, **answer}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        if request.get("op") == "shutdown":
            break
    return 0

if __name__ == "__main__":
    sys.exit(main())
