"""The Docker pool for real: the worker image built, and one evaluation run in a container of it.

Runs only where a Docker engine answers ``docker info`` and prefect-docker is installed (``pip install
'.[docker]'``); skipped with the reason otherwise. CI on the project's machine starts without ``dockerd``, so it
skips there; start one (``dockerd &``) to run it.

1. The base image: ``FOCUS_DOCKER_BASE_IMAGE``, else ``python:3.11-slim`` where the engine has it, else the local
   stand-in ``focus-audit-base:bookworm``, built here with ``debootstrap`` from Debian's packages (no registry
   needed; the recipe of docs/operations.md, "The worker image without a registry").
2. torch: the wheels this host's pip resolves for the Dockerfile's pins, served on 127.0.0.1 as a simple index
   (``TORCH_INDEX_URL``), so the build downloads no wheel this host already has.
3. ``docker build --network host`` (the index is on loopback), a real Prefect server, the pool made from
   deployments/work-pools/docker.json with the operator's edits for a host whose Prefect server and PostgreSQL
   listen on loopback (``network_mode: host``, the checkpoint mounted read-only in the image's project folder),
   and evaluate deployed to it. A run asking for all GPUs is refused by the server; a run with the job variables
   of a CPU host (``device_requests: []``, ``image_pull_policy: Never``) completes in a container and writes its
   rows to PostgreSQL.

The figures (build time, image size, evaluation time) are printed (``pytest -s``). The image is removed at the
end unless ``FOCUS_DOCKER_KEEP_IMAGE=1``; the stand-in base is kept for the next run.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

try:  # the fixtures and helpers live next to this file; import them explicitly
    from server import PROJECT_ROOT, PrefectServer, free_port, postgres_url, prefect_server  # noqa: F401
    from server import start_process, stop_process, tail
    from test_docker import _pins, _runs
    from test_server_integration import PER_CLASS, RUN_TIMEOUT_S, api, evaluate_parameters
    from test_server_integration import checkpoints, store_url  # noqa: F401  (pytest fixtures)
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import PROJECT_ROOT, PrefectServer, free_port, postgres_url, prefect_server  # noqa: F401
    from tests.flows.server import start_process, stop_process, tail
    from tests.flows.test_docker import _pins, _runs
    from tests.flows.test_server_integration import PER_CLASS, RUN_TIMEOUT_S, api, evaluate_parameters
    from tests.flows.test_server_integration import checkpoints, store_url  # noqa: F401  (pytest fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]

IMAGE = "focus-audit-worker:pytest"
POOL = "focus-gpu-docker"
DEFAULT_BASE = "python:3.11-slim"
STAND_IN_BASE = "focus-audit-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: Where the image's working directory is (FOCUS_PROJECT_DIR): a run reads and writes under it.
IMAGE_PROJECT_DIR = "/opt/focus-audit"


def _docker(*args: str, timeout: float = 600.0, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def _run(args: list[str], timeout: float) -> None:
    """Run ``args``; fail the test with the end of its output if it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{args[:4]} exited {result.returncode}:\n{output}"


def _image_exists(name: str) -> bool:
    return _docker("image", "inspect", name, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def docker_engine() -> None:
    """Skip unless a Docker engine answers and the Docker worker is installed."""
    if shutil.which("docker") is None:
        pytest.skip("no `docker` client on PATH")
    if _docker("info", timeout=60).returncode != 0:
        pytest.skip("no Docker engine answers `docker info` (start dockerd to run this test)")
    pytest.importorskip("prefect_docker", reason="prefect-docker is not installed: pip install '.[docker]'")


def _stand_in_base(folder: Path) -> str:
    """focus-audit-base:bookworm: Debian's minimal system with its Python 3.11, pip free to install system-wide,
    and this host's CA certificates."""
    if _image_exists(STAND_IN_BASE):
        return STAND_IN_BASE
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        pytest.skip(f"no {DEFAULT_BASE} image and no debootstrap run as root to build {STAND_IN_BASE}")
    rootfs = folder / "rootfs"
    _run([debootstrap, "--variant=minbase", "--include=python3,python3-pip,python3-venv,ca-certificates",
          "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=1800)
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)  # as in Docker Hub's python image
    # this host's trust store: the build's pip reaches PyPI through whatever TLS proxy the host's pip trusts
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["docker", "import", "--change", 'CMD ["python3"]', "-", STAND_IN_BASE],
        stdin=tar.stdout, capture_output=True, text=True, timeout=600,
    )
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    assert imported.returncode == 0, imported.stderr
    return STAND_IN_BASE


def _base_image(folder: Path) -> str:
    given = os.environ.get("FOCUS_DOCKER_BASE_IMAGE", "").strip()
    if given:
        return given
    return DEFAULT_BASE if _image_exists(DEFAULT_BASE) else _stand_in_base(folder)


def _torch_index(folder: Path) -> Path:
    """A PEP 503 index of the wheels this host's pip resolves for the Dockerfile's torch pins (local ones linked)."""
    pins = [f"{name}=={version}" for name, version in sorted(_pins(_runs()).items())]
    folder.mkdir()
    report = folder / "report.json"
    _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
          str(report), *pins], timeout=900)
    files = folder / "files"
    files.mkdir()
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        hashes = item["download_info"].get("archive_info", {}).get("hashes", {})
        filename = url.rsplit("/", 1)[-1]
        if url.startswith("file://"):
            (files / filename).symlink_to(url.removeprefix("file://"))
            url = f"../../files/{filename}"
        if "sha256" in hashes:
            url += f"#sha256={hashes['sha256']}"
        page = folder / "simple" / canonicalize_name(item["metadata"]["name"])
        page.mkdir(parents=True)
        (page / "index.html").write_text(f'<html><body><a href="{html.escape(url)}">{filename}</a></body></html>\n')
    return folder


@pytest.fixture(scope="module")
def worker_image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image, built from the Dockerfile with the torch this host has (tag focus-audit-worker:pytest)."""
    folder = tmp_path_factory.mktemp("docker-image")
    base = _base_image(folder)
    index = _torch_index(folder / "index")
    port = free_port()
    server = start_process(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(index)],
        env=dict(os.environ), log_path=folder / "index.log", cwd=folder,
    )
    log_path = folder / "build.log"
    started = time.monotonic()
    try:
        with open(log_path, "w") as log:
            built = subprocess.run(
                ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
                 "--build-arg", f"TORCH_INDEX_URL=http://127.0.0.1:{port}/simple", "-t", IMAGE, "."],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3000,
            )
    finally:
        stop_process(server)
    elapsed = time.monotonic() - started
    assert built.returncode == 0, f"docker build failed:\n{tail(log_path)}"
    size = int(_docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage {IMAGE} from {base}: built in {elapsed:.0f} s, {size / 1e9:.2f} GB")
    try:
        yield IMAGE
    finally:
        if os.environ.get("FOCUS_DOCKER_KEEP_IMAGE") != "1":
            _docker("image", "rm", IMAGE)


def _cpu_host_template(image: str, folder: Path) -> dict:
    """docker.json with this host's operator edits: its image, host network, `folder` mounted as checkpoints/."""
    template = json.loads((PROJECT_ROOT / "deployments" / "work-pools" / "docker.json").read_text())
    config = template["job_configuration"]
    config["image"] = image
    config["network_mode"] = "host"  # the Prefect server and PostgreSQL listen on 127.0.0.1 only
    config["volumes"] = [f"{folder}:{IMAGE_PROJECT_DIR}/checkpoints:ro"]
    return template


def test_an_evaluation_runs_in_a_container_of_the_docker_pool(
    worker_image: str, prefect_server: PrefectServer, store_url: str, checkpoints: list[str]
):
    import asyncio

    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    import db

    checkpoint = Path(checkpoints[0])
    checkpoint.parent.chmod(0o755)  # the image's user (uid 1000) reads the mounted folder
    checkpoint.chmod(0o644)

    async def create_pool() -> None:
        async with get_client() as client:
            template = _cpu_host_template(worker_image, checkpoint.parent)
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="docker", base_job_template=template))

    with api(prefect_server):
        asyncio.run(create_pool())
        # the Secret blocks job_configuration.env names: the container's store and object-store credentials
        Secret(value=store_url).save("focus-database-url")
        Secret(value={"AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}).save("focus-object-store")
    prefect_server.run_cli(
        "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "evaluate", "--pool", POOL
    )
    worker_site = str(Path(sys.modules["prefect_docker"].__file__).parents[1])  # where prefect-docker is installed
    log_path = prefect_server.home.parent / "worker-docker-0.log"
    env = {
        **prefect_server.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), worker_site])),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    }
    proc = start_process(
        [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", POOL, "--type", "docker",
         "--limit", "1", "--name", "docker-0"],
        env=env, log_path=log_path, cwd=PROJECT_ROOT,
    )
    prefect_server.workers.append(("docker-0", proc, log_path))

    parameters = evaluate_parameters(f"{IMAGE_PROJECT_DIR}/checkpoints/{checkpoint.name}", ["gradcam"])
    cpu_host = {"device_requests": [], "image_pull_policy": "Never"}
    with api(prefect_server):
        every_gpu = [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]
        with pytest.raises(Exception, match=r"(?i)device_requests|validation"):
            run_deployment("evaluate/evaluate", parameters=parameters, job_variables={"device_requests": every_gpu},
                           timeout=0)
        started = time.monotonic()
        flow_run = run_deployment(
            "evaluate/evaluate", parameters=parameters, job_variables=cpu_host, timeout=RUN_TIMEOUT_S
        )
        elapsed = time.monotonic() - started
    print(f"\nevaluate through {POOL}: {flow_run.state.name} in {elapsed:.0f} s (container start included)")
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{prefect_server.logs()}"
    host, _, container = (flow_run.infrastructure_pid or "").rpartition(":")  # the docker worker's "<host>:<id>"
    assert host and len(container) == 64, flow_run.infrastructure_pid

    engine = db.get_engine(store_url)
    try:
        summary = db.evaluation_summary(engine)
    finally:
        engine.dispose()
    assert len(summary) == 1, summary
    row = summary.iloc[0]
    assert row["status"] == "finished" and row["n"] == 10 * PER_CLASS
