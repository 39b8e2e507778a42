"""Session 4: the pipeline, the chunks in the main thread, and the flow's chunks on 2 and on 1 thread, timed in
shuffled rounds in one process (SQLite store; nothing written). A record of how the figures in benchmarks/README.md
were taken, not maintained code. Usage, from the repository root:
``.venv/bin/python benchmarks/results/cpu-2026-11-26-session4/flow_in_turns_check.py alexnet 9``
"""
import sys, time, statistics, random, tempfile, concurrent.futures as cf
from pathlib import Path
sys.path[:0] = [".", "benchmarks"]  # run from the repository root
import torch
import throughput as T
arch = sys.argv[1]
args = T.parse_args(["--device", "cpu", "--threads", "2", "--arch", arch, "--size", "224", "--batch", "16", "--batches", "4"])
torch.set_num_threads(2)
work = Path(tempfile.mkdtemp())
from flows import tasks
url = f"sqlite:///{work/'b.db'}"
import db; db.upgrade(url)
inputs = T.build_inputs(args, work, url)
explainer, request = T.evaluation_request("gradcam", {}, inputs, args, url)
chunks = T.chunk_requests(request, 16)
pool2 = cf.ThreadPoolExecutor(2)
pool1 = cf.ThreadPoolExecutor(1)
fs = {"pipeline (main thread)": lambda: tasks.explain_chunk(request),
      "chunks in main thread": lambda: [tasks.explain_chunk(c) for c in chunks],
      "flow 2 threads": lambda: list(pool2.map(tasks.explain_chunk, chunks)),
      "flow 1 thread": lambda: list(pool1.map(tasks.explain_chunk, chunks))}
for f in fs.values(): f()
res = {k: [] for k in fs}
for _ in range(int(sys.argv[2])):
    order = list(fs.items()); random.shuffle(order)
    for k, f in order:
        s = time.perf_counter(); f(); res[k].append(time.perf_counter() - s)
print(arch, {k: round(statistics.median(v), 4) for k, v in res.items()})
