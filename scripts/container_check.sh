#!/usr/bin/env bash
# Usage: [TESTS=full|fast|none] [NO_CACHE=true] [DOCKER=podman|docker] [CHECK_DIR=dir] [DRY_RUN=1]
#        scripts/container_check.sh [--help]
#
# The container check: builds the project's real Dockerfile and runs the benchmark in the image, on a
# machine that reaches no container registry (NGC's base cannot be pulled), in one command, as root:
#   1. installs what it needs: podman and runc (apt) unless a docker daemon answers; debootstrap when the
#      Debian base must be made; where podman cannot raise resource limits (no CAP_SYS_RESOURCE), the
#      containers.conf drop-in `default_ulimits = []` without which no container starts
#      (/etc/containers/containers.conf.d/50-ds2perf-ulimits.conf; an existing file is never changed);
#   2. a Debian bookworm base image: debootstrap --variant=minbase, imported (reused when present);
#   3. the CPU stand-in for the NGC PyTorch base, scripts/ngc-standin.Dockerfile: Debian's python3, pip,
#      /etc/pip/constraint.txt + PIP_CONSTRAINT, the pinned CPU torch from the local wheel (reused when
#      present: its tag is a hash of everything it is built from);
#   4. the project image from ./Dockerfile, unchanged, with --build-arg BASE_IMAGE=<stand-in>;
#   5. the test suite inside the image (TESTS=full, default; fast: the shell, Docker, compliance and data
#      preparation tests; none);
#   6. ./run_with_docker.sh for a short real run (CPU config, 1 epoch on a tiny synthetic corpus, GPUS=none),
#      with data/, results/ and runs/ mounted from CHECK_DIR on the host and the container's root file
#      system read-only (--read-only; /tmp is a tmpfs): whatever the run writes outside the mounts fails it;
#   7. checks on the host: one new results/<system>/result_<n>.txt with run_start and run_stop (status success, or
#      aborted: the target is not reachable in one epoch on 50 utterances) and config_<n>.sh beside it, the
#      checkpoint in runs/, the corpus with its fingerprint in data/; the log passes the compliance checker
#      (python -m benchmark.results.compliance, in the image); a write to the read-only image fails.
# Prints each step with its time and the load average, then a summary with the figures (also written to
# CHECK_DIR/logs/<time>/summary.txt beside each step's full log). Idempotent: a second run reuses both base
# images, the image layer cache and the corpus; results are numbered on, never overwritten. Exits 0 when
# every check passed, 1 when one failed (its log's tail is printed), 2 on a usage or set-up error.
#
# Variables:
#   DOCKER          the engine (default: docker where its daemon answers, else podman; see run_with_docker.sh)
#   CHECK_DIR       work folder (default .container-check, ignored by git and by the image build)
#   IMAGE           the project image to build (default ds2perf:check)
#   STANDIN_IMAGE   the NGC stand-in (default localhost/ds2perf-ngc-standin:<hash>)
#   DEBIAN_IMAGE    the debootstrapped base (default localhost/ds2perf-debian-minbase:bookworm)
#   DEBIAN_MIRROR   debootstrap's mirror (default http://deb.debian.org/debian)
#   TORCH_WHEEL     the pinned CPU torch wheel (default torch-2.13.0+cpu-cp311-*.whl found in pip's
#                   find-links folders or /opt/wheels; never an unpinned torch from PyPI, a CUDA build)
#   TESTS           full|fast|none (default full)
#   NO_CACHE        true: build the project image without the layer cache (a cold build, for timing)
#   DRY_RUN=1       print what each step would run, change nothing
set -euo pipefail
cd "$(dirname "$0")/.."
DS2_PROG=container_check.sh
source scripts/run_lib.sh
source scripts/container_lib.sh

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) ds2_fail "unknown argument '$1' (see --help)" ;;
esac
case "${DRY_RUN:-0}" in
  1|true) DRY=true ;;
  0|false|"") DRY=false ;;
  *) ds2_fail "DRY_RUN='$DRY_RUN': must be 1 or 0 (or true/false)" ;;
esac
DOCKER_GIVEN=${DOCKER:-}
: "${CHECK_DIR:=.container-check}" "${IMAGE:=ds2perf:check}" "${TESTS:=full}" "${NO_CACHE:=false}"
: "${DEBIAN_IMAGE:=localhost/ds2perf-debian-minbase:bookworm}" "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
ds2_check_enum TESTS full fast none; ds2_check_bool NO_CACHE
CHECK_DIR=$(realpath -m "$CHECK_DIR")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOG_DIR=$CHECK_DIR/logs/$STAMP
TORCH_PIN=2.13.0+cpu   # requirements.txt's torch==2.13.0, the CPU build
FAST_TESTS=(tests/test_shell.py tests/test_compliance.py tests/test_data_librispeech.py tests/test_data_convert.py)
SUMMARY=()
[ "$DRY" = true ] || [ "$(id -u)" = 0 ] ||
  ds2_fail "run as root: it installs packages, runs debootstrap and a rootful podman (DRY_RUN=1 shows the steps)"

load() { cut -d' ' -f1-3 /proc/loadavg; }
# x CMD...: runs CMD, or prints it with DRY_RUN.
x() { if [ "$DRY" = true ]; then ds2_quote "$@"; else "$@"; fi; }
# step NAME LOGNAME CMD...: runs CMD (a command or one of the functions below, which run theirs through x)
# with its output in LOG_DIR/LOGNAME.log; prints its time and the load average, sets STEP_SECONDS; on
# failure prints the log's tail and exits 1. With DRY_RUN it prints what would run.
step_n=0
step() {
  local name=$1 log=$LOG_DIR/$2.log start status=0; shift 2
  step_n=$((step_n + 1))
  if [ "$DRY" = true ]; then
    echo "# [$step_n] $name:"
    if [ "$(type -t "$1")" = function ]; then "$@"; else ds2_quote "$@"; fi
    return 0
  fi
  echo "== [$step_n] $name (log: ${log#"$PWD"/})"
  start=$(date +%s.%N)
  "$@" > "$log" 2>&1 || status=$?
  STEP_SECONDS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  echo "   $([ $status = 0 ] && echo "done" || echo "FAILED (status $status)") in ${STEP_SECONDS} s, load average $(load)"
  if [ $status != 0 ]; then
    tail -n 40 "$log" | sed 's/^/   | /'
    exit 1
  fi
}
figure() { SUMMARY+=("$1"); }   # a line of the summary
fail() { echo "   CHECK FAILED: $*" >&2; exit 1; }
image_present() { [ "$DRY" = false ] && "${DOCKER_CMD[@]}" image inspect "$1" >/dev/null 2>&1; }
image_size() { "${DOCKER_CMD[@]}" image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.2f GB", $1 / 1e9 }'; }
# <system>/result_<n>.txt under the mounted results/: the run names its folder after the machine (issue 16).
result_logs() { { find "$CHECK_DIR/results" -mindepth 2 -maxdepth 2 -name 'result_*.txt' -printf '%P\n' 2>/dev/null || true; } | sort; }

[ "$DRY" = true ] || mkdir -p "$LOG_DIR"
echo "# container check of $(git rev-parse --short HEAD 2>/dev/null || echo "an unversioned tree"), $STAMP," \
  "work folder ${CHECK_DIR#"$PWD"/}$([ "$DRY" = true ] && echo " (dry run: nothing is changed)")"

# --- 1. what it needs ---
apt_install() {   # PACKAGE...: the missing ones, without recommends (podman's would pull crun, see below)
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  (( ${#missing[@]} == 0 )) && return 0
  if [ "$DRY" = true ]; then
    x apt-get update -qq; x apt-get install -y -qq --no-install-recommends "${missing[@]}"; return 0
  fi
  echo "   installing ${missing[*]} (apt; log: ${LOG_DIR#"$PWD"/}/install.log)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >> "$LOG_DIR/install.log" 2>&1 || ds2_fail "apt-get install ${missing[*]} failed: see $LOG_DIR/install.log"
}
ds2_container_engine
# Docker only where its daemon answers (a docker CLI without a daemon is common on CI machines): else podman.
if [ "$ENGINE" = docker ] && ! "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  [ -z "$DOCKER_GIVEN" ] || ds2_fail "DOCKER='$DOCKER': not found, or its daemon does not answer"
  DOCKER=podman; ENGINE=podman
fi
if [ "$ENGINE" = podman ]; then
  # Debian's podman, and runc: crun (podman's first choice) cannot run on cgroup v1 hosts with v2
  # controllers such as this project's CI VMs, where PODMAN_RUNTIME=auto picks runc.
  apt_install podman runc
  ds2_container_engine   # again: the runtime choice looks for runc
fi
if [ "$ENGINE" = podman ] && ! ds2_can_raise_limits && ! ds2_podman_has_default_ulimits; then
  [ ! -e "$DS2_PODMAN_ULIMITS_CONF" ] || ds2_fail "$DS2_PODMAN_ULIMITS_CONF exists without default_ulimits: not changing it"
  if [ "$DRY" = true ]; then
    echo "# write $DS2_PODMAN_ULIMITS_CONF: [containers] default_ulimits = []"
  else
    echo "   writing $DS2_PODMAN_ULIMITS_CONF (podman cannot raise limits here; containers keep the host's)"
    mkdir -p "$(dirname "$DS2_PODMAN_ULIMITS_CONF")"
    printf '%s\n' "# Written by ds2perf scripts/container_check.sh: this host cannot raise resource limits" \
      "# (no CAP_SYS_RESOURCE), and without this podman raises nofile/nproc of every container, which" \
      "# fails with 'setrlimit ... operation not permitted'. Containers keep the host's limits instead." \
      "[containers]" "default_ulimits = []" > "$DS2_PODMAN_ULIMITS_CONF"
  fi
fi
echo "# engine: $ENGINE ($(ds2_quote "${DOCKER_CMD[@]}"))"

# --- 2. the Debian base ---
rootfs=$CHECK_DIR/debootstrap.tmp
make_base() {
  # A partial tree of an interrupted debootstrap is ours and worthless: start it again.
  x rm -rf "$rootfs"
  x debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" || return
  if [ "$DRY" = true ]; then
    echo "tar -C $rootfs -c . | $(ds2_quote "${DOCKER_CMD[@]}" import - "$DEBIAN_IMAGE")"
  else
    tar -C "$rootfs" -c . | "${DOCKER_CMD[@]}" import - "$DEBIAN_IMAGE" || return
  fi
  x rm -rf "$rootfs"
}
if image_present "$DEBIAN_IMAGE"; then
  echo "== reusing $DEBIAN_IMAGE"
  [ "$DRY" = true ] || figure "Debian base: reused $DEBIAN_IMAGE"
else
  apt_install debootstrap
  step "Debian bookworm base: debootstrap --variant=minbase, imported as $DEBIAN_IMAGE" debian-base make_base
  [ "$DRY" = true ] || figure "Debian base: debootstrap + import ${STEP_SECONDS} s (load $(load)), $(image_size "$DEBIAN_IMAGE")"
fi

# --- 3. the NGC stand-in ---
find_torch_wheel() {
  local dirs=() dir found
  if [ -n "${TORCH_WHEEL:-}" ]; then echo "$TORCH_WHEEL"; return 0; fi
  read -r -a dirs <<< "$(python3 -m pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-} /opt/wheels"
  for dir in "${dirs[@]}"; do
    found=$(compgen -G "${dir#file://}/torch-${TORCH_PIN}-cp311-cp311-*.whl" | head -n 1 || true)
    [ -z "$found" ] || { echo "$found"; return 0; }
  done
  return 1
}
wheel=$(find_torch_wheel) ||
  ds2_fail "no torch-${TORCH_PIN}-cp311 wheel in pip's find-links or /opt/wheels: set TORCH_WHEEL=path (the" \
    "CPU build of requirements.txt's torch==2.13.0, e.g. from https://download.pytorch.org/whl/cpu)"
[ -f "$wheel" ] || ds2_fail "TORCH_WHEEL='$wheel': not a file"
# Everything the stand-in is made of, hashed into its tag: a change to any of it builds a new one.
ca_files=(); for f in /usr/local/share/ca-certificates/*.crt; do [ -f "$f" ] && ca_files+=("$f"); done
debian_id=dry; image_present "$DEBIAN_IMAGE" && debian_id=$("${DOCKER_CMD[@]}" image inspect --format '{{.Id}}' "$DEBIAN_IMAGE")
standin_hash=$({ cat scripts/ngc-standin.Dockerfile; basename "$wheel"; stat -c %s "$wheel"; echo "$debian_id"
                 cat "${ca_files[@]}" /dev/null; } | sha256sum | cut -c1-12)
: "${STANDIN_IMAGE:=localhost/ds2perf-ngc-standin:$standin_hash}"
context=$CHECK_DIR/standin-context.$$
make_standin() {   # the build context: the wheel (hard link where possible) and the host's local CAs
  local status=0
  x mkdir -p "$context/wheels" "$context/local-ca"
  x ln -f "$wheel" "$context/wheels/" 2>/dev/null || x cp "$wheel" "$context/wheels/"
  (( ${#ca_files[@]} == 0 )) || x cp "${ca_files[@]}" "$context/local-ca/"
  x "${DOCKER_CMD[@]}" build -f scripts/ngc-standin.Dockerfile --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    -t "$STANDIN_IMAGE" "$context" || status=$?
  x rm -rf "$context"
  return $status
}
if image_present "$STANDIN_IMAGE"; then
  echo "== reusing $STANDIN_IMAGE"
  [ "$DRY" = true ] || figure "NGC stand-in: reused $STANDIN_IMAGE, $(image_size "$STANDIN_IMAGE")"
else
  step "NGC stand-in: scripts/ngc-standin.Dockerfile with $(basename "$wheel") as $STANDIN_IMAGE" standin make_standin
  [ "$DRY" = true ] || figure "NGC stand-in: build ${STEP_SECONDS} s (load $(load)), $(image_size "$STANDIN_IMAGE")"
fi

# --- 4. the project image ---
build=("${DOCKER_CMD[@]}" build -t "$IMAGE" --build-arg "BASE_IMAGE=$STANDIN_IMAGE"
       --build-arg "GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
[ "$NO_CACHE" = false ] || build+=(--no-cache)
step "project image: ./Dockerfile on the stand-in as $IMAGE$([ "$NO_CACHE" = true ] && echo ", no layer cache")" \
  build "${build[@]}" .
if [ "$DRY" = false ]; then
  cached=$(grep -c -- '--> Using cache' "$LOG_DIR/build.log" || true)
  figure "project image: build ${STEP_SECONDS} s (load $(load); $([ "$NO_CACHE" = true ] && echo "no cache" ||
    echo "$cached layers from cache")), $(image_size "$IMAGE")"
fi

# --- 5. the tests inside the image ---
if [ "$TESTS" != none ]; then
  tests=(); [ "$TESTS" = fast ] && tests=("${FAST_TESTS[@]}")
  # -p no:cacheprovider: no .pytest_cache written into the image's project folder
  step "test suite in the image ($TESTS)" tests "${DOCKER_CMD[@]}" run --rm "$IMAGE" \
    python3 -m pytest -q -p no:cacheprovider "${tests[@]}"
  [ "$DRY" = true ] || figure "tests in the image ($TESTS): ${STEP_SECONDS} s (load $(load)): $(grep -E '[0-9]+ passed' \
    "$LOG_DIR/tests.log" | tail -n 1 | sed -E 's/=+//g; s/^ +| +$//g')"
fi

# --- 6. a short real run with the launcher ---
data=$CHECK_DIR/data results=$CHECK_DIR/results runs=$CHECK_DIR/runs
model_dir=runs/CPU/check-$STAMP   # as the container sees it: runs/ is $runs
before=$(result_logs)
short_run() {
  local status=0
  x mkdir -p "$data" "$results" "$runs"
  # DRY_RUN passes on: run_with_docker.sh then prints its engine commands. CLEAR_CACHES=false: dropping the
  # page caches of a shared machine slows everyone's jobs, for a plumbing check.
  env DATA_HOST="$data" RESULTS_HOST="$results" RUNS_HOST="$runs" IMAGE="$IMAGE" BUILD=false GPUS=none \
    DOCKER="$DOCKER" DOCKER_ARGS="--read-only --tmpfs /tmp" SYSTEM=CPU DATASET=synthetic SYNTH_HOURS=0.05 \
    MAX_EPOCHS=1 MODEL_DIR="$model_dir" CLEAR_CACHES=false ./run_with_docker.sh || status=$?
  # 3: the run completed without reaching the target (one epoch on 50 utterances); step 7 reads its log.
  (( status == 0 || status == 3 )) || return $status
}
step "short run: run_with_docker.sh, CPU config, 1 epoch on 50 synthetic utterances, read-only image" \
  short-run short_run
if [ "$DRY" = true ]; then
  echo "# [$((step_n + 1))] checks: one new result log, config, checkpoint and corpus on the host; the compliance" \
    "checker (in the image) passes the log; a write into the --read-only image fails"
  exit 0
fi
result_line=$(grep -E '^RESULT,' "$LOG_DIR/short-run.log" | tail -n 1 || true)

# --- 7. checks on the host ---
echo "== checks on the host"
mapfile -t new < <(comm -13 <(printf '%s\n' "$before") <(result_logs) | grep .)
(( ${#new[@]} == 1 )) || fail "expected one new result log in ${results#"$PWD"/}/<system>, found ${#new[@]}: ${new[*]:-none}"
log=$results/${new[0]}; n=$(basename "$log"); n=${n//[!0-9]/}
grep -q '"key": "run_start"' "$log" || fail "$log has no run_start"
# The one rule for which run_stop counts (benchmark.mlperf_log.timed_region; standard library only, so the
# host's python3 runs it): a log with two is invalid and gives no status.
status=$(python3 scripts/mllog_seconds.py --status "$log" || true)
[[ $status == success || $status == aborted ]] || fail "$log: run_stop status '${status:-none}'"
echo "   result log: ${log#"$PWD"/} (run_stop status $status)"
[ -f "$(dirname "$log")/config_$n.sh" ] || fail "no config_$n.sh beside ${new[0]}"
echo "   resolved configuration: ${results#"$PWD"/}/$(dirname "${new[0]}")/config_$n.sh"
ckpt=$(compgen -G "$runs/CPU/check-$STAMP/checkpoint_epoch*.pt" | head -n 1 || true)
[ -n "$ckpt" ] || fail "no checkpoint in ${runs#"$PWD"/}/CPU/check-$STAMP (MODEL_DIR in the mounted runs/)"
echo "   checkpoint: ${ckpt#"$PWD"/}"
{ [ -f "$data/synthetic/fingerprint.json" ] && [ -f "$data/synthetic/train.csv" ]; } ||
  fail "no synthetic corpus (train.csv, fingerprint.json) in ${data#"$PWD"/}/synthetic"
echo "   corpus: ${data#"$PWD"/}/synthetic ($(($(wc -l < "$data/synthetic/train.csv") - 1)) train utterances, fingerprint.json)"
step "compliance checker on ${new[0]}, in the image" compliance "${DOCKER_CMD[@]}" run --rm \
  -v "$results:/workspace/ds2perf/results:ro" "$IMAGE" python3 -m benchmark.results.compliance "results/${new[0]}"
grep -q PASS "$LOG_DIR/compliance.log" || fail "the compliance checker did not say PASS (see $LOG_DIR/compliance.log)"
sed 's/^/   | /' "$LOG_DIR/compliance.log"
# The run could write nothing but its mounts and /tmp, or it would have failed: check --read-only held.
if "${DOCKER_CMD[@]}" run --rm --read-only "$IMAGE" touch /workspace/ds2perf/probe >/dev/null 2>&1; then
  fail "a write into the image succeeded under --read-only: the run's no-writes guarantee does not hold"
fi
echo "   nothing written inside the image: the run had a read-only root (a write into it fails)"
figure "short run: ${result_line:-no RESULT line} (run_stop $status), ${new[0]} passes the compliance checker"

{ echo "# summary ($STAMP, $(nproc) cores, engine $(ds2_quote "${DOCKER_CMD[@]}"))"; printf '  %s\n' "${SUMMARY[@]}"; } |
  tee "$LOG_DIR/summary.txt"
echo "# container check PASSED"
