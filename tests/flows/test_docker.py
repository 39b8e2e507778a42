"""The GPU worker's Dockerfile agrees with pyproject, the Makefile and prefect.yaml.

No Docker engine here: the image is not built; its install steps are read and compared.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _args() -> dict[str, str]:
    args = {}
    for word, rest in _instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args


def _expand(text: str) -> str:
    """``text`` with the Dockerfile's ARG defaults put in, also those that name another ARG."""
    args = _args()
    while True:
        expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)
        if expanded == text:
            return text
        text = expanded


def _runs() -> str:
    return "\n".join(rest for word, rest in _instructions() if word == "RUN")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dependency(name: str) -> Requirement:
    for text in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.name == name:
            return requirement
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r'"?\b(torch|torchvision)==([\w.+]+)"?', text))


def test_python_version_satisfies_requires_python():
    (base,) = [_expand(rest) for word, rest in _instructions() if word == "FROM"]
    match = re.match(r"python:(\d+\.\d+)", base)
    assert match, f"expected a python:<version> base image, got {base!r}"
    assert Version(match.group(1)) in SpecifierSet(_pyproject()["project"]["requires-python"])


def test_torch_pins_match_pyproject_and_makefile():
    dockerfile = _pins(_runs())
    makefile = _pins((ROOT / "Makefile").read_text())
    assert set(dockerfile) == {"torch", "torchvision"}, "the image pins torch and torchvision"
    assert dockerfile == makefile, "the image installs the torch the Makefile installs"
    for name, version in dockerfile.items():
        assert _dependency(name).specifier.contains(version), f"{name}=={version} is outside pyproject's range"
    assert "download.pytorch.org/whl/cu" in _expand(_runs()), "torch comes from a CUDA wheel index"


#: ``pip install .`` or ``pip install ".[extra,...]"`` (quoted or not): the project, with the extras named.
_PROJECT_INSTALL = re.compile(r"""pip install (?:--no-cache-dir )?(["']?)\.(?:\[(?P<extras>[\w,\s-]*)\])?\1(?:\s|$)""")


def test_installs_the_project_with_everything_it_packages():
    runs = _runs()
    match = _PROJECT_INSTALL.search(runs)
    assert match, "the image installs the project (pip install . or pip install '.[extras]')"
    extras = {e.strip() for e in (match.group("extras") or "").split(",") if e.strip()}
    assert {"s3", "mlflow"} <= extras, "a worker reads s3:// and models:/ weights: install the s3 and mlflow extras"
    assert extras <= set(_pyproject()["project"]["optional-dependencies"]), f"unknown extras {sorted(extras)}"
    copied = {
        part.rstrip("/").removeprefix("./")
        for word, rest in _instructions()
        if word == "COPY"
        for part in rest.split()[:-1]
    }
    includes = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    wanted = {p for p in packages if any(fnmatch.fnmatch(p, pattern) for pattern in includes)}
    assert wanted <= copied, f"packages not copied into the image: {sorted(wanted - copied)}"
    assert {"pyproject.toml", _pyproject()["project"]["readme"], "deployments"} <= copied
    # the torch pins are installed before the project, so pip keeps the CUDA builds
    assert runs.index("torch==") < match.start()


def test_dockerignore_keeps_what_the_image_copies():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "focus_core", "db", "flows", "deployments"):
        assert not any(fnmatch.fnmatch(needed, pattern.strip("/")) for pattern in ignored), f".dockerignore drops {needed}"
    assert ".venv" in ignored and ".git" in ignored


def test_worker_command_names_the_gpu_pool_of_prefect_yaml():
    commands = [rest for word, rest in _instructions() if word == "CMD"]
    assert len(commands) == 1
    command = json.loads(commands[0])  # exec form
    assert command[:3] == ["prefect", "worker", "start"]
    pool = command[command.index("--pool") + 1]
    assert command[command.index("--type") + 1] == "process"
    assert command[command.index("--limit") + 1] == "1", "one flow run at a time: one GPU, one run"
    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    gpu_pools = {d["work_pool"]["name"] for d in deployments if d["name"] != "sweep"}
    assert gpu_pools == {pool}
    # no ENTRYPOINT: the Docker and Kubernetes workers replace CMD with the flow-run command
    assert not [rest for word, rest in _instructions() if word == "ENTRYPOINT"]


def test_project_dir_of_the_pull_step_is_the_workdir():
    workdir = [rest for word, rest in _instructions() if word == "WORKDIR"][-1]
    env = " ".join(rest for word, rest in _instructions() if word == "ENV")
    match = re.search(r"FOCUS_PROJECT_DIR=(\S+)", env)
    assert match, "the image sets FOCUS_PROJECT_DIR for the deployments' pull step"
    assert match.group(1) == workdir


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_pool_templates_point_at_the_image_workdir(kind: str):
    template = json.loads((ROOT / "deployments" / "work-pools" / f"{kind}.json").read_text())
    env = template["job_configuration"]["env"]
    if isinstance(env, str):  # a variable the operator fixed (docker: it names Prefect Secret blocks)
        variable = template["variables"]["properties"]["env"]
        assert env == "{{ env }}" and variable["const"] == variable["default"]
        env = variable["default"]
    workdir = [rest for word, rest in _instructions() if word == "WORKDIR"][-1]
    assert env["FOCUS_PROJECT_DIR"] == workdir
