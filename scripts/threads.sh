# Sourced by run_and_time.sh and run_tests.sh: CPU threading that behaves on shared cores.
# OpenMP threads that busy-wait without bound were measured 10-40x slower on these VMs under a busy
# neighbour, so the spin is bounded: an idle thread spins 20000 iterations, then sleeps. On a quiet
# machine that made one process with 2 threads 4.7-5.6x faster than OMP_WAIT_POLICY=PASSIVE (which sleeps
# at once) in measure/step_throughput.py, and the reference 1.7x faster (measure/compare_reference.py);
# 1-thread processes (config_CPU.sh's 2 ranks) were the same within noise. Export OMP_WAIT_POLICY=PASSIVE
# (libgomp then never spins) or another GOMP_SPINCOUNT before sourcing to override.
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-20000}
export PYTHONUNBUFFERED=1
