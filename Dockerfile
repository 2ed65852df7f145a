# UFME-Ray on Ray 2.60 (Python 3.11). The image holds the code and its dependencies only:
# model weights are data, never baked in. Pods get them at start from the model mirror
# (`ufme-ray models pull --from $UFME_MODEL_MIRROR`, every file checked against the sha256 of the
# packaged model manifest) into a volume at UFME_MODEL_DIR; see kuberay/base/rayservice.yaml.
FROM rayproject/ray:2.60.0-py311

# The Ray image runs as user "ray" (uid 1000, gid 100); so do we.
USER 1000:100
WORKDIR /home/ray/ufme-ray

# ONNXRUNTIME=gpu builds the GPU image (kuberay/components/gpu): onnxruntime-gpu, the [gpu] extra,
# with its CUDA 13 and cuDNN 9 wheels, in place of onnxruntime (scripts/install_gpu_runtime.sh says
# why that takes three pip steps). The host needs an NVIDIA driver that supports CUDA 13; the image
# runs CPU-only pods as well. Default: cpu.
ARG ONNXRUNTIME=cpu

# Dependencies first (cached while only the code changes): ray[serve] 2.60 is already in the base
# image and satisfies the package's pin, so pip keeps it.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 scripts/install_gpu_runtime.sh ./scripts/
COPY --chown=1000:100 ufme_ray ./ufme_ray
RUN if [ "$ONNXRUNTIME" = gpu ]; then scripts/install_gpu_runtime.sh --no-cache-dir; \
    else python -m pip install --no-cache-dir . && python -m pip check; fi \
 && rm -rf ufme_ray scripts \
 && python -c "import ufme_ray.serving.app, ufme_ray.jobs.compact, ufme_ray.k8s.client" \
 && ufme-ray models list >/dev/null

# The local-profile Serve config, for `serve deploy` / `serve run` on a cluster made of this image
# (on KubeRay the RayService's serveConfigV2 is used instead). The Gateway needs
# UFME_AUDIT__SUBJECT_KEY (base64 of >= 32 random bytes) in the container's environment.
COPY --chown=1000:100 serve_config.yaml ./

ENV UFME_MODEL_DIR=/models \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
