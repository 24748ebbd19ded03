"""The size check's own cost per pass: check_sizes on a remembered signature, and a first (inferring) one."""
import timeit

from bench import workloads
from gradserve.server.engine.plan import SizeLimits
from gradserve.server.engine.shapes import check_sizes

for name, (graph, feeds) in [("apple", workloads.apple()), ("chain1000", workloads.chain(1000)), ("mlp", workloads.mlp())]:
    plan = workloads.plan_of(graph)
    values = [None] * plan.n_slots
    for n, s in plan.input_slots.items():
        values[s] = feeds[n]
    limits = SizeLimits(1 << 26, 1 << 28)
    hit = min(timeit.repeat(lambda: check_sizes(plan, values, limits), number=10000, repeat=5)) / 10000 * 1e6

    def first():
        plan.checked_signatures.clear()
        check_sizes(plan, values, limits)
    miss = min(timeit.repeat(first, number=20, repeat=5)) / 20 * 1e6
    print(f"{name:10} {len(plan.steps):5} nodes: remembered {hit:6.2f} us, first {miss:9.1f} us")
