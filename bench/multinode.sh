#!/usr/bin/env bash
# The per-step gradient sum (allreduce) across 3 "nodes" versus on one node, on the test cluster
# of tests/cluster/up --nodes 3 (3 hosts as network namespaces on a Linux bridge, Slurm, srun
# --mpi=pmix, Open MPI over TCP between hosts), with and without tbf bandwidth limits on the
# hosts' links.
#
#   bench/multinode.sh [BUILD_DIR]       (default build/; root; ~3 minutes)
#
# bench_engine (bench/bench_engine.c) times its step, then 50 sums of the step's message (median,
# averaged over ranks): `metric <name>_allreduce_s`. Messages: --prompt 20 on a d=768 model,
# (P·d + 1) doubles = 122,888 bytes (the trainer sums P·d + 4: 122,912 bytes), and --prompt 0,
# 1 double (8 bytes): the per-message cost alone. Per configuration the median and minimum over REPEATS runs
# (default 7, env REPEATS). One rank per node, 3 ranks in all; yield_when_idle because the
# machine's 2 cores are shared.
#
# The kernel here has no sch_netem, so latency cannot be injected; bandwidth is limited with tbf
# on both ends of every host's veth (host egress and bridge egress towards the host). Latency on
# a real network is added on paper: see the printed model at the end.
#
# Prints "metric multinode_<config>_<size>_allreduce_s VALUE s" lines and a table.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
root=$SP_ROOT
build=$(cd "${1:-$root/build}" && pwd)
bench=$build/bench/bench_engine cli=$build/softprompt
repeats=${REPEATS:-7}
[[ -x $bench && -x $cli ]] || { echo "build bench_engine and softprompt first (cmake --build $build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces, Slurm daemons)" >&2; exit 1; }
source "$root/tests/cluster/lib.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/sp-multinode.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
"$cli" init-model --layers 1 --vocab 1000 --ctx 256 --seed 1 "$work/model" >/dev/null   # d = 768
spc_start "$work/cluster" --nodes 3 2> "$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
tail -n 1 "$work/up.log"
sp_mpi_env
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=$SPC_SUBNET \
  OMPI_MCA_oob_tcp_if_include=$SPC_SUBNET OMPI_MCA_mpi_yield_when_idle=1

# shape: tbf at $rate (e.g. 1gbit; "none": no limit) on both ends of every host's veth (the
# host's egress, and the bridge's egress towards the host).
shape() {
  local n ns bytes
  for n in $SPC_NODES; do
    ns=$SPC_PREFIX$SPC_TAG${n/node/n}
    tc qdisc del dev "$ns" root 2>/dev/null || true
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
    [[ $rate == none ]] && continue
    # burst: 1 ms at the rate, at least 64 KiB (one TSO/GSO segment must fit)
    bytes=$(( $(numfmt --from=si "$(tr a-z A-Z <<< "${rate%bit}")") / 8 / 1000 ))
    (( bytes < 65536 )) && bytes=65536
    tc qdisc add dev "$ns" root tbf rate "$rate" burst "$bytes" latency 100ms
    tc -n "$ns" qdisc add dev eth0 root tbf rate "$rate" burst "$bytes" latency 100ms
  done
}

# once NODES PROMPT [BTL]: one bench_engine run with 3 ranks on NODES nodes; prints its
# allreduce_s, or nothing when the run failed (its output is kept in $work/failed-*.out).
once() {
  local nodes=$1 prompt=$2 out
  out=$work/run.out
  OMPI_MCA_btl=${3:-$OMPI_MCA_btl} timeout -k 5 120 srun -N "$nodes" -n 3 --overcommit --mpi=pmix \
    --kill-on-bad-exit=1 "$bench" --model "$work/model" --name x --batch 3 --seq 16 \
    --prompt "$prompt" --steps 2 --warmup 1 --threads 1 > "$out" 2>&1 || true
  if ! awk '$1 == "metric" && $2 == "x_allreduce_s" {print $3; f = 1} END {exit !f}' "$out"; then
    cp "$out" "$(mktemp "$work/failed-XXXXXX")"
    echo "bench_engine failed (srun -N $nodes -n 3, --prompt $prompt, rate $rate):" >&2
    tail -n 15 "$out" >&2
  fi
}

# Rounds over all configurations (so that the load of other processes on this machine spreads
# over all of them); per configuration and size the median and the minimum over the rounds.
configs=("1node-shm" "1node-tcp" "3nodes" "3nodes-10gbit" "3nodes-1gbit" "3nodes-100mbit")
declare -A vals
for (( r = 1; r <= repeats; r++ )); do
  for cfg in "${configs[@]}"; do
    rate=none nodes=3 btl=""
    case $cfg in
      1node-shm) nodes=1 ;;
      1node-tcp) nodes=1 btl=self,tcp ;;
      3nodes-*) rate=${cfg#3nodes-} ;;
    esac
    shape
    for p in 0 20; do
      v=$(once "$nodes" "$p" "$btl")
      [[ -n $v ]] && vals[$cfg,$p]+=" $v"
    done
  done
  echo "round $r of $repeats done" >&2
done
rate=none; shape

stat() { # stat median|min VALUES...
  local how=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v how="$how" '{a[NR] = $1}
    END {if (!NR) print "nan"; else if (how == "min") print a[1]; else print a[int((NR + 1) / 2)]}'
}
declare -A res rmin
for cfg in "${configs[@]}"; do
  for p in 0 20; do
    # shellcheck disable=SC2086
    res[$cfg,$p]=$(stat median ${vals[$cfg,$p]:-}); rmin[$cfg,$p]=$(stat min ${vals[$cfg,$p]:-})
    size=$([[ $p == 0 ]] && echo 8B || echo 123kB)
    echo "metric multinode_${cfg//-/_}_${size}_allreduce_s ${res[$cfg,$p]} s"
    echo "metric multinode_${cfg//-/_}_${size}_allreduce_min_s ${rmin[$cfg,$p]} s"
  done
done
failures=$(find "$work" -maxdepth 1 -name 'failed-*' | wc -l)
echo "metric multinode_failed_runs $failures runs"

echo
echo "allreduce (sum of doubles) with 3 ranks; per run the median of 50 sums; median (minimum) over $repeats runs:"
printf '%-16s %-32s %21s %21s %13s\n' config transport "8 B: median (min)" "122,888 B: median (min)" "difference"
for cfg in "${configs[@]}"; do
  case $cfg in
    1node-shm) tr="1 node, shared memory (vader)" ;;
    1node-tcp) tr="1 node, TCP (btl self,tcp)" ;;
    3nodes) tr="3 nodes, TCP over veth+bridge" ;;
    *) tr="3 nodes, TCP, tbf ${cfg#3nodes-}" ;;
  esac
  python3 "$root/bench/multinode_report.py" row "$cfg" "$tr" "${res[$cfg,0]}" "${rmin[$cfg,0]}" \
    "${res[$cfg,20]}" "${rmin[$cfg,20]}"
done
python3 "$root/bench/multinode_report.py" model "${res[3nodes,0]}" "${res[3nodes,20]}" \
  "${res[3nodes-100mbit,20]}" "${res[3nodes-1gbit,20]}" "${res[1node-tcp,0]}"
