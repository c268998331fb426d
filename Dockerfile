# ds2perf: the DeepSpeech2 training benchmark in a container for NVIDIA GPUs.
#   docker build -t ds2perf .
#   ./run_with_docker.sh             # mounts data/ and results/, forwards the config variables, NEXP runs
#
# Base: NGC PyTorch 26.07 (Ubuntu 24.04, Python 3.12, CUDA 13.3, cuDNN, NCCL, torch 2.13.0a0 built by
# NVIDIA), pinned by tag so that a rebuild gets the same stack. Its torch replaces the CPU pin
# torch==2.13.0 of requirements.txt (the same 2.13 line, built for CUDA): KEEP_TORCH=true below installs
# every other pin and leaves that torch alone.
# BASE_IMAGE exists for one reason: where no registry is reachable, scripts/container_check.sh builds this
# same file on a local CPU stand-in for the NGC image (scripts/ngc-standin.Dockerfile). A build argument,
# not the stand-in tagged under the NGC name, so that the name nvcr.io/nvidia/pytorch:* in a local image
# store only ever means NVIDIA's image: a real build never picks up a CPU stand-in by accident.
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:26.07-py3
FROM ${BASE_IMAGE}

WORKDIR /workspace/ds2perf

# Dependencies first, with the same script and the same lists as the bare-machine set-up (one list, no
# drift): apt packages (sox, espeak-ng, flac, fortunes) and the pinned requirements including DALI.
# Copying only these files keeps this layer cached while the code changes.
#   NO_VENV=true     install into the image's python, beside NVIDIA's torch (no .venv in the image)
#   PIP_CONSTRAINT   unset for this step: NGC images pin their own package versions in
#                    /etc/pip/constraint.txt, and the project's pins must win so the image runs what the
#                    tests ran
COPY requirements.txt requirements-dali.txt ./
COPY scripts/setup.sh scripts/setup.sh
ENV PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1
RUN env -u PIP_CONSTRAINT NO_VENV=true KEEP_TORCH=true WITH_DALI=true scripts/setup.sh \
 && rm -rf /var/lib/apt/lists/*

COPY . .

# run_and_time.sh uses this interpreter instead of .venv; the commit is recorded beside each result
# (the image has no .git): docker build --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) ...
ARG GIT_COMMIT=unknown
ENV PYTHON=python3 \
    DS2PERF_GIT_COMMIT=${GIT_COMMIT}
CMD ["./run_and_time.sh"]
