# Sourced by the bench/gpu_*.sh scripts (from the repository's root): the Python to run, the
# build settings of gsplat's kernels, unbuffered output, and the 512 px synthetic head.
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
SYN512=${GH_SYN_DATA:-/tmp/gh_syn512}

# The synthetic head of the fidelity studies (600 frames at 512 px, novel views of the last
# 100) in $SYN512, made when missing.
synthetic_512() {
    [ -f "$SYN512/transforms.json" ] || "$PY" tools/make_synthetic.py "$SYN512" --frames 600 \
        --res 512 --seed 0 --workers "$(nproc)" >/dev/null
}
