# A CPU stand-in for the NGC PyTorch base (nvcr.io/nvidia/pytorch:26.07-py3), built from Debian packages on
# a machine that reaches no container registry, so that the project's real Dockerfile can be built and run
# there unchanged:  docker build --build-arg BASE_IMAGE=<this image> .   (scripts/container_check.sh does it)
#
# What it copies from the NGC image, because the project's Dockerfile and scripts rely on it:
#   - root, WORKDIR /workspace, apt-get usable (scripts/setup.sh installs sox, espeak-ng, flac, fortunes);
#   - the distribution's python3 with pip, packages installed system-wide by pip into
#     /usr/local/lib/python3.X/dist-packages, and the distribution's EXTERNALLY-MANAGED marker kept
#     (hence the Dockerfile's PIP_BREAK_SYSTEM_PACKAGES=1);
#   - torch preinstalled, and NGC's pip habit: every preinstalled package pinned in /etc/pip/constraint.txt
#     with PIP_CONSTRAINT pointing at it. numpy is pinned deliberately to a release other than the
#     project's requirements.txt, so a build that did not unset PIP_CONSTRAINT would fail here as it would
#     on NGC (NGC pins its own versions too).
# What it cannot copy: Ubuntu 24.04 and Python 3.12 (this is Debian bookworm's 3.11: the local CPU wheel
# is cp311), CUDA, cuDNN, NCCL, NVIDIA's own torch build, GPUs for DALI.
#
# Build context (scripts/container_check.sh assembles it):
#   wheels/    the pinned CPU torch wheel, torch-2.13.0+cpu-*.whl (never an unpinned multi-GB CUDA torch
#              from PyPI), bind-mounted for the install so the 190 MB wheel leaves no layer behind; torch's
#              own dependencies (sympy, networkx, ...) and numpy come from PyPI;
#   local-ca/  the host's local CA certificates (/usr/local/share/ca-certificates/*.crt, maybe none):
#              where PyPI is reached through a TLS-intercepting proxy, pip in the image (and in the
#              project's build on top of it) must trust the same CA as the host.
ARG DEBIAN_IMAGE=localhost/ds2perf-debian-minbase:bookworm
# hadolint ignore=DL3006
FROM ${DEBIAN_IMAGE}

COPY local-ca/ /usr/local/share/ca-certificates/
# The base is an unpinned debootstrap of bookworm already, so apt versions are not pinned either.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-pip python-is-python3 ca-certificates \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ARG TORCH_VERSION=2.13.0+cpu
ARG NUMPY_VERSION=2.3.5
RUN --mount=type=bind,source=wheels,target=/wheels \
    python3 -m pip install --no-cache-dir --break-system-packages --disable-pip-version-check \
      --find-links /wheels "torch==${TORCH_VERSION}" "numpy==${NUMPY_VERSION}" \
 && mkdir -p /etc/pip \
 && python3 -m pip freeze --exclude-editable > /etc/pip/constraint.txt \
 && python3 -c "import torch; assert torch.__version__ == '${TORCH_VERSION}', torch.__version__"

ENV PIP_CONSTRAINT=/etc/pip/constraint.txt \
    NVIDIA_PYTORCH_VERSION=standin-cpu \
    PYTORCH_VERSION=${TORCH_VERSION}
WORKDIR /workspace
