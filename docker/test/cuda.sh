# shellcheck shell=bash
# Step 6 of make docker-test, sourced by images.sh (its engine, builder, helpers, torch and CA arguments):
# docker/Dockerfile.cuda, every stage that needs neither NVIDIA's registry nor a GPU.
# Where nvidia/cuda cannot be pulled, both CUDA stages start from the debootstrap image instead (Debian 12 has the
# same python3.11 packages as Ubuntu 22.04), torch is the CPU wheel images.sh serves, and flash-attn (which needs
# nvcc and CUDA's headers from the devel image) is left out with FLASH_ATTN_WHEELS=no-flash-attn.
CUDA_IMAGE="$TAG/nvrag:cuda"
ARGS=()
if docker pull -q nvidia/cuda:12.4.1-runtime-ubuntu22.04 >/dev/null 2>&1; then
    ok "nvidia/cuda can be pulled: building on NVIDIA's images"
    ARGS+=(--build-arg FLASH_ATTN_WHEELS="${FLASH_ATTN_WHEELS:-flash-attn-wheel}")
else
    ROOTFS_IMAGE="$TAG/debian-bookworm:minbase"
    docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1 || die "no $ROOTFS_IMAGE (images.sh step 2 makes it)"
    ok "nvidia/cuda cannot be pulled here: both stages start from $ROOTFS_IMAGE; flash-attn is left out"
    ARGS+=(--build-arg "CUDA_DEVEL_IMAGE=$ROOTFS_IMAGE" --build-arg "CUDA_RUNTIME_IMAGE=$ROOTFS_IMAGE"
        --build-arg FLASH_ATTN_WHEELS=no-flash-attn)
fi

t0=$(now)
"${BUILD[@]}" --progress=plain -t "$CUDA_IMAGE" "${ARGS[@]}" "${TORCH_ARGS[@]}" "${SECRET[@]}" -f docker/Dockerfile.cuda . >"$STATE/build-cuda.log" 2>&1 || {
    tail -30 "$STATE/build-cuda.log" >&2
    die "building $CUDA_IMAGE; the whole log is $STATE/build-cuda.log"
}
size="$(docker image inspect "$CUDA_IMAGE" --format '{{.Size}}')"
timing cuda_build_s "$(since "$t0")"
timing cuda_image_bytes "$size"
ok "built $CUDA_IMAGE (stages build-env, no-flash-attn, runtime): $((size / 1000000)) MB"

docker run --rm "$CUDA_IMAGE" --help >/dev/null || die "nvrag --help in the CUDA image"
docker run --rm --entrypoint python "$CUDA_IMAGE" -c "
import os, faiss, torch, nvrag
assert os.getuid() == 10001, os.getuid()
assert hasattr(faiss, 'StandardGpuResources'), 'faiss is not the GPU build'
print(f'    ok: runs as uid 10001; faiss {faiss.__version__} (GPU build, {faiss.get_num_gpus()} GPUs visible), torch {torch.__version__}')
" || die "imports in the CUDA image"

CONTAINER="$TAG-cuda-$RUN_ID" # removed by images.sh's cleanup
t0=$(now)
docker run -d --name "$CONTAINER" "$CUDA_IMAGE" >/dev/null
wait_healthy "$CONTAINER" 300
timing cuda_run_to_healthy_s "$(since "$t0")"
ok "healthy without a GPU $(since "$t0") s after docker run"
echo "    not built here: the flash-attn-wheel stage (needs nvcc from nvidia/cuda:12.4.1-devel) and a run on a GPU"
