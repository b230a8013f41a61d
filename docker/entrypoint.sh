#!/bin/sh
# nvrag container entrypoint.
#   (no arguments) or "ui": start the web UI on 0.0.0.0:${NVRAG_PORT:-7860}; with NVRAG_DEMO=1 the bundled demo
#                           corpus is indexed first (once: later starts find it up to date).
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

if [ "$#" -eq 0 ] || [ "$1" = "ui" ]; then
    [ "$#" -gt 0 ] && shift
    if [ "${NVRAG_DEMO:-0}" = "1" ]; then
        "$NVRAG_BIN" index "${NVRAG_DEMO_CORPUS:-/app/data/demo/stdlib.jsonl}" --index demo
        set -- --index demo "$@"
    fi
    exec "$NVRAG_BIN" ui --host 0.0.0.0 --port "${NVRAG_PORT:-7860}" "$@"
fi

exec "$NVRAG_BIN" "$@"
