# shellcheck shell=bash disable=SC2034  # variables set here are the interface to the scripts that source it
# Container engine functions of run_with_docker.sh and scripts/container_check.sh (source scripts/run_lib.sh
# first: ds2_fail, ds2_note). Docker and podman take the same commands; where podman needs more, it is
# added here, in one place:
#   ds2_container_engine   DOCKER -> DOCKER_CMD (the engine and its global options), ENGINE (docker|podman)
#   ds2_container_ulimits  ULIMITS -> ULIMIT_ARGS (--ulimit ...), CONTAINER_NOTES
#   ds2_container_gpus     GPUS -> GPU_ARGS (--gpus for docker, CDI devices for podman)
# Each function only computes: nothing here starts a container.

# Sets DOCKER (default: docker where its daemon answers, else podman where installed, else docker),
# ENGINE and DOCKER_CMD. Podman is recognized by name or by `--version` (podman-docker installs a `docker`
# that is podman). With podman, PODMAN_RUNTIME=auto|default|<runtime> (default auto) chooses the OCI
# runtime: auto means runc where crun cannot run containers (cgroup v1 with controllers also on the
# cgroup v2 hierarchy: "crun: cgroups in hybrid mode not supported", as on the project's CI VMs), else
# podman's own default. It is a global option (`podman --runtime runc build|run ...`), so builds get it too.
ds2_container_engine() {
  if [ -z "${DOCKER:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      DOCKER=docker
    elif command -v podman >/dev/null 2>&1; then
      DOCKER=podman
    else
      DOCKER=docker   # neither: "docker not found" when it is needed
    fi
  fi
  ENGINE=docker
  case "$(basename "$DOCKER")" in
    podman*) ENGINE=podman ;;
    *) if command -v "$DOCKER" >/dev/null 2>&1 && "$DOCKER" --version 2>/dev/null | grep -qi podman; then ENGINE=podman; fi ;;
  esac
  DOCKER_CMD=("$DOCKER")
  [ "$ENGINE" = podman ] || return 0
  : "${PODMAN_RUNTIME:=auto}"
  local runtime=$PODMAN_RUNTIME
  if [ "$runtime" = auto ]; then
    runtime=default
    if ds2_crun_refuses_cgroups && command -v runc >/dev/null 2>&1; then runtime=runc; fi
  fi
  [[ $runtime =~ ^[A-Za-z0-9_./-]+$ ]] || ds2_fail "PODMAN_RUNTIME='$PODMAN_RUNTIME': auto, default or an OCI runtime (runc, crun, a path)"
  [ "$runtime" = default ] || DOCKER_CMD+=(--runtime "$runtime")
}

# True on a cgroup v1 host whose cgroup v2 hierarchy (/sys/fs/cgroup/unified) has controllers: crun refuses
# to run there, runc does not.
ds2_crun_refuses_cgroups() {
  [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] || return 1
  local controllers; controllers=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
  [ -n "$controllers" ]
}

# True when this shell may raise its hard resource limits (root with CAP_SYS_RESOURCE, or memlock already
# unlimited). Podman's runtime runs as this user, so a container can get no more than this shell could.
ds2_can_raise_limits() { (ulimit -H -l unlimited) 2>/dev/null; }

# The containers.conf files podman reads (CONTAINERS_CONF alone replaces the system ones).
ds2_podman_conf_files() {
  if [ -n "${CONTAINERS_CONF:-}" ]; then echo "$CONTAINERS_CONF"; return 0; fi
  local file
  for file in /usr/share/containers/containers.conf /etc/containers/containers.conf \
              /usr/share/containers/containers.conf.d/*.conf /etc/containers/containers.conf.d/*.conf \
              "${XDG_CONFIG_HOME:-$HOME/.config}"/containers/containers.conf \
              "${XDG_CONFIG_HOME:-$HOME/.config}"/containers/containers.conf.d/*.conf; do
    [ -f "$file" ] && echo "$file"
  done
  return 0
}
DS2_PODMAN_ULIMITS_CONF=/etc/containers/containers.conf.d/50-ds2perf-ulimits.conf

# True when some containers.conf sets default_ulimits (podman then does not raise RLIMIT_NOFILE/NPROC of
# every container to its built-in maximum, which fails where limits cannot be raised).
ds2_podman_has_default_ulimits() {
  local files; mapfile -t files < <(ds2_podman_conf_files)
  (( ${#files[@]} > 0 )) && grep -qsE '^[[:space:]]*default_ulimits[[:space:]]*=' "${files[@]}"
}

# Sets ULIMIT_ARGS from ULIMITS: auto (default) = NVIDIA's recommendation for its PyTorch containers,
# memlock=-1 (pinned host memory for NCCL and DALI) and stack=67108864, except with podman where this
# shell cannot raise its limits: there any --ulimit fails ("setrlimit ... operation not permitted"; podman
# then also raises nofile/nproc), so none is passed and the container keeps the host's limits.
# ULIMITS=none passes none; any other value is a list of --ulimit values used as they are.
# Also sets CONTAINER_NOTES (lines worth telling the user) and fails early, with the fix, where podman
# could start no container at all.
ds2_container_ulimits() {
  local wanted=${ULIMITS:-auto} item
  CONTAINER_NOTES=(); ULIMIT_ARGS=()
  if [ "$ENGINE" = podman ] && ! ds2_can_raise_limits; then
    if ! ds2_podman_has_default_ulimits; then
      local fix="podman cannot start containers here: this user cannot raise resource limits (no CAP_SYS_RESOURCE)"
      fix+=" and podman raises nofile/nproc of every container unless containers.conf sets default_ulimits;"
      fix+=" add '[containers]' and 'default_ulimits = []' to $DS2_PODMAN_ULIMITS_CONF (scripts/container_check.sh does)"
      if [ "${DRY:-false}" = true ]; then CONTAINER_NOTES+=("$fix"); else ds2_fail "$fix"; fi
    fi
    if [ "$wanted" = auto ]; then
      wanted=none
      CONTAINER_NOTES+=("no --ulimit options: podman cannot raise limits here; the container keeps the host's (memlock $(ulimit -H -l) KiB, stack $(ulimit -H -s))")
    fi
  fi
  [ "$wanted" = auto ] && wanted="memlock=-1 stack=67108864"
  [ "$wanted" = none ] && return 0
  for item in $wanted; do
    [[ $item =~ ^[a-z]+=-?[0-9]+(:-?[0-9]+)?$ ]] || ds2_fail "ULIMITS='$ULIMITS': auto, none or a list of name=soft[:hard] (memlock=-1 stack=67108864)"
    ULIMIT_ARGS+=(--ulimit "$item")
  done
}

# Sets GPU_ARGS from GPUS: none, all, or docker's device list ("device=0,1" or device=0,1). Docker takes it
# as --gpus. Podman 4.x accepts --gpus and silently ignores it (a GPU run would train on no GPU), so podman
# gets NVIDIA's CDI devices (nvidia.com/gpu=all or =<index>: `nvidia-ctk cdi generate` makes them).
ds2_container_gpus() {
  GPU_ARGS=()
  [ "$GPUS" = none ] && return 0
  if [ "$ENGINE" = docker ]; then GPU_ARGS=(--gpus "$GPUS"); return 0; fi
  local spec=${GPUS//\"/} device devices
  case "$spec" in
    all) GPU_ARGS=(--device nvidia.com/gpu=all) ;;
    device=*)
      IFS=, read -r -a devices <<< "${spec#device=}"
      for device in "${devices[@]}"; do
        [[ $device =~ ^[0-9]+$|^GPU-[0-9a-f-]+$ ]] || ds2_fail "GPUS='$GPUS': device=<index or UUID>[,...]"
        GPU_ARGS+=(--device "nvidia.com/gpu=$device")
      done ;;
    *) ds2_fail "GPUS='$GPUS': with podman, none, all or device=<i>[,<j>...] (CDI devices nvidia.com/gpu=...)" ;;
  esac
}
