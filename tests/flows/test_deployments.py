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

    parameters = deployment["parameters"]
    assert set(parameters) == {"params"}, "every flow takes exactly one parameter, params"
    assert deployment.get("enforce_parameter_schema", True) is True
    schema = parameter_schema(loaded).model_dump_for_openapi()  # what `prefect deploy` sends the server
    # the server accepts the defaults when the deployment is created (it ignores required fields then) ...
    validate(parameters, schema, raise_on_error=True, ignore_required=True)
    # ... and a run of them either runs as it stands, or the form requires exactly the fields left to fill in
    errors = validate(parameters, schema, ignore_required=False)
    assert all(error.validator == "required" for error in errors), [error.message for error in errors]
    missing = {path for error in errors for path in _missing_paths(error)}
    assert missing == REQUIRED_IN_FORM[flow], f"{flow}: the form leaves {sorted(missing)} to fill in"
    # the pydantic model of the flow's one parameter, `params`, agrees: it accepts the defaults exactly when the
    # form needs nothing more
    model = typing.get_type_hints(loaded.fn)["params"]
    if missing:
        with pytest.raises(ValueError, match="weights"):
            model.model_validate(parameters["params"])
        filled = _fill(parameters, missing, "checkpoints/digits-0123456789ab/epoch-0010.weights.pt")
        model.model_validate(filled["params"])
        validate(filled, schema, raise_on_error=True, ignore_required=False)
    else:
        model.model_validate(parameters["params"])


#: The fields each deployment's form leaves to the user (JSON paths); empty: the defaults run as they stand.
REQUIRED_IN_FORM = {
    "evaluate": {"params.model.weights"},
    "randomization": {"params.model.weights"},
    "sweep": {"params.checkpoints[0].weights"},
    "train": set(),
    "audit": set(),
}


def _missing_paths(error) -> list[str]:
    """The JSON paths of the required properties a 'required' validation error found missing."""
    base = error.json_path.removeprefix("$").removeprefix(".")
    return [f"{base}.{name}" if base else name for name in error.validator_value if name not in error.instance]


def _fill(parameters: dict, paths: set[str], value: str) -> dict:
    filled = json.loads(json.dumps(parameters))
    for path in paths:
        *parents, leaf = re.findall(r"[^.\[\]]+", path)
        node = filled
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[leaf] = value
    return filled


def _property_names(schema) -> set[str]:
    """Every property name anywhere in a JSON schema (definitions included)."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties", {}))
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_no_form_shows_the_database_url_or_an_internal_id(flow: str):
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    entrypoint = _by_flow(flow)["entrypoint"]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:  # `prefect deploy` reads the entrypoint's source (defaults included) without running it
        deployed = parameter_schema_from_entrypoint(entrypoint).model_dump_for_openapi()
    finally:
        os.chdir(cwd)
    for schema in (parameter_schema(_load_flow(entrypoint)).model_dump_for_openapi(), deployed):
        names = _property_names(schema)
        assert "database_url" not in names and "audit_run_id" not in names, f"{flow}: {sorted(names)}"
        assert "params" in schema["properties"] and "device" in names  # the schema itself is there
        # nor does a default value of the form carry them (train and audit have a default `params`)
        text = json.dumps(schema)
        assert '"database_url"' not in text and '"audit_run_id"' not in text, flow


def test_the_hidden_fields_stay_usable_from_code():
    import inspect

    from flows.evaluate import evaluate
    from flows.params import RunSpec, TrainParams

    assert RunSpec(database_url="sqlite:///focus.db").database_url == "sqlite:///focus.db"
    assert TrainParams(database_url="postgresql+psycopg://focus@db/focus").run.database_url.endswith("@db/focus")
    with pytest.raises(ValueError, match="password"):  # still refused with a secret, only not shown
        RunSpec(database_url="postgresql+psycopg://focus:hunter2@db/focus")
    assert "audit_run_id" in inspect.signature(evaluate.fn).parameters


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
    variables = set(ours["variables"]["properties"])
    assert variables == {"name", "labels", "stream_output"}  # a subset of Prefect's: no command, env, working_dir
    assert variables < set(default["variables"]["properties"])
    assert {k: v for k, v in ours["job_configuration"].items() if k in variables} == {
        k: v for k, v in default["job_configuration"].items() if k in variables}
    # fixed: the worker's environment is inherited, with the heartbeats the zombie automation expects
    assert ours["job_configuration"]["env"] == {"PYTHONUNBUFFERED": "1", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}
    assert "CUDA_VISIBLE_DEVICES" in ours["variables"]["description"]


#: Job variables that would let whoever starts a run choose what a worker executes or which secrets it sees.
EXECUTION_VARIABLES = {"command", "env", "image", "working_dir", "volumes", "privileged", "namespace", "networks",
                       "network_mode", "service_account_name", "cluster_config", "container_create_kwargs",
                       "database_secret", "object_store_secret"}


@pytest.mark.parametrize("kind", sorted(POOL_TEMPLATES))
def test_no_template_lets_a_run_choose_what_the_worker_executes(kind: str):
    import jsonschema

    template = json.loads(POOL_TEMPLATES[kind].read_text())
    variables = template["variables"]
    # a variable a run could set to choose the command, image, environment...: none, or fixed by a const (docker's
    # env names Prefect Secret blocks, which only a variable's value may reference)
    settable = {name for name, prop in variables["properties"].items() if "const" not in prop}
    assert not EXECUTION_VARIABLES & settable, kind
    assert not EXECUTION_VARIABLES & _placeholders(template["job_configuration"]) & settable, kind
    for name in set(variables["properties"]) - settable:
        assert variables["properties"][name]["const"] == variables["properties"][name]["default"]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({name: {"PATH": "/tmp/evil"}}, variables)
    assert variables["additionalProperties"] is False  # the server refuses any other job variable of a run
    with pytest.raises(jsonschema.ValidationError, match="command"):
        jsonschema.validate({"command": "sh -c 'id > /tmp/x'"}, variables)


def test_docker_template_requests_one_gpu():
    docker_types = pytest.importorskip("docker.types")
    from prefect.utilities.templating import apply_values

    template = json.loads(POOL_TEMPLATES["docker"].read_text())
    properties = template["variables"]["properties"]
    defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    kwargs = apply_values(template["job_configuration"], defaults)["container_create_kwargs"]
    (request,) = kwargs["device_requests"]  # the default; a CPU host sets the variable to [] (docs/scaling.md)
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


def _automation(text: str, name: str) -> dict:
    """The automation called ``name`` in the text of automations.yaml."""
    (data,) = [a for a in yaml.safe_load(text)["automations"] if a["name"] == name]
    return data


def test_automation_triggers_on_regression_and_notifies():
    from prefect.events.schemas.automations import AutomationCore

    text = (DEPLOYMENTS / "automations.yaml").read_text()
    assert "${FOCUS_NOTIFICATION_BLOCK_ID}" in text
    filled = text.replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    data = _automation(filled, "focus-audit-regressed")
    automation = AutomationCore.model_validate(data)
    assert automation.trigger.expect == {"focus.audit.regressed"}
    assert [action.type for action in automation.actions] == ["send-notification"]


def test_kubernetes_template_takes_the_store_url_and_object_store_credentials_from_secrets():
    from prefect.utilities.templating import apply_values

    template = json.loads(POOL_TEMPLATES["kubernetes"].read_text())
    properties = template["variables"]["properties"]
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    (database,) = [e for e in container["env"] if e["name"] == "FOCUS_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"] == {"name": "focus-database", "key": "FOCUS_DATABASE_URL"}
    (object_store,) = container["envFrom"]
    assert object_store["secretRef"]["name"] == "focus-object-store"  # fixed by the operator, not a job variable
    assert object_store["secretRef"].get("optional") is True  # workload identity needs no Secret
    env = template["job_configuration"]["env"]  # fixed: a deployment or run cannot add to it
    assert env["FOCUS_PROJECT_DIR"] == "/opt/focus-audit"
    assert not {"FOCUS_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    # the worker fills the placeholders with the variables' defaults (or a deployment's job_variables)
    defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    (resolved,) = apply_values(template["job_configuration"], defaults)["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert resolved["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "focus-database"
    assert resolved["resources"]["limits"]["memory"] == properties["memory_limit"]["default"]


SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "focus-test-key", "AWS_SECRET_ACCESS_KEY": "focus-test-secret"}


def test_docker_template_resolves_credentials_from_prefect_secret_blocks(prefect_api):
    import asyncio

    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.base import BaseJobConfiguration

    template = json.loads(POOL_TEMPLATES["docker"].read_text())
    env = template["variables"]["properties"]["env"]["default"]
    assert env["FOCUS_DATABASE_URL"] == "{{ prefect.blocks.secret.focus-database-url }}"
    assert {k for k, v in env.items() if "prefect.blocks.secret.focus-object-store." in str(v)} == set(SECRET_KEYS)
    store_url = "postgresql+psycopg://focus:pw-from-block@db/focus"
    Secret(value=store_url).save("focus-database-url", overwrite=True)
    Secret(value=SECRET_KEYS).save("focus-object-store", overwrite=True)

    async def check() -> tuple[dict, dict]:
        async with get_client() as client:  # the server accepts the template as a base job template
            await client.create_work_pool(WorkPoolCreate(name=f"docker-{uuid.uuid4().hex[:8]}", type="docker",
                                                         base_job_template=template))
            # what the worker builds for a flow run: the pool's fixed env, blocks resolved (a run that asks for
            # another env is refused by the server first: the variable is a const)
            merged = await BaseJobConfiguration.from_template_and_values(template, {}, client=client)
        return merged.env

    merged = asyncio.run(check())
    assert merged["FOCUS_DATABASE_URL"] == store_url
    assert {k: merged[k] for k in SECRET_KEYS} == SECRET_KEYS
    assert "AWS_ENDPOINT_URL" not in merged and merged["FOCUS_PROJECT_DIR"] == "/opt/focus-audit"


def test_the_automation_matches_the_regressions_the_audit_emits():
    """One notification per lineage (or checkpoint outside a lineage) and method, never for other events."""
    import datetime as dt

    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    from flows.audit import COMPLETED_EVENT, REGRESSED_EVENT, checkpoint_resource, lineage_resource

    text = (DEPLOYMENTS / "automations.yaml").read_text().replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    data = _automation(text, "focus-audit-regressed")
    trigger = EventTrigger.model_validate(data["trigger"])

    def event(name: str, resource: dict) -> ReceivedEvent:
        return ReceivedEvent(occurred=dt.datetime.now(dt.timezone.utc), event=name, resource=resource, id=uuid.uuid4())

    labels = {"focus.method": "gradcam", "focus.comparison": "reference"}
    assert trigger.covers(event(REGRESSED_EVENT, lineage_resource("resnet18-prod", **labels)))
    assert trigger.covers(event(REGRESSED_EVENT, checkpoint_resource("ab" * 32, "nightly", **labels)))
    assert not trigger.covers(event(COMPLETED_EVENT, {"prefect.resource.id": "focus.audit-run.3"}))
    assert trigger.for_each == {"prefect.resource.id", "focus.method"}


def _prefects_default_heartbeat() -> int:
    """Prefect's heartbeat frequency where nothing sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY (a `focus` command)."""
    from prefect.settings.models.flows import FlowsSettings

    return FlowsSettings.model_fields["heartbeat_frequency"].default


def _pool_heartbeat(template: dict) -> int:
    configuration = template["job_configuration"]
    env = configuration.get("env")
    if not isinstance(env, dict):  # docker: the fixed env is the variable's const
        env = template["variables"]["properties"]["env"]["const"]
    return int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])


def test_every_pool_sends_heartbeats_that_the_zombie_automation_expects():
    from prefect.events.schemas.automations import AutomationCore

    text = (DEPLOYMENTS / "automations.yaml").read_text().replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    automation = AutomationCore.model_validate(_automation(text, "focus-crash-zombie-flow-runs"))
    within = automation.trigger.within.total_seconds()
    heartbeats = {kind: _pool_heartbeat(json.loads(path.read_text())) for kind, path in POOL_TEMPLATES.items()}
    assert set(heartbeats.values()) == {60}, heartbeats
    # a live run is never crashed: `within` leaves room for late beats at every pool's frequency and at Prefect's
    # default (a run outside the pools: a `focus` command, the focus-cpu pool made without a template)
    for frequency in (*heartbeats.values(), _prefects_default_heartbeat()):
        assert within >= frequency + 120, frequency
    docker = json.loads(POOL_TEMPLATES["docker"].read_text())["variables"]["properties"]["env"]
    assert docker["default"] == docker["const"]  # a run cannot change the container's env


def test_the_zombie_automation_crashes_a_flow_run_that_stopped_sending_heartbeats():
    """Prefect's "detect zombie flows": after a heartbeat, any event of that flow run within `within`, else Crashed."""
    from prefect.events.schemas.automations import AutomationCore
    from prefect.server.events.schemas.automations import EventTrigger

    text = (DEPLOYMENTS / "automations.yaml").read_text().replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))
    data = _automation(text, "focus-crash-zombie-flow-runs")
    automation = AutomationCore.model_validate(data)
    trigger = EventTrigger.model_validate(data["trigger"])
    assert trigger.posture == "Proactive" and trigger.threshold == 1
    assert trigger.starts_after("prefect.flow-run.heartbeat") and not trigger.starts_after("prefect.flow-run.Running")
    # a heartbeat, any state (a custom state name too) keeps the run alive; other resources' events do not count
    for event in ("prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed",
                  "prefect.flow-run.Cancelling", "prefect.flow-run.SuccessfullyProcessed"):
        assert trigger.expects(event), event
    assert not trigger.expects("focus.audit.regressed")
    assert trigger.for_each == {"prefect.resource.id"}
    assert data["trigger"]["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED" and action.message
