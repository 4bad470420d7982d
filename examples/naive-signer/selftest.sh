#!/usr/bin/env bash
# Self-test of naive-signer against a throw-away SoftHSMv2 token, without the harness.
#
#   examples/naive-signer/selftest.sh        (exit 0: all passed; non-zero: the first failure)
#
# Needs: /usr/bin/python3 with python3-pykcs11, softhsm2 (softhsm2-util, libsofthsm2.so)
# and the openssl CLI (3.x). Signatures are verified with openssl, key identifiers are
# recomputed from the DER public keys with openssl asn1parse + sha1sum, and the token is
# inspected with PyKCS11 directly (not through the signer).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
LIB=${SOFTHSM2_LIB:-/usr/lib/softhsm/libsofthsm2.so}
ALGS=(rsa2048 rsa2048-pss ecdsa-p256 ecdsa-p384 ed25519)

fail() { echo "FAIL: $*" >&2; [ -s "${work:-/nonexistent}/signer.log" ] && sed 's/^/  signer log: /' "$work/signer.log" >&2; exit 1; }
pass() { echo "ok   $*"; }

$PY -c 'import PyKCS11' 2>/dev/null || fail "$PY cannot import PyKCS11 (apt-get install python3-pykcs11)"
[ -e "$LIB" ] || fail "no SoftHSMv2 module at $LIB (apt-get install softhsm2, or set SOFTHSM2_LIB)"
command -v softhsm2-util >/dev/null || fail "softhsm2-util is not installed"
command -v openssl >/dev/null || fail "openssl is not installed"

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/tokens" "$work/state"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" >"$work/softhsm2.conf"
export SOFTHSM2_CONF=$work/softhsm2.conf
softhsm2-util --init-token --free --label t1 --so-pin 1234 --pin 5678 >/dev/null

pkcs11_config() { # NAME PIN_SOURCE
	printf '[[signers]]\ntype = "PKCS#11"\nname = "%s"\nlib_path = "%s"\nslot = "t1"\nuser_pin = "%s"\n' "$1" "$LIB" "$2"
}
pkcs11_config hsm 'env:PIN' >"$work/env.toml"
printf '5678\n' >"$work/pin"
pkcs11_config hsm "file:$work/pin" >"$work/file.toml"
{ echo 'default_signer = "hsm"'; pkcs11_config hsm 'env:PIN'; printf '[[signers]]\ntype = "OpenSSL"\nname = "soft"\n'; } >"$work/two.toml"
printf 'default_signer = "soft"\n[[signers]]\ntype = "OpenSSL"\nname = "soft"\n' >"$work/openssl.toml"

# --- talking to the signer ---------------------------------------------------------------
n=0
start_signer() { # CONFIG [PIN]
	coproc SIGNER { PIN=${2:-5678} exec "$PY" "$here/naive_signer.py" --config "$1" --state "$work/state" 2>>"$work/signer.log"; }
	pid=$SIGNER_PID; out=${SIGNER[0]}; in=${SIGNER[1]}
	req '"op":"hello","protocol":1'; expect_ok hello
}
stop_signer() { # sends shutdown, checks the exit status
	req '"op":"shutdown"'; expect_ok shutdown
	[ "$resp" = "{\"id\": $n, \"ok\": true}" ] || fail "shutdown answered $resp"
	exec {in}>&-
	local rc=0; wait "$pid" || rc=$?
	pid=
	[ "$rc" = 0 ] || fail "the signer exited $rc after shutdown"
}
req() { # JSON fields after the id -> $resp
	n=$((n + 1))
	printf '{"id":%d,%s}\n' "$n" "$1" >&"$in"
	IFS= read -r -t 120 -u "$out" resp || fail "no answer to {$1}"
	[ "$(get id)" = "$n" ] || fail "answer to request $n has another id: $resp"
}
get() { # FIELD[.FIELD...] of $resp (strings raw, the rest as JSON)
	$PY -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v.get(k)
print(v if isinstance(v, str) else json.dumps(v))' "$resp" "$1"
}
expect_ok() { [ "$(get ok)" = true ] || fail "$1: $resp"; }
expect_error() { # KIND WHAT
	[ "$(get ok)" = false ] && [ "$(get error.kind)" = "$1" ] || fail "$2: wanted error $1, got $resp"
	pass "$2 -> $1"
}

# --- independent checks --------------------------------------------------------------------
keyid_of() { # DER SPKI file -> SHA-1 of the subjectPublicKey BIT STRING content
	local off hl len
	read -r off hl len < <(openssl asn1parse -inform DER -in "$1" | grep -m1 'BIT STRING' |
		sed -E 's/^ *([0-9]+):d=[0-9]+ +hl= *([0-9]+) +l= *([0-9]+).*/\1 \2 \3/')
	tail -c +$((off + hl + 2)) "$1" | head -c $((len - 1)) | sha1sum | cut -d' ' -f1
}
verify() { # ALG PEM SIG DATA
	case $1 in
	rsa2048) openssl dgst -sha256 -verify "$2" -signature "$3" "$4" ;;
	rsa2048-pss) openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 \
		-sigopt rsa_mgf1_md:sha256 -verify "$2" -signature "$3" "$4" ;;
	ecdsa-p256) openssl dgst -sha256 -verify "$2" -signature "$3" "$4" ;;
	ecdsa-p384) openssl dgst -sha384 -verify "$2" -signature "$3" "$4" ;;
	ed25519) openssl pkeyutl -verify -pubin -inkey "$2" -rawin -in "$4" -sigfile "$3" ;;
	esac >/dev/null 2>&1
}
check_signature() { # ALG B64-SPKI B64-SIG WHAT
	echo "$2" | base64 -d >"$work/pub.der"
	openssl pkey -pubin -inform DER -in "$work/pub.der" -out "$work/pub.pem" 2>/dev/null || fail "$4: public key is not a DER SPKI"
	echo "$3" | base64 -d >"$work/sig"
	verify "$1" "$work/pub.pem" "$work/sig" "$work/data" || fail "$4: the signature does not verify"
	verify "$1" "$work/pub.pem" "$work/sig" "$work/other" && fail "$4: the signature verifies other data too"
	case $1 in ed25519) [ "$(stat -c %s "$work/sig")" = 64 ] || fail "$4: not 64 bytes" ;; esac
	case $1 in ecdsa-*) openssl asn1parse -inform DER -in "$work/sig" >/dev/null 2>&1 || fail "$4: not DER" ;; esac
	return 0
}
on_token() { # HEX -> "public private sensitive extractable token" of the objects with that CKA_ID
	$PY - "$LIB" "$1" <<'EOF'
import sys, PyKCS11 as P
lib = P.PyKCS11Lib(); lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(True) if lib.getTokenInfo(s).label.strip() == "t1"][0]
s = lib.openSession(slot); s.login("5678")
cka_id = bytes.fromhex(sys.argv[2])
pubs = s.findObjects([(P.CKA_CLASS, P.CKO_PUBLIC_KEY), (P.CKA_ID, cka_id)])
privs = s.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_ID, cka_id)])
attrs = s.getAttributeValue(privs[0], [P.CKA_SENSITIVE, P.CKA_EXTRACTABLE, P.CKA_TOKEN]) if privs else []
print(len(pubs), len(privs), *attrs)
EOF
}

head -c 1000 /dev/urandom >"$work/data"
printf 'other data' >"$work/other"
data=$(base64 -w0 "$work/data")

# --- 1: create, sign, verify ------------------------------------------------------------------
start_signer "$work/env.toml"
[ "$(get protocol)" = 1 ] && [ "$(get implementation.name)" = naive-signer ] || fail "hello: $resp"
[ "$(get features)" = '["one-off", "random", "owners", "info"]' ] || fail "hello features: $resp"
[ "$(get algorithms)" = '["rsa2048", "rsa2048-pss", "ecdsa-p256", "ecdsa-p384", "ed25519"]' ] || fail "hello algorithms: $resp"
pass "hello"
declare -A KEY PUB
for alg in "${ALGS[@]}"; do
	req "\"op\":\"create_key\",\"alg\":\"$alg\""; expect_ok "create_key $alg"
	KEY[$alg]=$(get key); PUB[$alg]=$(get public_key)
	[ "$(get signer)" = hsm ] || fail "create_key $alg: signer: $resp"
	echo "${PUB[$alg]}" | base64 -d >"$work/pub.der"
	[ "$(keyid_of "$work/pub.der")" = "${KEY[$alg]}" ] || fail "create_key $alg: key ${KEY[$alg]} is not the SHA-1 of the public key"
	[ "$(on_token "${KEY[$alg]}")" = "1 1 True False True" ] || fail "create_key $alg: on the token: $(on_token "${KEY[$alg]}")"
	req "\"op\":\"public_key\",\"key\":\"${KEY[$alg]}\""; expect_ok "public_key $alg"
	[ "$(get public_key)" = "${PUB[$alg]}" ] || fail "public_key $alg differs from create_key's"
	req "\"op\":\"sign\",\"key\":\"${KEY[$alg]}\",\"alg\":\"$alg\",\"data\":\"$data\""; expect_ok "sign $alg"
	check_signature "$alg" "${PUB[$alg]}" "$(get signature)" "sign $alg"
	pass "$alg: create_key (key id, pair on the token by CKA_ID, sensitive), public_key, sign + openssl verify"
done
req "\"op\":\"sign\",\"key\":\"${KEY[ecdsa-p256]}\",\"alg\":\"rsa2048\",\"data\":\"$data\""
expect_error invalid-input "sign rsa2048 with an ecdsa-p256 key"
req "\"op\":\"create_key\",\"alg\":\"rsa4096\""; expect_error unsupported "create_key rsa4096"
req "\"op\":\"sign\",\"key\":\"$(printf '%040d' 0)\",\"alg\":\"rsa2048\",\"data\":\"$data\""; expect_error not-found "sign with an unknown key"
req '"op":"frobnicate"'; expect_error invalid-input "unknown op"

req '"op":"random","bytes":48'; expect_ok random
[ "$(get random | base64 -d | wc -c)" = 48 ] && [ "$(get source)" = default-signer ] || fail "random: $resp"
pass "random 48 bytes"
req '"op":"info"'; expect_ok info
[ "$(get name)/$(get type)/$(get details.token_label)/$(get details.library)" = "hsm/PKCS#11/t1/$LIB" ] || fail "info: $resp"
pass "info"
req '"op":"info","signer":"elsewhere"'; expect_error not-found "info of an unknown signer"

req '"op":"list"'; expect_ok list
before=$(get keys)
for alg in "${ALGS[@]}"; do
	grep -q "\"key\": \"${KEY[$alg]}\", \"signer\": \"hsm\"" <<<"$resp" || fail "list lacks $alg key: $resp"
done
[ "$(get keys | grep -o '"key"' | wc -l)" = 5 ] || fail "list: $resp"
pass "list: the 5 keys, signer hsm"

for alg in "${ALGS[@]}"; do
	req "\"op\":\"sign_one_off\",\"alg\":\"$alg\",\"data\":\"$data\""; expect_ok "sign_one_off $alg"
	[ "$(get signer)" = hsm ] || fail "sign_one_off $alg: $resp"
	check_signature "$alg" "$(get public_key)" "$(get signature)" "sign_one_off $alg"
done
req '"op":"list"'; [ "$(get keys)" = "$before" ] || fail "one-off keys left a trace: $resp"
pass "sign_one_off for every algorithm, nothing left on the token"
stop_signer
pass "shutdown: {} and exit 0"

# --- 2: a new process (file: PIN) finds the keys on the token, destroys them ---------------------
start_signer "$work/file.toml" unused
for alg in "${ALGS[@]}"; do
	req "\"op\":\"sign\",\"key\":\"${KEY[$alg]}\",\"alg\":\"$alg\",\"data\":\"$data\""; expect_ok "sign $alg after restart"
	check_signature "$alg" "${PUB[$alg]}" "$(get signature)" "sign $alg after restart"
	req "\"op\":\"destroy\",\"key\":\"${KEY[$alg]}\""; expect_ok "destroy $alg"
	[ "$(get signer)" = hsm ] || fail "destroy $alg: $resp"
	[ "$(on_token "${KEY[$alg]}")" = "0 0" ] || fail "destroy $alg: still on the token"
	req "\"op\":\"sign\",\"key\":\"${KEY[$alg]}\",\"alg\":\"$alg\",\"data\":\"$data\""; expect_error not-found "sign $alg after destroy"
	req "\"op\":\"public_key\",\"key\":\"${KEY[$alg]}\""; expect_error not-found "public_key $alg after destroy"
	req "\"op\":\"destroy\",\"key\":\"${KEY[$alg]}\""; expect_error not-found "destroy $alg twice"
done
req '"op":"list"'; [ "$(get keys)" = '[]' ] || fail "list after destroying everything: $resp"
pass "restart with a file: PIN: sign, destroy (gone from the token), list empty"
stop_signer

# --- 3: a wrong PIN, a second signer, an OpenSSL-only configuration, end of input ------------------
start_signer "$work/env.toml" wrong-pin-4242
req '"op":"random","bytes":8'; expect_error unusable "wrong PIN"
stop_signer
grep -q wrong-pin-4242 "$work/signer.log" && fail "the PIN is in the signer's log"
start_signer "$work/two.toml"
req '"op":"create_key","alg":"ecdsa-p256"'; expect_ok "create_key with two signers"
[ "$(get signer)" = hsm ] || fail "two signers: $resp"
pass "two signers: the default (PKCS#11) one makes the key"
stop_signer
start_signer "$work/openssl.toml"
req '"op":"create_key","alg":"ecdsa-p256"'; expect_error unsupported "OpenSSL default signer"
stop_signer
rc=0; printf '{"id":1,"op":"hello","protocol":1}\n' | PIN=5678 "$PY" "$here/naive_signer.py" --config "$work/env.toml" --state "$work/state" >/dev/null 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "end of input: exit $rc"
pass "end of input: exit 0"
echo "all naive-signer self-tests passed"
