"""deployments/: prefect.yaml, the work-pool base job templates and the automation are valid.

No server needed: what the server would check at deploy and run time (entrypoints, the flows'
parameter schemas, schedules, job-template placeholders) is checked here with Prefect's own code.
The real server checks them again in test_server_integration.py.
"""

from __future__ import annotations

import json
import os
import re
import typing
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
POOL_TEMPLATES = {name: DEPLOYMENTS / "work-pools" / f"{name}.json" for name in ("process", "docker", "kubernetes")}
FLOWS = {"evaluate", "randomization", "train", "audit", "sweep"}


def _config() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _deployments() -> list[dict]:
    return _config()["deployments"]


def _by_flow(flow: str) -> dict:
    matches = [d for d in _deployments() if d["entrypoint"].endswith(f":{flow}")]
    assert len(matches) == 1, f"expected one deployment of flow {flow!r}, found {len(matches)}"
    return matches[0]


def _load_flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    cwd = os.getcwd()
    os.chdir(ROOT)  # entrypoints are relative to the project root, as for `prefect deploy`
    try:
        return load_flow_from_entrypoint(entrypoint)
    finally:
        os.chdir(cwd)


def test_prefect_yaml_parses_as_prefect_reads_it():
    config = _config()
    try:
        from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with
    except ImportError:  # pragma: no cover - private module moved in another Prefect version
        PrefectYamlModel = None
    if PrefectYamlModel is not None:
        PrefectYamlModel.model_validate(config)
    names = [d["name"] for d in config["deployments"]]
    assert len(names) == len(set(names)), f"deployment names repeat: {names}"
    flows = {d["entrypoint"].rsplit(":", 1)[1] for d in config["deployments"]}
    assert flows == FLOWS


def test_pull_step_sets_the_working_directory():
    (step,) = _config()["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $FOCUS_PROJECT_DIR }}"


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_entrypoint_resolves_to_a_flow_whose_parameters_validate(flow: str):
    from prefect.flows import Flow
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    deployment = _by_flow(flow)
    path, _, name = deployment["entrypoint"].partition(":")
    assert (ROOT / path).is_file(), f"{deployment['entrypoint']}: no such file"
    loaded = _load_flow(deployment["entrypoint"])
    assert isinstance(loaded, Flow), f"{deployment['entrypoint']} is not a Prefect flow"

    # the pydantic model of the flow's one parameter, `params`, validates the yaml's defaults ...
    hints = typing.get_type_hints(loaded.fn)
    model = hints["params"]
    parameters = deployment["parameters"]
    assert set(parameters) == {"params"}, "every flow takes exactly one parameter, params"
    model.model_validate(parameters["params"])
    # ... and so does the JSON schema the server enforces (enforce_parameter_schema)
    assert deployment.get("enforce_parameter_schema", True) is True
    validate(parameters, parameter_schema(loaded).model_dump_for_openapi(), raise_on_error=True, ignore_required=False)


def test_work_pools_are_the_documented_ones():
    pools = {d["name"]: d["work_pool"]["name"] for d in _deployments()}
    assert pools.pop("sweep") == "focus-cpu", "the sweep only waits: it must not hold a GPU worker's slot"
    assert set(pools.values()) == {"focus-gpu"}


def test_nightly_audit_schedule_has_cron_and_timezone():
    from prefect.client.schemas.schedules import CronSchedule

    (schedule,) = _by_flow("audit")["schedules"]
    assert schedule["cron"] and schedule["timezone"], "the nightly audit needs a cron and a timezone"
    parsed = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # rejects a bad cron or zone
    assert parsed.cron.split()[2:] == ["*", "*", "*"], "the audit runs every night"
    assert schedule.get("active", True)


def test_training_has_a_concurrency_limit():
    limit = _by_flow("train")["concurrency_limit"]
    if isinstance(limit, dict):
        assert limit["collision_strategy"] == "ENQUEUE", "a second training run waits, it is not cancelled"
        limit = limit["limit"]
    assert limit == 1


def _placeholders(value) -> set[str]:
    text = json.dumps(value)
    return set(re.findall(r"\{\{\s*([\w.]+)\s*\}\}", text))


@pytest.mark.parametrize("kind", sorted(POOL_TEMPLATES))
def test_job_template_is_valid(kind: str):
    import jsonschema

    template = json.loads(POOL_TEMPLATES[kind].read_text())
    assert set(template) == {"job_configuration", "variables"}
    variables = template["variables"]
    assert variables["type"] == "object"
    jsonschema.Draft202012Validator.check_schema(variables)
    properties = variables["properties"]
    # every placeholder of the job configuration is a variable (the server refuses the pool otherwise)
    missing = _placeholders(template["job_configuration"]) - set(properties)
    assert not missing, f"{kind}: placeholders without a variable: {sorted(missing)}"
    # the defaults satisfy their own schema
    defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    resolver_schema = {**variables, "required": []}
    jsonschema.validate(defaults, resolver_schema)
    # job variables in prefect.yaml are variables of the pool
    for deployment in _deployments():
        unknown = set(deployment["work_pool"].get("job_variables") or {}) - set(properties)
        assert not unknown, f"{deployment['name']}: job variables unknown to the {kind} pool: {sorted(unknown)}"


def test_process_template_derives_from_prefects_default():
    from prefect.workers.process import ProcessWorker

    default = ProcessWorker.get_default_base_job_template()
    ours = json.loads(POOL_TEMPLATES["process"].read_text())
    assert ours["job_configuration"] == default["job_configuration"]
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    assert "CUDA_VISIBLE_DEVICES" in ours["variables"]["description"]


def test_docker_template_requests_one_gpu():
    docker_types = pytest.importorskip("docker.types")

    template = json.loads(POOL_TEMPLATES["docker"].read_text())
    assert template["job_configuration"]["container_create_kwargs"] == "{{ container_create_kwargs }}"
    kwargs = template["variables"]["properties"]["container_create_kwargs"]["default"]
    (request,) = kwargs["device_requests"]
    parsed = docker_types.DeviceRequest(**request)  # what docker-py builds from the dict
    assert parsed.count == 1 and parsed.capabilities == [["gpu"]] and parsed.driver == "nvidia"


def test_kubernetes_template_limits_one_gpu():
    template = json.loads(POOL_TEMPLATES["kubernetes"].read_text())
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"  # the name the Kubernetes worker expects
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))


def test_automation_triggers_on_regression_and_notifies():
    from prefect.events.schemas.automations import AutomationCore

    text = (DEPLOYMENTS / "automations.yaml").read_text()
    assert "${FOCUS_NOTIFICATION_BLOCK_ID}" in text
    filled = text.replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    (data,) = yaml.safe_load(filled)["automations"]
    automation = AutomationCore.model_validate(data)
    assert automation.trigger.expect == {"focus.audit.regressed"}
    assert [action.type for action in automation.actions] == ["send-notification"]


def test_the_automation_matches_the_regressions_the_audit_emits():
    """One notification per lineage (or checkpoint outside a lineage) and method, never for other events."""
    import datetime as dt

    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    from flows.audit import COMPLETED_EVENT, REGRESSED_EVENT, checkpoint_resource, lineage_resource

    text = (DEPLOYMENTS / "automations.yaml").read_text().replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    (data,) = yaml.safe_load(text)["automations"]
    trigger = EventTrigger.model_validate(data["trigger"])

    def event(name: str, resource: dict) -> ReceivedEvent:
        return ReceivedEvent(occurred=dt.datetime.now(dt.timezone.utc), event=name, resource=resource, id=uuid.uuid4())

    labels = {"focus.method": "gradcam", "focus.comparison": "previous_checkpoint"}
    assert trigger.covers(event(REGRESSED_EVENT, lineage_resource("resnet18-prod", **labels)))
    assert trigger.covers(event(REGRESSED_EVENT, checkpoint_resource("ab" * 32, "nightly", **labels)))
    assert not trigger.covers(event(COMPLETED_EVENT, {"prefect.resource.id": "focus.audit-run.3"}))
    assert trigger.for_each == {"prefect.resource.id", "focus.method"}
