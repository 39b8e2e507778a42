"""The parameters of every flow, as pydantic models: the Prefect UI renders them as a validated form.

Each flow takes one argument, ``params``, typed with one of the ``*Params`` models below, made of
the specs in :mod:`flows.specs` (re-exported here, so ``from flows.params import ModelSpec`` works). The
constraints live in two places, and both reject a bad value before any work starts:

- JSON-schema constraints (``Literal`` enums, ``ge``/``le`` bounds, ``pattern``): a deployment
  with ``enforce_parameter_schema`` (Prefect's default) refuses a flow run whose parameters break
  them, so the UI form and ``run_deployment`` fail at once, on the server.
- Python validators (an unknown explainer parameter, an ImageFolder spec without a root, ...):
  Prefect validates the parameters when the flow run starts, before the flow's first line.

Whether the requested device exists is checked by the flow itself, on the worker
(:func:`flows.worker.devices.require_device`), because the machine that fills in the form is not the
one that runs it.

Examples
--------
>>> p = EvaluateParams(model={"architecture": "digits_cnn", "weights": "w.pt"}, methods=[{"name": "gradcam"}])
>>> p.mosaics.split, p.run.device
('test', 'cpu')
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.specs import (
    DEVICE_PATTERN,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    STANDARD_METHODS,
    Checkpoint,
    CheckpointFolder,
    HiddenDatabaseUrl,
    DatasetSpec,
    EvaluationSpecs,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    OutputFolder,
    Precision,
    RandomizationSpec,
    RunName,
    RunSpec,
    TrainRunSpec,
    check_name,
    nest_run_fields,
    spec_key,
)
from flows.probe_sets import ProbeSets
from focus_core.hashing import canonical_hash

__all__ = [
    "DEVICE_PATTERN",
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "RunName",
    "check_name",
    "STANDARD_METHODS",
    "DatasetSpec",
    "ModelSpec",
    "MosaicSetSpec",
    "MethodSpec",
    "RandomizationSpec",
    "EvaluationSpecs",
    "RunSpec",
    "TrainRunSpec",
    "Precision",
    "EvaluateParams",
    "RandomizationParams",
    "TrainParams",
    "AuditParams",
    "AuditRunSpec",
    "SweepParams",
    "spec_key",
]

class _FlowParams(BaseModel):
    # errors name the field and what is wrong, never the value: a refused database_url may hold a password
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class EvaluateParams(_FlowParams):
    """Evaluate attribution methods on one checkpoint with the Focus metric."""

    model: Checkpoint = Field(description="The checkpoint to explain (weights required).")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="Where the tiles come from.")
    mosaics: MosaicSetSpec = Field(default_factory=MosaicSetSpec, description="The seeded mosaic set.")
    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec(name="gradcam")], min_length=1, description="Methods to evaluate."
    )
    randomization: RandomizationSpec = Field(
        default_factory=RandomizationSpec, description="Evaluate a randomized copy of the checkpoint instead."
    )
    run: RunSpec = Field(default_factory=RunSpec, description="Device, batch size, chunking, retries, store.")
    figures_dir: OutputFolder = Field(None, description="Where the summary figures are written; empty: none.")
    model_reliance: bool = Field(
        False, description="Also measure the model's reliance on each tile (N² + 1 forward passes per mosaic, once "
        "per checkpoint and mosaic set) and store model Focus and the explainer gap beside Focus; off by default: it "
        "costs more than a quarter of a GradCAM evaluation (benchmarks/README.md)."
    )
    reliance_baseline: Literal["mean", "blur"] = Field(
        "mean", description="What the reliance pass replaces a tile by: the dataset mean (zeros after normalising) or "
        "the tile blurred; part of the pass's identity (docs/reliance.md)."
    )
    disconnected: bool = Field(
        False, description="Explain the disconnected model: each tile passes through the feature extractor on its own "
        "and the tile maps are laid out as the mosaic's before the head (GradCAM on that laid-out map unless a layer "
        "is named). Digits CNN, torchvision ResNets and VGGs; a separate evaluation (and reliance pass) from the "
        "connected one."
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluateParams:
        if not self.model.weights:
            raise ValueError("Evaluating needs the checkpoint's weights file: set model.weights (train one with `focus train`).")
        names = [spec_key(m) for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError("The same method and parameters are listed twice in methods.")
        return self


class RandomizationParams(_FlowParams):
    """The sanity check: Focus of a checkpoint, of its fully random copy and of cascading randomization."""

    model: Checkpoint = Field(description="The trained checkpoint (weights required).")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    mosaics: MosaicSetSpec = Field(default_factory=MosaicSetSpec)
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="gradcam")], min_length=1)
    kinds: list[Literal["full", "cascading", "independent"]] = Field(
        default_factory=lambda: ["full", "cascading"], min_length=1, description="Randomizations to run."
    )
    max_stages: int | None = Field(
        None, ge=1, description="Cascading/independent: only the first N layers from the top; empty: all."
    )
    seed: int = Field(0, ge=0, description="Seed of the re-initialisations (when seeds is empty).")
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Several seeds, each its own evaluation (its own random models): the "
        "report judges 'a random model scores about 0.5' on their mean; empty: the one seed above."
    )
    run: RunSpec = Field(default_factory=RunSpec)
    figures_dir: OutputFolder = Field(None, description="Where the cascading-randomization figure is written; empty: none.")

    @model_validator(mode="after")
    def _check(self) -> RandomizationParams:
        if not self.model.weights:
            raise ValueError("Randomization needs the trained checkpoint's weights file: set model.weights.")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"The seeds {self.seeds} repeat a seed: list each seed once.")
        return self

    def seed_list(self) -> list[int]:
        """The seeds to run: ``seeds``, else ``[seed]``."""
        return list(self.seeds) if self.seeds else [self.seed]


class TrainParams(_FlowParams):
    """Train a classifier with the paper's recipe, recording Focus every epoch."""

    name: RunName = Field("digits", description="Name of the training run: letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit (it names the run's checkpoint folder).")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture (weights: optional start).")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    epochs: int = Field(10, ge=1, le=10_000, description="Number of epochs.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per optimisation step (part of the recipe: "
                            "Focus after each epoch is measured in batches of the same size).")
    lr: float | None = Field(None, gt=0, le=10, description="AMSGrad learning rate; empty: 3e-3 for digits, 1e-3 else.")
    rotation: float | None = Field(
        None, ge=0, le=180, description="Maximum rotation in degrees; empty: 15 for digits, the paper's 30 else."
    )
    crop_padding: int | None = Field(
        None, ge=0, description="Random-crop padding in pixels; empty: 2 for digits, 1/8 of the tile else."
    )
    hflip: bool | None = Field(
        None, description="Random horizontal flips; empty: off for digits (a mirrored digit is another digit), on else."
    )
    cutmix: float = Field(
        0.0, ge=0, le=100, description="CutMix's Beta alpha (1.0 in the DeiT/timm ViT recipe: a box of another "
        "image pasted in, the label mixed by area); 0: off."
    )
    seed: int = Field(0, ge=0, description="Seed of the initialisation, augmentation and batch order.")
    focus_mosaics: MosaicSetSpec = Field(
        default_factory=lambda: MosaicSetSpec(split="val", per_class=10),
        description="The fixed validation mosaic set Focus is measured on after every epoch.",
    )
    focus_methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="gradcam")], min_length=1)
    checkpoint_dir: CheckpointFolder = Field(
        "checkpoints", description="Where per-epoch checkpoints (weights, model + optimizer) go: a folder on the "
        "worker or a URL (s3://bucket/prefix, gs://, az://, file://) written with the worker's own credentials."
    )
    run: TrainRunSpec = Field(default_factory=TrainRunSpec, description="Device, retries of an epoch, store.")
    audit: bool = Field(False, description="Mark the final checkpoint (with a lineage: the lineage) for the nightly "
                        "audit.")
    lineage: RunName | None = Field(
        None, description="Register every epoch's checkpoint into this lineage, in epoch order (created when new)."
    )
    figures_dir: OutputFolder = Field(None, description="Where the training-curve figures are written; empty: none.")

    @model_validator(mode="before")
    @classmethod
    def _flat_run(cls, value: Any) -> Any:
        """The flat form (``device``, ``database_url``, ``retries`` beside ``epochs``) is read into ``run``."""
        return nest_run_fields(value, TrainRunSpec)

    @field_validator("focus_mosaics", mode="before")
    @classmethod
    def _validation_defaults(cls, value: Any) -> Any:
        """A ``focus_mosaics`` that names no split (``focus train --grid 3``) starts from the default set: 'val',
        10 per class."""
        if isinstance(value, dict) and "split" not in value:
            value = {"split": "val", "per_class": 10, **value}
        return value

    @field_validator("focus_mosaics")
    @classmethod
    def _validation_split(cls, value: MosaicSetSpec) -> MosaicSetSpec:
        if value.split != "val":
            raise ValueError("Focus during training is measured on the 'val' split; keep 'test' for the final evaluation.")
        if value.confident is not None:
            raise ValueError(
                "Focus during training is measured on one fixed mosaic set, and a confident set would change with "
                "every epoch's weights: leave confident out of focus_mosaics (use it with focus evaluate)."
            )
        return value

    def recipe(self) -> dict[str, Any]:
        """The training hyper-parameters: the given ones over focus_core's recipe, at a constant learning rate.

        The defaults come from :meth:`focus_core.train.TrainConfig.digits` for the bundled digits and from the
        paper's :class:`~focus_core.train.TrainConfig` else. The learning-rate schedule is the one difference
        from ``TrainConfig.digits`` (cosine decay over all epochs): a run is keyed without ``epochs``
        (:meth:`config_hash`), so that asking for more epochs continues it, and a cosine rate at epoch ``e``
        depends on how many epochs follow; a constant rate gives epoch ``e`` the same weights whatever the total.
        ``lr_schedule`` is not in the dict (``TrainConfig``'s default, ``"constant"``, applies) and ``cutmix`` is
        in it only when on, so every run keeps the key and the stored recipe it was recorded with.
        """
        from focus_core.train import TrainConfig  # torch: loaded where a run is trained or keyed, not for a form

        base = TrainConfig.digits() if self.dataset.kind == "digits" else TrainConfig()
        cutmix = {"cutmix": self.cutmix} if self.cutmix > 0 else {}
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr if self.lr is not None else base.lr,
            "rotation": self.rotation if self.rotation is not None else base.rotation,
            "crop_padding": self.crop_padding if self.crop_padding is not None else base.crop_padding,
            "hflip": self.hflip if self.hflip is not None else base.hflip,
            **cutmix,
            "seed": self.seed,
        }

    def focus_specs(self, model: ModelSpec) -> EvaluationSpecs:
        """The specs of an epoch's Focus evaluation of ``model`` (that epoch's checkpoint): the fixed validation
        mosaic set, explained on the run's device and store in batches of the training batch size."""
        run = RunSpec(device=self.run.device, batch_size=self.batch_size, database_url=self.run.database_url)
        return EvaluationSpecs(dataset=self.dataset, mosaics=self.focus_mosaics, model=model, run=run)

    def config_hash(self) -> str:
        """sha256 of everything that determines the weights of each epoch (the training run's natural key).

        ``epochs`` is left out: asking for more epochs of the same run continues it. The JSON keeps
        ``json.dumps``' default separators (``compact=False``), as the first training runs were keyed.
        """
        recipe = {k: v for k, v in self.recipe().items() if k != "epochs"}
        config = {"name": self.name, "model": self.model.model_dump(mode="json"),
                  "dataset": self.dataset.model_dump(mode="json"), **recipe}
        return canonical_hash(config, compact=False)


class AuditRunSpec(RunSpec):
    """:class:`RunSpec` without the store on the form: the audit writes to the worker's ``FOCUS_DATABASE_URL``.

    ``database_url`` stays a field for ``focus audit --database-url`` and notebooks (a URL without a
    password), but is not in the JSON schema, so the deployment's form neither shows nor accepts it.
    """

    database_url: HiddenDatabaseUrl = None

    def as_run_spec(self) -> RunSpec:
        """The same settings as a plain :class:`RunSpec`, for the evaluations the audit runs."""
        return RunSpec(**self.model_dump())


class AuditParams(_FlowParams):
    """The nightly audit: the newest checkpoint of every lineage marked for auditing, and marked checkpoints.

    Neither the store's URL nor the audit run's id is a form field: the worker's ``FOCUS_DATABASE_URL`` names
    the store, and the audit opens its own run.
    """

    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec(name=m) for m in STANDARD_METHODS], min_length=1
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="The audit data.")
    mosaics: MosaicSetSpec = Field(default_factory=MosaicSetSpec, description="The audit mosaic set.")
    threshold: float = Field(
        0.05, gt=0, le=1, description="Emit focus.audit.regressed when median Focus falls by more than this."
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of the paired test: a fall only alerts when significant."
    )
    alert_on: list[Literal["previous", "reference"]] = Field(
        default_factory=lambda: ["previous", "reference"], min_length=1,
        description="Which comparisons emit focus.audit.regressed: 'previous' (the previous audit or audited version) "
        "and 'reference' (the lineage's pinned or first audited version; a checkpoint's first audit).",
    )
    lineages: list[str] | None = Field(
        None, description="Names of the lineages to audit (marked or not); empty: every lineage marked for auditing "
        "(and, unless checkpoints are named, every marked checkpoint outside a lineage)."
    )
    checkpoints: list[str] | None = Field(
        None, description="sha256 of the checkpoints outside a lineage to audit; empty: every one marked for auditing "
        "(none when lineages are named)."
    )
    follow_alias: str = Field(
        "", max_length=255, pattern=r"^[A-Za-z0-9_-]*$",
        description="An MLflow Model Registry alias, e.g. 'champion': each run first registers the version it points "
        "at now into every audited lineage that comes from the registry (MLFLOW_TRACKING_URI on the worker); "
        "empty: follow none.",
    )
    name: RunName | None = Field(None, description="Name of the audit run (e.g. 'nightly'): letters, digits, '.', "
                                 "'_' and '-', starting with a letter or digit.")
    probes: ProbeSets = Field(
        default_factory=list, max_length=16, description="Probe mosaic sets besides the clean one, compared per "
        "target class like it (flows.audit_classes): e.g. [{'name': 'corner', 'patch': {'kind': 'corner_patch', "
        "'size': 3}}].")
    run: AuditRunSpec = Field(default_factory=AuditRunSpec)


class SweepParams(_FlowParams):
    """The paper's grid: checkpoints x methods, one evaluate run per cell."""

    checkpoints: list[Checkpoint] = Field(min_length=1, description="The checkpoints (weights required).")
    methods: list[MethodSpec] = Field(min_length=1)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    mosaics: MosaicSetSpec = Field(default_factory=MosaicSetSpec)
    run: RunSpec = Field(default_factory=RunSpec)
    deployment: str | None = Field(
        None,
        pattern=r"^[^/]+/[^/]+$",
        description="'evaluate/<deployment>' to fan the cells out onto the work pool; empty: run them here.",
    )
    timeout_seconds: float | None = Field(None, gt=0, description="Give up waiting for a cell after this long.")

    @model_validator(mode="after")
    def _check(self) -> SweepParams:
        missing = [i for i, c in enumerate(self.checkpoints) if not c.weights]
        if missing:
            raise ValueError(f"Every checkpoint of a sweep needs its weights file; checkpoints {missing} have none.")
        return self
