#!/bin/sh
# nvrag container entrypoint.
#   (no arguments) or "ui": start the web UI on 0.0.0.0:${NVRAG_PORT:-7860}; with NVRAG_DEMO=1 the bundled demo
#                           corpus is indexed first (once: later starts find it up to date).
#   "serve":                start the HTTP API on 0.0.0.0:${NVRAG_API_PORT:-8000} (with NVRAG_DEMO=1, on the demo index).
#                           It needs a key: NVRAG_API_KEY, or else one made on first start and kept in the volume
#                           ($NVRAG_DATA_DIR/api-key, default /data/api-key, readable only by the container's user).
#   anything else:          run `nvrag ARGS...` (e.g. `index /docs --index mine`, `search "..." --index mine`).
# The data directory (NVRAG_DB, default /data/lancedb) must be writable: mount a volume there.
# NV-Embed-v2 weights (CC-BY-NC-4.0) are never in the image: mount them and set NVRAG_NVEMBED_PATH.
set -eu

NVRAG_DB="${NVRAG_DB:-/data/lancedb}"
export NVRAG_DB
NVRAG_BIN="${NVRAG_BIN:-nvrag}"

fail() {
    echo "nvrag-entrypoint: $1" >&2
    exit 2
}

mkdir -p "$NVRAG_DB" 2>/dev/null || fail "cannot create the data directory $NVRAG_DB: mount a writable volume there"
[ -w "$NVRAG_DB" ] || fail "the data directory $NVRAG_DB is not writable by user $(id -un): fix the volume's owner"

if [ -n "${NVRAG_NVEMBED_PATH:-}" ] && [ ! -f "$NVRAG_NVEMBED_PATH/config.json" ]; then
    fail "NVRAG_NVEMBED_PATH=$NVRAG_NVEMBED_PATH has no config.json: mount the NV-Embed-v2 checkpoint folder there"
fi

HEALTH_FILE="${NVRAG_HEALTH_FILE:-/tmp/nvrag-health-url}"

if [ "$#" -eq 0 ] || [ "$1" = "ui" ]; then
    [ "$#" -gt 0 ] && shift
    if [ "${NVRAG_DEMO:-0}" = "1" ]; then
        "$NVRAG_BIN" index "${NVRAG_DEMO_CORPUS:-/app/data/demo/stdlib.jsonl}" --index demo
        set -- --index demo "$@"
    fi
    echo "http://127.0.0.1:${NVRAG_PORT:-7860}/" >"$HEALTH_FILE"
    exec "$NVRAG_BIN" ui --host 0.0.0.0 --port "${NVRAG_PORT:-7860}" "$@"
fi

if [ "$1" = "serve" ]; then
    shift
    if [ -z "${NVRAG_API_KEY:-}" ]; then
        key_file="${NVRAG_DATA_DIR:-/data}/api-key"
        if [ ! -s "$key_file" ]; then
            (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$key_file") 2>/dev/null \
                || fail "cannot write $key_file: set NVRAG_API_KEY or mount a writable volume at ${NVRAG_DATA_DIR:-/data}"
            echo "nvrag-entrypoint: no NVRAG_API_KEY given: made one, kept in $key_file (read it with: cat $key_file)" >&2
        fi
        NVRAG_API_KEY="$(cat "$key_file")"
    fi
    export NVRAG_API_KEY
    if [ "${NVRAG_DEMO:-0}" = "1" ]; then
        set -- --index demo "$@"
    fi
    echo "http://127.0.0.1:${NVRAG_API_PORT:-8000}/health" >"$HEALTH_FILE"
    exec "$NVRAG_BIN" serve --host 0.0.0.0 --port "${NVRAG_API_PORT:-8000}" "$@"
fi

exec "$NVRAG_BIN" "$@"
