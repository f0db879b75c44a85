"""The tables of bench/multinode.sh (times in seconds, as bench_engine reports them).

  python3 bench/multinode_report.py row CONFIG TRANSPORT MEDIAN_8B MIN_8B MEDIAN_123KB MIN_123KB
      one row of the allreduce table, in microseconds
  python3 bench/multinode_report.py model MEDIAN_8B_3NODES MEDIAN_123KB_3NODES
                                          MEDIAN_123KB_100MBIT MEDIAN_123KB_1GBIT MEDIAN_8B_1NODE_TCP
      the measured figures against the wire time on paper, and what a network's latency adds
"""
import sys


def row(cfg, tr, *times):
    a, amin, b, bmin = (float(x) * 1e6 for x in times)
    print(f"{cfg:<16} {tr:<32} {a:9.0f} ({amin:6.0f}) us {b:9.0f} ({bmin:6.0f}) us {b - a:10.0f} us")


def model(*times):
    a, b, b100, b1g, tcp1 = map(float, times)
    m, n = 122888, 3
    wire = lambda rate: 2 * (n - 1) / n * m * 8 / rate   # bytes each link must carry, ring-style
    print()
    print("on paper (3 ranks; every figure here includes this machine's shared, oversubscribed cores):")
    print(f"  8-byte sum across the bridge: {a*1e6:.0f} us (same node over TCP: {tcp1*1e6:.0f} us): the per-message")
    print(f"  cost of ~3 message rounds (recursive doubling for 3 ranks: fold, exchange, unfold)")
    print(f"  122,888-byte sum: {b*1e6:.0f} us unlimited; wire time alone at 1 Gbit/s {wire(1e9)*1e3:.2f} ms "
          f"(measured {b1g*1e3:.2f} ms), at 100 Mbit/s {wire(1e8)*1e3:.2f} ms (measured {b100*1e3:.2f} ms)")
    for name, alpha in (("InfiniBand", 2e-6), ("25 GbE TCP", 25e-6), ("1 ms, WAN", 1e-3)):
        print(f"  + network latency {name:<11} (alpha {alpha*1e6:5.0f} us): 3-4 rounds -> +{3*alpha*1e6:.0f} to +{4*alpha*1e6:.0f} us per step")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "row":
        row(*sys.argv[2:])
    elif len(sys.argv) == 7 and sys.argv[1] == "model":
        model(*sys.argv[2:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
