"""flows.weights.mlflow_source: models:/ URIs resolved through a real ``mlflow server`` (SQLite, local artifacts).

The server tests register a tiny digits CNN's ``state_dict`` three ways (a file artifact, a folder written by
``mlflow.pytorch.log_state_dict``, a logged pickled model), point an alias at a version, resolve both URI forms,
check the local file's sha256 against the file the server stores, and move the alias.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch

from flows.weights import mlflow_source
from flows.weights.mlflow_source import is_registry_uri, parse_registry_uri, resolve, version_for_alias
from focus_core.architectures import DigitsCNN
from focus_core.errors import FocusError
from focus_core.models import load_weights, save_weights
from tests.flows.server import free_port
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (pytest fixture)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.rstrip().endswith("."), message
    assert "Traceback" not in message


# --- no server ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/digits@champion", ("digits", None, "champion")),
    ("models:/resnet18-prod/12", ("resnet18-prod", "12", None)),
])
def test_parse_registry_uri_reads_both_forms(uri: str, expected: tuple) -> None:
    assert is_registry_uri(uri)
    assert parse_registry_uri(uri) == expected


@pytest.mark.parametrize("uri", ["models:/digits", "models:/digits/Production", "models:/digits/latest",
                                 "models:/m-0123456789abcdef", "models:/digits/3/data"])
def test_other_registry_forms_are_refused_in_one_sentence(uri: str) -> None:
    with pytest.raises(FocusError) as error:
        parse_registry_uri(uri)
    _one_sentence(str(error.value))
    assert "models:/<registered-name>@<alias>" in str(error.value)


def test_paths_and_object_store_urls_are_not_registry_uris() -> None:
    assert not any(is_registry_uri(s) for s in ("checkpoints/w.pt", "s3://b/models/w.pt", "file:///m.pt", None, ""))


def test_no_tracking_uri_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(FocusError, match="set MLFLOW_TRACKING_URI") as error:
        resolve("models:/digits@champion")
    _one_sentence(str(error.value))


def test_no_server_is_one_sentence_at_once_and_hides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://focus:s3cret@127.0.0.1:{port}")
    tries: list[object] = []
    connect = socket.socket.connect

    def counted(sock: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[1] == port:
            tries.append(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counted)
    with pytest.raises(FocusError, match="No MLflow tracking server answers") as error:
        resolve("models:/digits/1")
    # MLflow's own retries of a refused connection back off for minutes: focus asks once, then stops
    assert len(tries) == 1, f"a dead server must be asked once, not {len(tries)} times"
    _one_sentence(str(error.value))
    assert "s3cret" not in str(error.value)


def _write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        save_weights(DigitsCNN(), folder / name)


def test_the_state_dict_file_is_found_in_the_accepted_layouts(tmp_path: Path) -> None:
    logged = tmp_path / "log_state_dict"
    _write(logged, "state_dict.pth")
    assert mlflow_source._state_dict_file(logged, "m/1") == logged / "state_dict.pth"
    # a logged model with its state_dict added next to the pickled module: the pickle is never picked
    model = tmp_path / "model"
    _write(model, "data/model.pth", "weights/digits.pt")
    (model / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n")
    assert mlflow_source._state_dict_file(model, "m/2") == model / "weights" / "digits.pt"


def _same_weights(path: Path, model: torch.nn.Module) -> bool:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    expected = model.state_dict()
    return set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_a_pt2_logged_model_gives_its_state_dict_without_unpickling(tmp_path: Path) -> None:
    mlflow_pytorch = pytest.importorskip("mlflow.pytorch")
    torch.manual_seed(3)
    model = DigitsCNN().eval()
    folder = tmp_path / "model"
    mlflow_pytorch.save_model(model, str(folder), serialization_format="pt2", pip_requirements=["torch"],
                              input_example=torch.zeros(2, 1, 32, 32).numpy())
    assert (folder / "data" / "model.pt2").is_file()
    path = mlflow_source._state_dict_file(folder, "digits/3")
    assert _same_weights(path, model)
    load_weights(DigitsCNN(), path)
    assert mlflow_source._state_dict_file(folder, "digits/3") == path  # read out once, then reused
    # an archive that is no pt2 program (or one this torch cannot read) is refused in one sentence
    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    (broken / "data" / "model.pt2").write_bytes(b"not a zip archive")
    (broken / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n")
    with pytest.raises(FocusError, match="pt2 program whose weights") as error:
        mlflow_source._state_dict_file(broken, "digits/4")
    _one_sentence(str(error.value))


@pytest.mark.parametrize(("files", "mlmodel", "match"), [
    (["data/model.pth"], True, "logged PyTorch model without a state_dict file"),
    (["a.pt", "b.pth"], False, "several weights files"),
    ([], False, "holds no state_dict file"),
])
def test_other_layouts_are_refused_in_one_sentence(tmp_path: Path, files: list[str], mlmodel: bool, match: str) -> None:
    _write(tmp_path, *files)
    (tmp_path / "MLmodel" if mlmodel else tmp_path / "notes.txt").write_text(
        "flavors:\n  pytorch:\n    model_data: data\n"
    )
    with pytest.raises(FocusError, match=match) as error:
        mlflow_source._state_dict_file(tmp_path, "digits/1")
    _one_sentence(str(error.value))


# --- a real mlflow server -----------------------------------------------------------------------------------------

NAME = "digits-cnn"


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """Two versions of a digits CNN's state_dict (a file, then log_state_dict), alias champion on version 1."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.url)
    client = MlflowClient(mlflow_server.url)
    work = tmp_path_factory.mktemp("mlflow-client")
    torch.manual_seed(1)
    first = work / "digits.pt"
    save_weights(DigitsCNN(), first)
    torch.manual_seed(2)
    second = DigitsCNN().state_dict()
    client.create_registered_model(NAME)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(first))
        mlflow.pytorch.log_state_dict(second, "weights")
    v1 = client.create_model_version(NAME, f"{run.info.artifact_uri}/digits.pt", run_id=run.info.run_id)
    v2 = client.create_model_version(NAME, f"runs:/{run.info.run_id}/weights", run_id=run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", v1.version)
    stored = mlflow_server.root / "artifacts"
    files = {"1": next(stored.rglob("digits.pt")), "2": next(stored.rglob("state_dict.pth"))}
    try:
        yield {"client": client, "run_id": run.info.run_id, "versions": (v1.version, v2.version), "files": files,
               "cache": work / "cache"}
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:  # noqa: F811
    for key, value in mlflow_server.env().items():
        monkeypatch.setenv(key, value)
    return mlflow_server


@pytest.mark.server
@pytest.mark.timeout(300)
def test_alias_and_version_resolve_to_the_logged_weights(registry, tracking: MlflowServer) -> None:
    v1, v2 = registry["versions"]
    by_alias = resolve(f"models:/{NAME}@champion", registry["cache"])
    assert (by_alias.name, by_alias.version, by_alias.alias, by_alias.run_id) == (NAME, v1, "champion",
                                                                                 registry["run_id"])
    assert by_alias.uri == f"models:/{NAME}/{v1}" and by_alias.source.endswith("/digits.pt")
    assert _sha256(by_alias.path) == _sha256(registry["files"]["1"])

    by_version = resolve(f"models:/{NAME}/{v2}", registry["cache"])
    assert (by_version.version, by_version.alias) == (v2, None)
    assert by_version.path.name == "state_dict.pth"
    assert _sha256(by_version.path) == _sha256(registry["files"]["2"])
    load_weights(DigitsCNN(), by_version.path)  # a state_dict that loads with weights_only=True
    assert _sha256(by_version.path) != _sha256(by_alias.path)


@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_tracking_uri_with_credentials_still_reaches_the_server(registry, tracking: MlflowServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.url.replace("http://", "http://focus:s3cret@"))
    assert resolve(f"models:/{NAME}/1", registry["cache"]).version == "1"


@pytest.mark.server
@pytest.mark.timeout(300)
def test_moving_the_alias_moves_what_is_resolved(registry, tracking: MlflowServer) -> None:
    v1, v2 = registry["versions"]
    client = registry["client"]
    before = version_for_alias(NAME, "champion", registry["cache"])
    client.set_registered_model_alias(NAME, "champion", v2)
    try:
        after = version_for_alias(NAME, "champion", registry["cache"])
    finally:
        client.set_registered_model_alias(NAME, "champion", v1)
    assert (before.version, after.version) == (v1, v2)
    assert _sha256(after.path) == _sha256(registry["files"]["2"]) != _sha256(before.path)


@pytest.mark.server
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("uri", "match"), [
    ("models:/no-such-model@champion", "No registered model 'no-such-model'"),
    ("models:/no-such-model/1", "No registered model 'no-such-model'"),
    (f"models:/{NAME}@staging", "has no alias 'staging' \\(its aliases are champion\\)"),
    (f"models:/{NAME}/99", "has no version 99 \\(it has versions 1 to 2\\)"),
])
def test_unknown_model_alias_or_version_is_one_sentence(registry, tracking: MlflowServer, uri: str, match: str) -> None:
    with pytest.raises(FocusError, match=match) as error:
        resolve(uri, registry["cache"])
    _one_sentence(str(error.value))


@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_registered_pt2_model_resolves_to_its_weights(registry, tracking: MlflowServer) -> None:
    import mlflow

    torch.manual_seed(4)
    model = DigitsCNN().eval()
    with mlflow.start_run():
        mlflow.pytorch.log_model(model, name="model", serialization_format="pt2", pip_requirements=["torch"],
                                 input_example=torch.zeros(2, 1, 32, 32).numpy(), registered_model_name="digits-pt2")
    found = resolve("models:/digits-pt2/1", registry["cache"])
    assert found.version == "1" and _same_weights(found.path, model)


@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_pickled_logged_model_is_refused_without_unpickling(registry, tracking: MlflowServer) -> None:
    import mlflow

    with mlflow.start_run():
        info = mlflow.pytorch.log_model(DigitsCNN(), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"], registered_model_name="digits-pickled")
    assert info.registered_model_version is not None
    with pytest.raises(FocusError, match="never unpickles a model") as error:
        resolve("models:/digits-pickled/1", registry["cache"])
    _one_sentence(str(error.value))
