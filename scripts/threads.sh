# Sourced by run_and_time.sh, run_tests.sh and the benchmarks: CPU threading that behaves on shared cores.
# Busy-waiting OpenMP threads were measured 10-40x slower on these VMs under a busy neighbour; PASSIVE
# makes idle threads sleep instead. Override by exporting OMP_WAIT_POLICY before sourcing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONUNBUFFERED=1
