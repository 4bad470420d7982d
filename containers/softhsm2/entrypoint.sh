#!/bin/bash
# hsm-harness softhsm2 entrypoint: writes the SoftHSM configuration, initialises the
# token named by TOKEN_LABEL (if set and not there yet), then serves the whole SoftHSM
# module on the unix socket P11_SOCKET: socat accepts, and each connection gets its own
# `p11-kit remote` process (p11-kit's RPC protocol, as p11-kit-client.so speaks it).
# Prints "hsm-harness softhsm2 ready" on stdout once the socket listens; SIGTERM stops.
set -euo pipefail

log() { echo "softhsm2-entrypoint: $*" >&2; }

export SOFTHSM2_CONF="${SOFTHSM2_CONF:-/tmp/softhsm2.conf}"
socket="${P11_SOCKET:-/run/p11-kit/p11.sock}"
tokens="${TOKEN_DIR:-/var/lib/softhsm/tokens}"
mkdir -p "$tokens"
module=/usr/lib/softhsm/libsofthsm2.so

cat >"$SOFTHSM2_CONF" <<CONF
directories.tokendir = $tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

# The value of variable $1, or the first line of the file named by ${1}_FILE.
secret() {
  local name="$1" file_var="${1}_FILE"
  if [ -n "${!name:-}" ]; then
    printf '%s' "${!name}"
  elif [ -n "${!file_var:-}" ]; then
    head -n1 -- "${!file_var}" | tr -d '\r\n'
  fi
}

if [ -n "${TOKEN_LABEL:-}" ]; then
  if softhsm2-util --show-slots 2>/dev/null | grep -qxE "[[:space:]]*Label:[[:space:]]+${TOKEN_LABEL}[[:space:]]*"; then
    log "token '$TOKEN_LABEL' exists already"
  else
    so_pin="$(secret SO_PIN)"
    user_pin="$(secret USER_PIN)"
    if [ -z "$so_pin" ] || [ -z "$user_pin" ]; then
      log "TOKEN_LABEL needs SO_PIN or SO_PIN_FILE and USER_PIN or USER_PIN_FILE"
      exit 2
    fi
    # softhsm2-util reads PINs from the terminal only, so they go as arguments.
    softhsm2-util --init-token --free --label "$TOKEN_LABEL" \
      --so-pin "$so_pin" --pin "$user_pin" >/dev/null
    unset so_pin user_pin
    log "initialised token '$TOKEN_LABEL'"
  fi
fi

mkdir -p "$(dirname "$socket")"
rm -f "$socket"
# Everyone may connect: the harness runs its clients as other users than this one.
socat -lpsocat "UNIX-LISTEN:$socket,fork,mode=0777,unlink-early" \
  EXEC:"p11-kit remote $module" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; exit 0' TERM INT

# Listening: the socket's entry in /proc/net/unix carries __SO_ACCEPTCON (00010000).
listening() {
  [ -S "$socket" ] && awk -v p="$socket" '$8 == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix
}
for _ in $(seq 1 200); do
  listening && break
  kill -0 "$server" 2>/dev/null || { log "socat exited"; exit 1; }
  sleep 0.05
done
if ! listening; then
  log "no listening socket at $socket after 10 s"
  exit 1
fi
echo "hsm-harness softhsm2 ready"
wait "$server"
