#!/bin/bash
# hsm-harness relay entrypoint. With arguments: runs `kmip2pkcs11 ARGS` (the harness
# passes --config FILE). Without: a standalone relay on 0.0.0.0:5696 in front of a
# SoftHSM token of its own, with a CA, server and client certificate generated into
# RELAY_DIR (default /tmp/relay); clients must present the client certificate.
set -euo pipefail

if [ "$#" -gt 0 ]; then
  exec /usr/local/bin/kmip2pkcs11 "$@"
fi

log() { echo "relay-entrypoint: $*" >&2; }

# The value of variable $1, or the first line of the file named by ${1}_FILE.
secret() {
  local name="$1" file_var="${1}_FILE"
  if [ -n "${!name:-}" ]; then
    printf '%s' "${!name}"
  elif [ -n "${!file_var:-}" ]; then
    head -n1 -- "${!file_var}" | tr -d '\r\n'
  fi
}

dir="${RELAY_DIR:-/tmp/relay}"
label="${TOKEN_LABEL:-hsm-harness}"
mkdir -p "$dir/tokens" "$dir/pki"
chmod 0700 "$dir/pki"

export SOFTHSM2_CONF="$dir/softhsm2.conf"
cat >"$SOFTHSM2_CONF" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

if [ -n "${USER_PIN:-}" ]; then
  pin_source="env:USER_PIN"
elif [ -n "${USER_PIN_FILE:-}" ]; then
  pin_source="file:$USER_PIN_FILE"
else
  log "the standalone relay needs USER_PIN or USER_PIN_FILE (the token's user PIN)"
  exit 2
fi

if softhsm2-util --show-slots 2>/dev/null | grep -qxE "[[:space:]]*Label:[[:space:]]+${label}[[:space:]]*"; then
  log "token '$label' exists already"
else
  so_pin="$(secret SO_PIN)"
  # Without an SO PIN, a random one nobody knows: the token is this relay's alone.
  [ -n "$so_pin" ] || so_pin="$(openssl rand -hex 16)"
  softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" \
    --pin "$(secret USER_PIN)" >/dev/null
  unset so_pin
  log "initialised token '$label'"
fi

pki="$dir/pki"
if [ ! -s "$pki/client.crt" ]; then
  names="DNS:localhost,IP:127.0.0.1,DNS:$(hostname)"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 \
    -subj "/CN=hsm-harness relay CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
  for who in server client; do
    if [ "$who" = server ]; then
      ext="subjectAltName=$names"$'\n'"extendedKeyUsage=serverAuth"
    else
      ext="extendedKeyUsage=clientAuth"
    fi
    openssl req "${ec[@]}" -keyout "$pki/$who.key" -out "$pki/$who.csr" \
      -subj "/CN=hsm-harness relay $who" 2>/dev/null
    openssl x509 -req -in "$pki/$who.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 3650 -out "$pki/$who.crt" \
      -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$ext") \
      2>/dev/null
    rm -f "$pki/$who.csr"
  done
  chmod 0600 "$pki"/*.key
fi

cat >"$dir/relay.toml" <<CONF
listen = "0.0.0.0:5696"
ready_file = "$dir/relay.ready"
log_level = "${LOG_LEVEL:-info}"

[tls]
cert = "$pki/server.crt"
key = "$pki/server.key"
client_ca = "$pki/ca.crt"

[pkcs11]
lib_path = "/usr/lib/softhsm/libsofthsm2.so"
slot = "$label"
user_pin = "$pin_source"
CONF

log "standalone relay for token '$label' on port 5696; clients need a certificate:"
log "  client certificate $pki/client.crt, key $pki/client.key, CA $pki/ca.crt"
log "  (copy them out: docker cp CONTAINER:$pki/client.crt .; mount RELAY_DIR to keep them)"
exec /usr/local/bin/kmip2pkcs11 --config "$dir/relay.toml"
