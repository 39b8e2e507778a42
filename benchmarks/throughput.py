"""Throughput of focus-audit's evaluation path against the model's own limits (a benchmark, not a test).

In one process, on one random-weight model and one set of mosaics, it measures in mosaics per second:

- the **forward limit**: ``model(x)`` under ``no_grad`` on the composed, normalised mosaics;
- the **forward + backward limit**: the forward pass and the gradient of the target logits to the input
  (parameters frozen, as :func:`flows.worker.caches.load_model` leaves them);
- per method, the **explainer alone** on the same ready-made batches, the **pipeline**: the project's own
  :func:`flows.tasks.explain_chunk` (tiles cached on the device -> ``compose_normalized`` -> explainer ->
  quadrant sums (GradCAM's from its small map) -> ``focus_from_sums`` -> predicted class), the pipeline and its
  limit **in turns** (timed alternately, so drift of the machine's speed moves both alike), the **pipeline with
  the database**: :func:`flows.tasks.evaluate_chunk` without Prefect (``.fn``: the above plus
  ``db.write_mosaic_results`` into a freshly created store), the **database write alone** on the same rows,
  and the **rewrite** of those rows over themselves (the upsert path, for information);
- per method, the **flow**: the mosaics split into chunks of ``--chunk`` mosaics, run as the evaluate flow runs
  them, by ``flows.evaluate.CHUNK_THREADS`` threads (a ``ThreadPoolExecutor`` standing in for Prefect's
  ``ThreadPoolTaskRunner``; each chunk is one turn on the device, ``devices.device_turn``, so chunks alternate),
  ``explain_chunk`` per chunk, and the **flow with the database**: ``evaluate_chunk.fn`` per chunk, so one chunk's
  write overlaps the next chunk's compute as in a flow run.

Every write that is timed is a first write, as an evaluation's own: the evaluation's rows are deleted (untimed,
and on PostgreSQL the table vacuumed) before the warm-up and before each timed run, so a chunk goes in by binary
``COPY`` on PostgreSQL; only the rewrite figure writes over existing rows. Two database ratios per method:
``db_write_share`` = write / (pipeline + write), both measured on their own one after the other, and
``db_cost_in_flow`` = (flow with db - flow) / flow with db, what the write costs a flow run (noise can make it
slightly negative).
- where Quantus is installed, **Quantus 0.6's Focus end to end** (``quantus.Focus`` with ``quantus.explain``,
  captum's ``LayerGradCam`` on the same layer, upsampled bilinearly) on the same model and mosaics.

Every figure is the median of ``--repeats`` timed runs after one warm-up run, with ``torch.cuda.synchronize``
around each run on CUDA. It prints a table and the ratios with their targets (``TARGETS``), and writes
everything as JSON (``--out``). ``--profile DIR`` also runs the pipeline once more per method under
``torch.profiler`` and writes ``DIR/profile_<arch>_<method>.txt`` (the pipeline's and the explainer's own
operator tables). Inputs: the bundled digits for ``digits_cnn``; for the ImageNet architectures a
synthetic ImageFolder of random RGB images, decoded once into the uint8 memory-mapped tile cache of
:func:`focus_core.data.load_image_folder`.

Usage::

    .venv/bin/python benchmarks/throughput.py --arch digits_cnn --size 64 --batch 8 --repeats 3
    .venv/bin/python benchmarks/throughput.py --arch vgg16 --size 448 --batch 64 --device cuda \\
        --methods gradcam,gradient,smoothgrad:n_samples=8,lrp --out throughput_vgg16.json
    .venv/bin/python benchmarks/throughput.py --device cpu --methods gradcam,lrp_fast --no-quantus \\
        --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres --profile /tmp/prof --out /tmp/tp.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sqlalchemy import text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import db  # noqa: E402
from flows.worker import caches, devices, store  # noqa: E402
from flows.evaluate import CHUNK_THREADS  # noqa: E402
from db.engine import has_secret  # noqa: E402
from flows.params import DatasetSpec, EvaluationSpecs, MethodSpec, ModelSpec, MosaicSetSpec, RunSpec  # noqa: E402
from flows.tasks import ChunkRequest, evaluate_chunk, explain_chunk  # noqa: E402
from focus_core import explainers, models, mosaics  # noqa: E402

ARCHS = ("alexnet", "vgg16", "resnet18", "digits_cnn")
DEFAULT_METHODS = "gradcam,gradient,smoothgrad,lrp"
NUM_CLASSES = 10
SYNTHETIC_PER_CLASS = 20  # 0.15 of them (3) land in the test split: enough for two target tiles

#: method -> (the limit it is held to, the parameter that multiplies its passes)
LIMITS: dict[str, tuple[str, str | None]] = {
    "gradcam": ("forward", None),
    "gradcam++": ("forward", None),
    "random": ("forward", None),
    "gradient": ("forward_backward", None),
    "input_x_gradient": ("forward_backward", None),
    "smoothgrad": ("forward_backward", "n_samples"),
    "integrated_gradients": ("forward_backward", "n_steps"),
    "lrp": ("forward_backward", None),
    "lrp_fast": ("forward_backward", None),
}
#: methods with an ``internal_batch_size``: set to ``--batch`` unless given, so each pass is as big as the limit's
CHUNKED = ("smoothgrad", "integrated_gradients")
#: the performance targets: ratio name -> lowest acceptable value (db share: highest)
TARGETS = {"forward": 0.8, "forward_backward": 0.8, "lrp": 0.5, "quantus": 100.0, "db_write_share": 0.05,
           "db_cost_in_flow": 0.05}
#: chunks the mosaics are split into by default for the flow figures (rounded up to whole batches)
DEFAULT_CHUNKS = 4


# --------------------------------------------------------------------------- arguments


def parse_methods(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse ``"gradcam,smoothgrad:n_samples=8;sigma=0.15,lrp"`` into (name, params) pairs.

    Methods are separated by commas; a method's parameters follow a colon, separated by semicolons
    (a comma also works when the next token holds ``=``). Values are read as JSON, else kept as strings.

    Examples
    --------
    >>> parse_methods("gradcam,smoothgrad:n_samples=8,sigma=0.1")
    [('gradcam', {}), ('smoothgrad', {'n_samples': 8, 'sigma': 0.1})]
    """
    methods: list[tuple[str, dict[str, Any]]] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token and methods:  # "smoothgrad:n_samples=8,sigma=0.1"
            pairs, name, params = token, None, methods[-1][1]
        else:
            name, _, pairs = token.partition(":")
            params = {}
            methods.append((name.strip(), params))
        for pair in filter(None, (p.strip() for p in pairs.split(";"))):
            key, sep, raw = pair.partition("=")
            if not sep:
                raise SystemExit(f"--methods: expected key=value in {pair!r}, e.g. smoothgrad:n_samples=8.")
            try:
                params[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                params[key.strip()] = raw.strip()
    if not methods:
        raise SystemExit("--methods: name at least one method, e.g. gradcam,lrp.")
    return methods


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="digits_cnn")
    parser.add_argument("--size", type=int, default=64, help="mosaic side in pixels (tiles are size/2)")
    parser.add_argument("--batch", type=int, default=8, help="mosaics per forward/backward pass")
    parser.add_argument("--batches", type=int, default=4, help="batches per timed run (mosaics = batch x batches)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: everything under torch.autocast(bfloat16); adds fp32 pipeline timings, "
                             "the speed-up and the largest Focus difference")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="registry names with optional parameters: gradcam,smoothgrad:n_samples=8,lrp "
                             "(lrp_fast: focus_core.explainers.fast_lrp, registered here if the registry lacks it)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="mosaics per chunk of the flow figures (default: the mosaics split into "
                             f"{DEFAULT_CHUNKS} chunks, rounded up to whole batches, at least one batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure, after one warm-up run")
    parser.add_argument("--db", default=None,
                        help="a new SQLite file path (default: a temporary one) or a postgresql:// URL of a server: "
                             "a fresh database is created on it and dropped afterwards")
    parser.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL benchmark database")
    parser.add_argument("--no-quantus", action="store_true", help="skip Quantus even where it is installed")
    parser.add_argument("--quantus-mosaics", type=int, default=None,
                        help="mosaics Quantus scores per run (default: one batch; it is slow)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="after each method's timings, profile one pipeline run and the explainer alone with "
                             "torch.profiler into DIR/profile_<arch>_<method>.txt")
    args = parser.parse_args(argv)
    if args.size < 4 or args.size % 2:
        parser.error(f"--size must be an even number >= 4 but got {args.size}")
    for name in ("batch", "batches", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer but got {getattr(args, name)}")
    if args.chunk is not None and args.chunk < 1:
        parser.error(f"--chunk must be a positive integer but got {args.chunk}")
    args.chunk = args.chunk or default_chunk(args.batch * args.batches, args.batch)
    args.method_list = parse_methods(args.methods)
    return args


def default_chunk(total: int, batch: int) -> int:
    """``total`` split into ``DEFAULT_CHUNKS`` chunks, rounded up to whole batches, at least one batch.

    >>> default_chunk(32, 8), default_chunk(16, 8), default_chunk(8, 8), default_chunk(256, 64)
    (8, 8, 8, 64)
    """
    per_chunk = -(-total // DEFAULT_CHUNKS)
    return max(batch, -(-per_chunk // batch) * batch)


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object], device: torch.device, repeats: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """Seconds of each of ``repeats`` runs of ``fn`` after one warm-up run (synchronised on CUDA).

    ``setup``, when given, runs before the warm-up and before each timed run, outside the timing.
    """
    if setup is not None:
        setup()
    fn()
    return [one_run(fn, device, setup) for _ in range(repeats)]


def one_run(fn: Callable[[], object], device: torch.device, setup: Callable[[], object] | None = None) -> float:
    """Seconds of one run of ``fn``, synchronised on CUDA; ``setup`` first, untimed."""
    if setup is not None:
        setup()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def paired(
    first: Callable[[], object], second: Callable[[], object], device: torch.device, repeats: int,
    names: tuple[str, str] = ("limit_s", "pipeline_s"), setup: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Seconds of ``first`` and of ``second`` timed in turns, ``repeats`` runs each after a warm-up of both.

    The order alternates from one round to the next, so a machine that speeds up or slows down during the run (a
    shared CPU, a GPU's clocks) moves both alike: their ratio is steadier than that of figures timed minutes apart.
    ``setup``, when given, runs before every run of either, untimed. Returns ``{names[0]: [...], names[1]: [...]}``.
    """
    for fn in (first, second):
        if setup is not None:
            setup()
        fn()
    seconds: dict[str, list[float]] = {names[0]: [], names[1]: []}
    for round_ in range(repeats):
        turns = [(names[0], first), (names[1], second)]
        for key, fn in turns if round_ % 2 == 0 else turns[::-1]:
            seconds[key].append(one_run(fn, device, setup))
    return seconds


def rate(seconds: list[float], items: int) -> dict[str, Any]:
    """Mosaics per second from the median run, with every run's seconds."""
    median = statistics.median(seconds)
    return {"mosaics_per_s": items / median, "median_s": median, "seconds": seconds, "mosaics": items}


def precision(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 for ``bf16``, nothing for ``fp32``."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- inputs


def synthetic_image_folder(root: Path, tile: int, seed: int) -> Path:
    """Write ``NUM_CLASSES x SYNTHETIC_PER_CLASS`` random RGB PNGs of ``tile`` pixels, one folder per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(NUM_CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(SYNTHETIC_PER_CLASS):
            pixels = rng.integers(0, 256, size=(tile, tile, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png", compress_level=1)
    return root


@contextlib.contextmanager
def fresh_store(target: str | None, workdir: Path, keep: bool) -> Iterator[str]:
    """Yield the URL of a new, migrated focus-audit store (SQLite file or a new PostgreSQL database)."""
    if target and target.startswith(("postgresql", "postgres:")):
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        server = db.database_url(target)
        conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"focus_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        try:
            db.upgrade(url)
            yield url
        finally:
            store.dispose_engines()
            if not keep:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    path = Path(target.removeprefix("sqlite:///")) if target else workdir / "bench.db"
    if path.exists():
        raise SystemExit(f"--db {path} exists: pass a new file so that the benchmark writes into a fresh store.")
    url = f"sqlite:///{path}"
    db.upgrade(url)
    try:
        yield url
    finally:
        store.dispose_engines()


def register_lrp_fast(names: list[str]) -> None:
    """Make ``lrp_fast`` (focus_core.explainers.fast_lrp) resolvable in this process if it was asked for."""
    if "lrp_fast" in names and "lrp_fast" not in explainers.available_explainers():
        from focus_core.explainers.fast_lrp import FastLRP

        explainers.register_explainer(FastLRP)


def build_inputs(args: argparse.Namespace, workdir: Path, url: str) -> dict[str, Any]:
    """Dataset, random-weight checkpoint, mosaic set and store rows for the run (not timed)."""
    tile = args.size // 2
    if args.arch == "digits_cnn":
        dataset = DatasetSpec(kind="digits", tile_size=tile, seed=args.seed)
    else:
        root = synthetic_image_folder(workdir / "images", tile, args.seed)
        dataset = DatasetSpec(kind="image_folder", root=str(root), tile_size=tile, resize=tile, seed=args.seed,
                              cache_dir=str(workdir / "tile-cache"))
    ds = caches.load_dataset(dataset)
    torch.manual_seed(args.seed)
    model = models.build_model(args.arch, num_classes=len(ds.classes), in_channels=int(ds.tiles.shape[1]))
    weights = workdir / f"{args.arch}.pt"
    sha = models.save_weights(model, weights)
    model_spec = ModelSpec(architecture=args.arch, weights=str(weights))
    total = args.batch * args.batches
    mosaic_spec = MosaicSetSpec(per_class=-(-total // len(ds.classes)), seed=args.seed)
    manifest = caches.load_manifest(dataset, mosaic_spec)
    chosen = list(manifest.mosaics[:total])

    engine = store.engine_for(url)
    images = db.register_dataset(engine, ds.name, ds.fingerprint, ds.classes, ds.relpaths, ds.labels.numpy(),
                                 ds.splits, tile_size=ds.tile_size, channels=int(ds.tiles.shape[1]))
    image_ids = np.asarray(images.image_ids, dtype=np.int64)[manifest.index_tensor().numpy()]
    mosaic_set = db.register_mosaic_set(engine, manifest.hash, images.dataset_id, manifest.split, manifest.seed,
                                        manifest.per_class, manifest.layout, image_ids, manifest.target_classes().numpy(),
                                        mosaics.target_mask(manifest).numpy(), tile_size=ds.tile_size)
    checkpoint_id = db.register_checkpoint(engine, sha, args.arch, len(ds.classes), path=str(weights),
                                           in_channels=int(ds.tiles.shape[1]), label="benchmark, random weights")

    device = devices.require_device(args.device)
    model = caches.load_model(model_spec, dataset, device)  # the very model explain_chunk uses
    indices = torch.tensor([m.image_indices for m in chosen], dtype=torch.int64)
    tiles = caches.device_tiles(dataset, device)
    batches, cpu_targets = [], []
    for start in range(0, total, args.batch):
        x = ds.normalize(mosaics.compose_mosaics(tiles, indices[start:start + args.batch]))
        y = torch.tensor([m.target_class for m in chosen[start:start + args.batch]])
        batches.append((x, y.to(device)))
        cpu_targets.append(y)  # what the hot path hands the explainers: range-checked on the CPU, no device read
    return {
        "dataset": dataset,
        "mosaic_spec": mosaic_spec,
        "model_spec": model_spec,
        "checkpoint_id": checkpoint_id,
        "mosaic_set_id": mosaic_set.mosaic_set_id,
        "mosaic_ids": list(mosaic_set.mosaic_ids[:total]),
        "device": device,
        "model": model,
        "chosen": chosen,
        "batches": batches,
        "cpu_targets": cpu_targets,
        "total": total,
        "tiles_on_device": tiles.device.type == device.type,
    }


# --------------------------------------------------------------------------- measurements


def limit_runs(inputs: dict[str, Any], args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """One run of each limit over all the ready batches: ``forward`` and ``forward_backward``."""
    model, device, batches = inputs["model"], inputs["device"], inputs["batches"]

    def forward() -> None:
        with torch.no_grad(), precision(args.dtype, device):
            for x, _ in batches:
                model(x)

    def forward_backward() -> None:
        with torch.enable_grad(), precision(args.dtype, device):
            for x, y in batches:
                x = x.detach().requires_grad_(True)
                score = model(x).gather(1, y[:, None]).sum()
                torch.autograd.grad(score, x)

    return {"forward": forward, "forward_backward": forward_backward}


def measure_limits(inputs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    runs = limit_runs(inputs, args)
    return {kind: rate(timed(run, inputs["device"], args.repeats), inputs["total"]) for kind, run in runs.items()}


def method_spec(name: str, params: dict[str, Any], batch: int) -> MethodSpec:
    params = dict(params)
    if name in CHUNKED:
        params.setdefault("internal_batch_size", batch)
    return MethodSpec(name=name, params=params)


def clear_results(engine: Any, evaluation_id: int) -> None:
    """Delete the evaluation's rows (its own transaction), so the next write is a first write.

    On PostgreSQL the table is vacuumed as well, so that the dead rows of earlier runs do not pile up in the
    primary key the next write checks (a first write in the product meets a table without them).
    """
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM mosaic_result WHERE evaluation_id = :id"), {"id": evaluation_id})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM mosaic_result")


def chunk_requests(request: ChunkRequest, chunk: int) -> list[ChunkRequest]:
    """``request`` (all mosaics) split into chunks of ``chunk`` mosaics, numbered as the flow numbers them."""
    return [
        request.model_copy(update={"chunk": k, "positions": request.positions[start:start + chunk],
                                   "mosaic_ids": request.mosaic_ids[start:start + chunk]})
        for k, start in enumerate(range(0, len(request.positions), chunk))
    ]


def run_chunks(
    pool: concurrent.futures.Executor, task: Callable[[ChunkRequest], object], requests: list[ChunkRequest]
) -> list[object]:
    """``task`` over the chunk requests on ``pool``, as the evaluate flow's task runner runs them."""
    return list(pool.map(task, requests))


def chunk_pool() -> concurrent.futures.ThreadPoolExecutor:
    """``CHUNK_THREADS`` threads kept for all runs of a method, as one flow run keeps its task runner's threads.

    The first run in the fresh threads is reported apart, as ``flow_fresh_threads_s``: it cost 0.8-3.8 s on an
    H200 while chunks computed in the task threads (cuDNN caches its benchmarked plans per thread); since their
    turns run in the device's own thread on CUDA (``devices.device_turn``), fresh task threads should cost
    nothing there.
    """
    return concurrent.futures.ThreadPoolExecutor(max_workers=CHUNK_THREADS, thread_name_prefix="bench-chunk")


def measure_method(
    name: str, params: dict[str, Any], inputs: dict[str, Any], args: argparse.Namespace, url: str
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Explainer alone, pipeline without and with the database write, the write alone (first write and
    rewrite), and the chunked flow without and with the write, for one method.

    Returns the figures, the pipeline's Focus scores (for the comparison with Quantus) and what
    :func:`profile_method` needs (the request of all mosaics and the explainer).
    """
    device, total = inputs["device"], inputs["total"]
    explainer, request = evaluation_request(name, params, inputs, args, url)
    engine = store.engine_for(url)
    result: dict[str, Any] = {"params": dict(explainer.params), "evaluation_id": request.evaluation_id}
    result.update(explainer_figures(name, explainer, inputs, args))
    outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def clear() -> None:
        clear_results(engine, request.evaluation_id)

    result["pipeline"] = rate(timed(lambda: outputs.append(explain_chunk(request)), device, args.repeats), total)
    kind, multiplier = LIMITS.get(name, ("forward_backward", None))
    result["paired"] = paired(limit_runs(inputs, args)[kind], lambda: explain_chunk(request), device, args.repeats)
    result["pipeline_with_db"] = rate(timed(lambda: evaluate_chunk.fn(request), device, args.repeats, setup=clear),
                                      total)
    sums, focus, predicted = outputs[-1]
    result["pipeline_batch_size"] = getattr(outputs[-1], "batch_size", args.batch)

    def write() -> None:
        db.write_mosaic_results(engine, request.evaluation_id, request.mosaic_ids, sums, focus, predicted)

    result["db_write"] = rate(timed(write, device, args.repeats, setup=clear), total)  # first writes
    result["db_rewrite"] = rate(timed(write, device, args.repeats), total)  # over the rows just written: upserts
    result.update(flow_figures(request, clear, inputs, args))
    result["rows_in_store"] = len(db.evaluation_results(engine, request.evaluation_id))
    result["focus_defined"] = int(np.isfinite(focus).sum())
    result["focus_median"] = float(np.nanmedian(focus)) if np.isfinite(focus).any() else None
    result["limit"] = kind
    result["passes_per_mosaic"] = int(explainer.params.get(multiplier, 1)) if multiplier else 1
    if args.dtype == "bf16":
        result.update(bf16_figures(request, outputs[-1], result["pipeline"], inputs, args))
    return result, focus, {"request": request, "explainer": explainer}


def evaluation_request(
    name: str, params: dict[str, Any], inputs: dict[str, Any], args: argparse.Namespace, url: str
) -> tuple[Any, ChunkRequest]:
    """The method's explainer and the request of all mosaics for its evaluation (registered in the store)."""
    method = method_spec(name, params, args.batch)
    explainer = caches.make_explainer(method, inputs["model_spec"])
    engine = store.engine_for(url)
    method_id = db.register_method(engine, explainer.name, dict(explainer.params))
    evaluation_id = db.get_or_create_evaluation(
        engine, inputs["checkpoint_id"], method_id, inputs["mosaic_set_id"], device=str(inputs["device"]),
        metadata={"benchmark": "benchmarks/throughput.py"},
    )
    if has_secret(url):  # a flow parameter never carries a password: the chunk reads the URL from the environment
        os.environ["FOCUS_DATABASE_URL"] = url
    # explain_chunk runs the explainer under autocast itself for bf16
    run = RunSpec(device=args.device, batch_size=args.batch, dtype=args.dtype,
                  database_url=None if has_secret(url) else url)
    specs = EvaluationSpecs(dataset=inputs["dataset"], mosaics=inputs["mosaic_spec"], model=inputs["model_spec"],
                            run=run)
    request = ChunkRequest.of(specs, method, evaluation_id, inputs["mosaic_ids"])
    return explainer, request


def explainer_figures(name: str, explainer: Any, inputs: dict[str, Any], args: argparse.Namespace
                      ) -> dict[str, Any]:
    """The explainer alone on the ready-made batches; for GradCAM also captum's ``LayerGradCam`` (the reference)."""
    device, model, total = inputs["device"], inputs["model"], inputs["total"]

    def explainer_only() -> None:
        with precision(args.dtype, device):
            for (x, _), y in zip(inputs["batches"], inputs["cpu_targets"]):
                explainer.explain(model, x, y)

    figures = {"explainer": rate(timed(explainer_only, device, args.repeats), total)}
    if name == "gradcam":  # the library path it replaced, on the same batches and layer
        from focus_core.explainers.gradcam import captum_gradcam

        layer = explainer.params["layer"] or models.default_gradcam_layer(model)

        def captum_only() -> None:
            with precision(args.dtype, device):
                for x, y in inputs["batches"]:
                    captum_gradcam(model, x, y, layer)

        figures["explainer_captum"] = rate(timed(captum_only, device, args.repeats), total)
    return figures


def flow_figures(request: ChunkRequest, clear: Callable[[], None], inputs: dict[str, Any],
                 args: argparse.Namespace) -> dict[str, Any]:
    """The chunks on the flow's threads, without and with the write; the first run in fresh threads apart."""
    device, total = inputs["device"], inputs["total"]
    chunks = chunk_requests(request, args.chunk)
    figures: dict[str, Any] = {"chunk": args.chunk, "chunks": len(chunks), "chunk_threads": CHUNK_THREADS}
    with chunk_pool() as pool:  # the warm-up run of each figure runs in these threads too

        def flow() -> None:
            run_chunks(pool, explain_chunk, chunks)

        synchronize(device)
        started = time.perf_counter()
        flow()  # the first run in fresh threads: what a flow run's first chunks pay
        synchronize(device)
        figures["flow_fresh_threads_s"] = time.perf_counter() - started
        figures["flow"] = rate(timed(flow, device, args.repeats), total)
        figures["flow_with_db"] = rate(
            timed(lambda: run_chunks(pool, evaluate_chunk.fn, chunks), device, args.repeats, setup=clear), total
        )
        figures["flow_paired"] = paired(flow, lambda: run_chunks(pool, evaluate_chunk.fn, chunks), device,
                                        args.repeats, names=("flow_s", "flow_with_db_s"), setup=clear)
    return figures


def bf16_figures(request: ChunkRequest, scores: tuple[np.ndarray, np.ndarray, np.ndarray],
                 pipeline: dict[str, Any], inputs: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The fp32 pipeline on the same mosaics: bf16's speed-up and its largest Focus difference."""
    _, focus, predicted = scores
    reference: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    fp32_request = request.model_copy(update={"run": request.run.model_copy(update={"dtype": "fp32"})})
    fp32 = rate(timed(lambda: reference.append(explain_chunk(fp32_request)), inputs["device"], args.repeats),
                inputs["total"])
    diff = np.abs(focus - reference[-1][1])
    return {
        "pipeline_fp32": fp32,
        "bf16": {
            "speedup_over_fp32": pipeline["mosaics_per_s"] / fp32["mosaics_per_s"],
            "max_focus_diff_vs_fp32": float(np.nanmax(diff)) if np.isfinite(diff).any() else None,
            "nan_mismatches": int((np.isnan(focus) != np.isnan(reference[-1][1])).sum()),
            "predicted_mismatches": int((predicted != reference[-1][2]).sum()),
        },
    }


def _sorted_table(events: Any, keys: tuple[str, ...], row_limit: int = 40) -> tuple[str, str]:
    """``events.table`` sorted by the first of ``keys`` this torch knows, and that key."""
    failures = []
    for key in keys:
        try:
            return events.table(sort_by=key, row_limit=row_limit), key
        except (AttributeError, KeyError, ValueError, TypeError) as error:
            failures.append(f"{key}: {type(error).__name__}: {error}")
    raise RuntimeError("no sort key of key_averages().table worked (" + "; ".join(failures) + ")")


def profile_method(label: str, context: dict[str, Any], inputs: dict[str, Any], args: argparse.Namespace) -> Path:
    """One pipeline run (``explain_chunk`` on all mosaics) and the explainer alone on the ready-made batches under
    ``torch.profiler``; both operator tables go to ``DIR/profile_<arch>_<label>.txt``, which is returned."""
    from torch.profiler import ProfilerActivity, profile

    device, model, explainer = inputs["device"], inputs["model"], context["explainer"]
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        keys: tuple[str, ...] = ("self_cuda_time_total", "self_device_time_total")  # the name differs by version
    else:
        keys = ("self_cpu_time_total",)

    synchronize(device)
    with profile(activities=activities) as pipeline_profile:
        explain_chunk(context["request"])
        synchronize(device)
    with profile(activities=activities) as explainer_profile:
        with precision(args.dtype, device):
            for (x, _), y in zip(inputs["batches"], inputs["cpu_targets"]):
                explainer.explain(model, x, y)
        synchronize(device)
    pipeline_table, key = _sorted_table(pipeline_profile.key_averages(), keys)
    explainer_table, _ = _sorted_table(explainer_profile.key_averages(), keys)

    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
    path = args.profile / f"profile_{args.arch}_{safe}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {label} on {args.arch}, {args.size}x{args.size} mosaics, batch {args.batch}, {inputs['total']} "
              f"mosaics, {device} ({args.dtype}), torch {torch.__version__}; sorted by {key}, top 40\n")
    path.write_text(
        header
        + f"\n## pipeline: flows.tasks.explain_chunk on all {inputs['total']} mosaics\n\n{pipeline_table}\n"
        + "\n## explainer alone on the same ready-made batches (what the pipeline adds is the difference)\n\n"
        + f"{explainer_table}\n"
    )
    return path


def measure_quantus(inputs: dict[str, Any], args: argparse.Namespace, gradcam_focus: np.ndarray | None
                    ) -> dict[str, Any]:
    """Quantus 0.6 Focus end to end (its own explain_func: captum LayerGradCam on the same layer), fp32."""
    try:
        import quantus
    except ImportError as error:
        return {"skipped": f"Quantus is not installed ({error}): pip install 'focus-audit[quantus]'."}
    model, device = inputs["model"], inputs["device"]
    count = min(args.quantus_mosaics or args.batch, inputs["total"])
    x = torch.cat([b[0] for b in inputs["batches"]])[:count]
    y = torch.cat([b[1] for b in inputs["batches"]])[:count]
    x_batch = x.float().cpu().numpy()
    y_batch = y.cpu().numpy()
    positions = [tuple(int(v) for v in row) for row in mosaics.target_mask(inputs["chosen"][:count]).tolist()]
    layer = explainers.resolve_layer(model, None)
    kwargs = {"method": "LayerGradCam", "gc_layer": layer, "interpolate": tuple(x.shape[-2:]),
              "interpolate_mode": "bilinear"}
    metric = quantus.Focus(disable_warnings=True, display_progressbar=False)
    scores: list[list[float]] = []

    def run() -> None:
        scores.append(metric(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=None, custom_batch=positions,
                             explain_func=quantus.explain, explain_func_kwargs=dict(kwargs),
                             device=str(device), batch_size=args.batch))

    result = {"version": quantus.__version__, "method": "LayerGradCam", **rate(timed(run, device, args.repeats), count)}
    if gradcam_focus is not None:  # a sanity check, not a target: ReLU before vs after upsampling differ
        ours = gradcam_focus[:count]
        theirs = np.asarray(scores[-1], dtype=np.float64)
        both = np.isfinite(ours) & np.isfinite(theirs)
        result["mean_abs_focus_diff_vs_gradcam_pipeline"] = float(np.abs(ours - theirs)[both].mean()) if both.any() \
            else None
    for parameter in model.parameters():  # quantus may re-enable gradients; keep the model as loaded
        parameter.requires_grad_(False)
    return result


# --------------------------------------------------------------------------- report


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the targets apply to (figures above 1 mean faster than the reference)."""
    limits = results["limits"]
    out: dict[str, Any] = {"pipeline_over_limit": {}, "db_write_share": {}, "db_cost_in_flow": {},
                           "explainer_over_limit": {}, "pipeline_over_limit_paired": {}, "db_cost_in_flow_paired": {}}
    for name, m in results["methods"].items():
        limit = limits[m["limit"]]["mosaics_per_s"] / m["passes_per_mosaic"]
        out["pipeline_over_limit"][name] = m["pipeline"]["mosaics_per_s"] / limit
        out["explainer_over_limit"][name] = m["explainer"]["mosaics_per_s"] / limit
        if "paired" in m:  # the same ratio from runs timed in turns (passes x limit time / pipeline time)
            turns = m["paired"]
            out["pipeline_over_limit_paired"][name] = m["passes_per_mosaic"] * statistics.median(
                turns["limit_s"]) / statistics.median(turns["pipeline_s"])
        # the first write on its own, after the pipeline on its own
        write, pipe = m["db_write"]["median_s"], m["pipeline"]["median_s"]
        out["db_write_share"][name] = write / (pipe + write)
        # what the write costs a flow run, where it overlaps the next chunk's compute (noise may make it < 0)
        flow, flow_with_db = m["flow"]["median_s"], m["flow_with_db"]["median_s"]
        out["db_cost_in_flow"][name] = (flow_with_db - flow) / flow_with_db
        if "flow_paired" in m:  # the same from the two flow runs timed in turns
            flow, flow_with_db = (statistics.median(m["flow_paired"][k]) for k in ("flow_s", "flow_with_db_s"))
            out["db_cost_in_flow_paired"][name] = (flow_with_db - flow) / flow_with_db
    quantus = results.get("quantus", {})
    if "mosaics_per_s" in quantus and "gradcam" in results["methods"]:
        # with the write: the slower of our two paths, so the ratio is a lower bound
        ours = results["methods"]["gradcam"]["pipeline_with_db"]["mosaics_per_s"]
        out["pipeline_over_quantus"] = ours / quantus["mosaics_per_s"]
    if "mosaics_per_s" in quantus:
        # the most any GradCAM could be ahead of Quantus on this machine: one forward pass per mosaic and nothing
        # else (on a CPU the model's own passes bound both, so the 100x target is a figure for accelerators)
        out["quantus_ceiling"] = limits["forward"]["mosaics_per_s"] / quantus["mosaics_per_s"]
    return out


def targets(results: dict[str, Any]) -> dict[str, bool]:
    r, met = results["ratios"], {}
    for name, value in r["pipeline_over_limit"].items():
        kind = results["methods"][name]["limit"]
        floor = TARGETS["lrp"] if name.startswith("lrp") else TARGETS[kind]
        met[f"{name}_pipeline_over_{kind}_limit>={floor}"] = value >= floor
    for name in r["db_write_share"]:
        for ratio in ("db_write_share", "db_cost_in_flow"):
            met[f"{name}_{ratio}<{TARGETS[ratio]}"] = r[ratio][name] < TARGETS[ratio]
    if "pipeline_over_quantus" in r:
        met[f"pipeline_over_quantus>={TARGETS['quantus']}"] = r["pipeline_over_quantus"] >= TARGETS["quantus"]
    return met


def figures(results: dict[str, Any]) -> dict[str, float]:
    """Every headline figure under one flat name (what CI checks for being present, positive and finite;
    ``<method>.db_cost_in_flow`` only finite: noise can make it slightly negative)."""
    flat = {f"{k}_mosaics_per_s": v["mosaics_per_s"] for k, v in results["limits"].items()}
    for name, m in results["methods"].items():
        for part in ("explainer", "explainer_captum", "pipeline", "pipeline_with_db", "db_write", "db_rewrite",
                     "flow", "flow_with_db", "pipeline_fp32"):
            if part in m:
                flat[f"{name}.{part}_mosaics_per_s"] = m[part]["mosaics_per_s"]
        flat[f"{name}.pipeline_over_limit"] = results["ratios"]["pipeline_over_limit"][name]
        for ratio in ("pipeline_over_limit_paired", "db_cost_in_flow_paired"):
            if name in results["ratios"][ratio]:
                flat[f"{name}.{ratio}"] = results["ratios"][ratio][name]
        flat[f"{name}.db_write_share"] = results["ratios"]["db_write_share"][name]
        flat[f"{name}.db_cost_in_flow"] = results["ratios"]["db_cost_in_flow"][name]
        if "bf16" in m:
            flat[f"{name}.bf16_speedup_over_fp32"] = m["bf16"]["speedup_over_fp32"]
    if "mosaics_per_s" in results.get("quantus", {}):
        flat["quantus_focus_mosaics_per_s"] = results["quantus"]["mosaics_per_s"]
    for ratio in ("pipeline_over_quantus", "quantus_ceiling"):
        if ratio in results["ratios"]:
            flat[ratio] = results["ratios"][ratio]
    return flat


def source_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), else ``$FOCUS_BENCH_COMMIT`` (a copy of the
    tree without ``.git``, as on a lent device), else ``None``."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("FOCUS_BENCH_COMMIT")
    return commit + ("+dirty" if dirty else "")


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "commit": source_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def print_table(results: dict[str, Any]) -> None:
    cfg = results["config"]
    print(f"\n{cfg['arch']}  {cfg['size']}x{cfg['size']} mosaics  batch {cfg['batch']}  {cfg['mosaics']} mosaics/run  "
          f"{cfg['device']} ({results['machine'].get('gpu', results['machine']['processor'])})  {cfg['dtype']}  "
          f"store {cfg['store']}  median of {cfg['repeats']}")
    print(f"{'':<34}{'mosaics/s':>12}")
    for kind, v in results["limits"].items():
        print(f"{kind + ' limit':<34}{v['mosaics_per_s']:>12.1f}")
    header = f"{'method':<22}{'explainer':>11}{'pipeline':>11}{'+ db':>11}{'flow':>11}{'flow+db':>11}" \
             f"{'limit':>22}{'pipe/limit':>12}{'in turns':>10}{'db share':>10}{'db in flow':>12}{'in turns':>10}"
    print("\n" + header)
    r = results["ratios"]
    for name, m in results["methods"].items():
        limit = f"{m['limit']}/{m['passes_per_mosaic']}" if m["passes_per_mosaic"] > 1 else m["limit"]
        print(f"{name:<22}{m['explainer']['mosaics_per_s']:>11.1f}{m['pipeline']['mosaics_per_s']:>11.1f}"
              f"{m['pipeline_with_db']['mosaics_per_s']:>11.1f}{m['flow']['mosaics_per_s']:>11.1f}"
              f"{m['flow_with_db']['mosaics_per_s']:>11.1f}{limit:>22}{r['pipeline_over_limit'][name]:>12.3f}"
              f"{r['pipeline_over_limit_paired'].get(name, float('nan')):>10.3f}"
              f"{r['db_write_share'][name]:>10.3f}{r['db_cost_in_flow'][name]:>12.3f}"
              f"{r['db_cost_in_flow_paired'].get(name, float('nan')):>10.3f}")
        if "bf16" in m:
            b = m["bf16"]
            diff = "n/a" if b["max_focus_diff_vs_fp32"] is None else f"{b['max_focus_diff_vs_fp32']:.2e}"
            print(f"{'':<22}bf16: {b['speedup_over_fp32']:.2f}x fp32, max |dFocus| {diff}")
    if results["methods"]:
        m = next(iter(results["methods"].values()))
        print(f"\nflow: {m['chunks']} chunks of {m['chunk']} mosaics on {m['chunk_threads']} threads. "
              "in turns: the same ratio from the two runs it compares timed alternately.\n"
              "db share: first write alone / (pipeline + write); db in flow: (flow+db - flow) / flow+db")
        print(f"{'database write, rows/s':<34}{'first write':>12}{'rewrite':>12}")
        for name, m in results["methods"].items():
            print(f"{name:<34}{m['db_write']['mosaics_per_s']:>12.0f}{m['db_rewrite']['mosaics_per_s']:>12.0f}")
    quantus = results.get("quantus", {})
    if "mosaics_per_s" in quantus:
        print(f"\nQuantus {quantus['version']} Focus ({quantus['method']}, fp32): {quantus['mosaics_per_s']:.1f} "
              f"mosaics/s; gradcam pipeline (with db) / Quantus = {r.get('pipeline_over_quantus', float('nan')):.1f} "
              f"(forward limit / Quantus = {r['quantus_ceiling']:.1f}: the most any GradCAM could reach here)")
    elif quantus:
        print(f"\nQuantus: {quantus.get('skipped') or quantus.get('error')}")
    for name, error in results["errors"].items():
        print(f"ERROR {name}: {error}")
    print("\ntargets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["targets"].items()))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.require_device(args.device)
    register_lrp_fast([name for name, _ in args.method_list])
    results: dict[str, Any] = {"errors": {}}
    with tempfile.TemporaryDirectory(prefix="focus-bench-") as tmp, \
            fresh_store(args.db, Path(tmp), args.keep_db) as url:
        caches.clear_caches()
        inputs = build_inputs(args, Path(tmp), url)
        results["config"] = {
            "arch": args.arch, "size": args.size, "tile": args.size // 2, "batch": args.batch,
            "mosaics": inputs["total"], "device": str(device), "dtype": args.dtype, "repeats": args.repeats,
            "statistic": "median", "store": store.describe(url).split(":")[0],
            "data": "digits" if args.arch == "digits_cnn" else "synthetic random uint8 ImageFolder",
            "weights": "random (torch.manual_seed(seed))", "seed": args.seed,
            "tiles_on_device": inputs["tiles_on_device"],
            "pipeline": "flows.tasks.explain_chunk / evaluate_chunk.fn (the project's own hot path, no Prefect)",
            "chunk": args.chunk, "chunks": -(-inputs["total"] // args.chunk), "chunk_threads": CHUNK_THREADS,
            "flow": "the chunks on a ThreadPoolExecutor of CHUNK_THREADS workers, as the evaluate flow's task runner",
            "db_writes": "first writes (the evaluation's rows deleted before each run), except db_rewrite (upserts)",
        }
        results["machine"] = machine(device)
        before = measure_limits(inputs, args)
        results["methods"], focus = {}, {}
        for name, params in args.method_list:
            label = name if name not in results["methods"] else f"{name}#{len(results['methods'])}"
            try:
                results["methods"][label], focus[label], context = measure_method(name, params, inputs, args, url)
            except Exception as error:  # noqa: BLE001 - one failing method must not hide the others' figures
                results["errors"][label] = f"{type(error).__name__}: {error}"
                continue
            if args.profile is not None:
                try:
                    results["methods"][label]["profile"] = str(profile_method(label, context, inputs, args))
                except Exception as error:  # noqa: BLE001 - a profiler failure must not stop the run
                    results["errors"][f"profile:{label}"] = f"{type(error).__name__}: {error}"
        # measured before and after the methods; the faster of the two counts (a late warm-up or a busy
        # neighbour on a shared machine must not make the limit look low and the ratios look good)
        after = measure_limits(inputs, args)
        results["limits"] = {k: max(before[k], after[k], key=lambda r: r["mosaics_per_s"]) for k in before}
        results["limits_before_after"] = {k: [before[k]["mosaics_per_s"], after[k]["mosaics_per_s"]] for k in before}
        if not args.no_quantus:
            try:
                reference = focus.get("gradcam") if args.dtype == "fp32" else None
                results["quantus"] = measure_quantus(inputs, args, reference)
            except Exception as error:  # noqa: BLE001
                results["quantus"] = {"error": f"{type(error).__name__}: {error}"}
                results["errors"]["quantus"] = results["quantus"]["error"]
        caches.clear_caches()
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["figures"] = figures(results)
    print_table(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {args.out}")
    return results


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
