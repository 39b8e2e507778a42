"""The specs every flow's parameters are made of: dataset, model, mosaic set, method, randomization, run.

Each is a small frozen pydantic model (``extra="forbid"``): the Prefect UI renders it as a validated
part of a flow's form, tasks receive it instead of tensors, and :func:`spec_key` turns it into the
canonical key the per-process caches use. The flows' own parameter models, which combine these, are
in :mod:`flows.params` (which also re-exports everything here).

Examples
--------
>>> MosaicSetSpec(per_class=2).split, RunSpec().device
('test', 'cpu')
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from flows.worker import confinement
from focus_core.arch_string import canonical_architecture
from focus_core.errors import FocusError
from focus_core.explainers import specs as method_table
from focus_core import layouts
from focus_core.hashing import canonical_json
from focus_core.mosaic_limits import MAX_MOSAICS
from focus_core.sizes import default_resize

__all__ = [
    "DEVICE_PATTERN",
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "STANDARD_METHODS",
    "BUILT_IN_METHODS",
    "LAYOUT_NAMES",
    "Layout",
    "Device",
    "BatchSize",
    "Precision",
    "DatabaseUrl",
    "WeightsLocation",
    "CheckpointFolder",
    "DataFolder",
    "OutputFolder",
    "HiddenDatabaseUrl",
    "without_empty_database_url",
    "RunName",
    "check_name",
    "spec_key",
    "DatasetSpec",
    "effective_dataset",
    "with_effective_dataset",
    "ModelSpec",
    "Checkpoint",
    "MosaicSetSpec",
    "MethodSpec",
    "RandomizationSpec",
    "RunSpec",
    "TrainRunSpec",
    "EvaluationSpecs",
    "nest_run_fields",
]

#: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?|mps)$"
#: A name that becomes part of a file path or a key (a training run's checkpoint folder, an artifact key): letters,
#: digits, '.', '_' and '-', starting with a letter or a digit (so never '..', a hidden file or an option), at most
#: :data:`NAME_MAX_LENGTH` characters. The Prefect UI form and ``focus`` refuse any other name before any work.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_MAX_LENGTH = 100
_NAME = re.compile(NAME_PATTERN)  # used with fullmatch: a trailing newline does not pass
#: The explainer registry's built-in names, in its order, read from its torch-free table
#: (:data:`focus_core.explainers.specs.METHODS`): the help of ``--method`` and the form's description list them.
BUILT_IN_METHODS: tuple[str, ...] = tuple(method_table.METHODS)
#: The paper's three methods plus the random control: what the audit evaluates by default.
STANDARD_METHODS: tuple[str, ...] = ("gradcam", "lrp", "smoothgrad")

#: A mosaic layout: one of :data:`focus_core.layouts.LAYOUTS` (2x2) or :data:`focus_core.layouts.GRID_LAYOUTS`
#: (a JSON-schema enum in the Prefect form); :class:`MosaicSetSpec` checks that it fits the grid.
LAYOUT_NAMES: tuple[str, ...] = layouts.all_names()
Layout = Literal[LAYOUT_NAMES]  # type: ignore[valid-type]


def spec_key(spec: BaseModel) -> str:
    """A stable string key of a spec (canonical JSON), for caches and hashes.

    Examples
    --------
    >>> spec_key(MosaicSetSpec()) == spec_key(MosaicSetSpec(seed=0))
    True
    """
    return canonical_json(spec.model_dump(mode="json"))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Spec):
    """Which images to build mosaics from: the bundled digits or an ImageFolder directory.

    ``mean`` and ``std`` leave the dump (and so :func:`spec_key`, every stored request and a training run's
    config hash) while they are empty: a spec without them is the same JSON as before they existed. The size and
    normalisation a model defines fill the empty fields of an ImageFolder's spec: :func:`effective_dataset`.
    """

    kind: Literal["digits", "image_folder"] = Field(
        "digits", description="'digits' (bundled, 1 channel) or 'image_folder' (one sub-folder per class)."
    )
    root: DataFolder = Field(
        None, description="The ImageFolder directory on the worker (only for kind 'image_folder'); on a worker it "
        "lies in the operator's data roots."
    )
    tile_size: int | None = Field(
        None, ge=4, le=1024, description="Tile side in pixels; empty: 32 for digits, and for an ImageFolder the "
        "model's input size where it defines one (a timm model), else 224."
    )
    resize: int | None = Field(
        None, ge=4, le=2048, description="ImageFolder only: shorter side before the centre crop; empty: 8/7 of the "
        "tile size (the paper's 256 for 224)."
    )
    seed: int = Field(0, ge=0, description="Seed of the stratified train/val/test split.")
    cache_dir: OutputFolder = Field(
        None, description="ImageFolder only: where decoded tiles are cached (empty: no cache); on a worker under "
        "the operator's output root."
    )
    mean: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, min_length=3, max_length=3, description="ImageFolder only: per-channel mean (R, G, B, on the 0..1 "
        "scale) the tiles are normalised with; empty: the model's where it defines one (a timm model), else ImageNet's."
    )
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        None, min_length=3, max_length=3, description="ImageFolder only: per-channel std, set with mean; empty: the "
        "model's where it defines one, else ImageNet's."
    )

    @model_validator(mode="after")
    def _check_kind(self) -> DatasetSpec:
        if self.kind == "image_folder" and not self.root:
            raise ValueError("An 'image_folder' dataset needs root: the path of the ImageFolder directory.")
        if self.kind == "digits" and (self.root or self.resize or self.cache_dir or self.mean or self.std):
            raise ValueError("The bundled digits take no root, resize, cache_dir, mean or std (they are normalised "
                             "with their training split's); set kind to 'image_folder'.")
        if self.resize is not None and self.tile_size is not None and self.resize < self.tile_size:
            raise ValueError(f"resize ({self.resize}) must be at least tile_size ({self.tile_size}).")
        if (self.mean is None) != (self.std is None):
            raise ValueError("Set both mean and std of the dataset (three values each), or neither.")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict):
            for key in ("mean", "std"):
                if data.get(key, None) is None:
                    data.pop(key, None)
        return data


def effective_dataset(dataset: DatasetSpec, model: ModelSpec) -> DatasetSpec:
    """The dataset ``model`` is evaluated (or trained) on: ``dataset`` with the input size and normalisation the
    model's architecture defines filled into its empty fields.

    The one place where a model's data config (:func:`focus_core.models.model_data_config`: a ``timm:`` model's
    ``img_size`` or pretrained input size, and its pretrained mean and std) reaches a dataset; every flow (evaluate,
    randomization, sweep, audit, train) and the command line's checks resolve their request with it before anything
    is loaded or recorded, so the recorded request shows the resolved spec. For an ImageFolder:

    - an empty ``tile_size`` becomes the model's (square) input size; an empty ``resize`` becomes 8/7 of the tile
      size (:func:`focus_core.sizes.default_resize`: the paper's 256/224, timm's ``crop_pct`` 0.875) for every
      architecture, and stays empty where that is 256 (224-pixel tiles: the loader's 256);
    - empty ``mean`` and ``std`` become the model's (instead of ImageNet's); given ones are kept.

    The bundled digits are returned unchanged: they keep their 32-pixel tiles and their training split's statistics
    (a timm model learns them from scratch with those; upsampling the 8x8 images to a pretrained config's 224 would
    cost about 50 times the compute for no detail; set ``img_size`` in the architecture and ``tile_size`` here).
    An architecture that defines nothing (torchvision, ``digits_cnn``, a factory) leaves the spec as it is, so its
    requests, caches and training runs' config hashes are unchanged. Idempotent: a resolved spec resolves to itself.

    Raises
    ------
    FocusError
        For a ``timm:`` architecture when timm is not installed or the name is not a timm model, and when a given
        ``resize`` is below the model's input size (with no ``tile_size`` given).

    Examples
    --------
    >>> folder = DatasetSpec(kind="image_folder", root="data/shapes")
    >>> effective_dataset(folder, ModelSpec(architecture="resnet18")) == folder
    True
    >>> vit = effective_dataset(folder, ModelSpec(architecture="timm:vit_tiny_patch16_224"))  # doctest: +SKIP
    >>> vit.tile_size, vit.resize, vit.mean  # doctest: +SKIP
    (224, 256, [0.5, 0.5, 0.5])
    """
    if dataset.kind != "image_folder":
        return dataset  # the digits keep their own
    if dataset.tile_size is not None and dataset.mean is not None:
        return _with_default_resize(dataset)  # nothing else left to fill (and timm is not imported)
    from focus_core.models import model_data_config

    config = model_data_config(model.architecture, in_channels=3)  # an ImageFolder's tiles are RGB
    update: dict[str, Any] = {}
    size = config.input_size
    if dataset.tile_size is None and size is not None and size[0] == size[1]:
        if dataset.resize is not None and dataset.resize < size[0]:
            raise FocusError(
                f"{model.architecture} takes {size[0]}-pixel tiles but the dataset's resize is {dataset.resize}: pass "
                f"a resize of at least {size[0]}, or a tile_size (--tile-size) of at most {dataset.resize}."
            )
        update["tile_size"] = size[0]
        if dataset.resize is None:
            update["resize"] = default_resize(size[0])
    if dataset.mean is None and config.mean is not None and config.std is not None:
        update.update(mean=list(config.mean), std=list(config.std))
    if not update:
        return _with_default_resize(dataset)
    return _with_default_resize(DatasetSpec.model_validate({**dataset.model_dump(), **update}))


def _with_default_resize(dataset: DatasetSpec) -> DatasetSpec:
    """``dataset`` with an empty ``resize`` filled with 8/7 of its tile size where that is not the loader's 256."""
    if dataset.resize is not None or dataset.tile_size is None or default_resize(dataset.tile_size) == 256:
        return dataset
    return dataset.model_copy(update={"resize": default_resize(dataset.tile_size)})


def with_effective_dataset(params: Any) -> Any:
    """A flow's parameters (with ``model`` and ``dataset``) whose dataset is :func:`effective_dataset`'s."""
    resolved = effective_dataset(params.dataset, params.model)
    return params if resolved is params.dataset else params.model_copy(update={"dataset": resolved})


class ModelSpec(_Spec):
    """Which classifier: an architecture (or a user's ``module:factory``) and its weights (a path or a URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # a refused URL may hold a key

    architecture: str = Field(
        "digits_cnn",
        min_length=1,
        description="digits_cnn, alexnet, vgg16, resnet18, another torchvision name, 'timm:<name>' (e.g. "
        "'timm:vit_tiny_patch16_224(patch_size=8,depth=4,img_size=32)') or 'package.module:factory'; keyword "
        "arguments in parentheses; stored in its canonical form (keywords sorted).",
    )
    weights: WeightsLocation = Field(
        None, description="The weights (a state_dict): a path on the worker or a URL (s3://, gs://, az://, file://) "
        "read with the worker's own credentials; empty: freshly initialised."
    )
    num_classes: int | None = Field(None, ge=2, description="Number of classes; empty: the dataset's.")
    in_channels: int | None = Field(None, ge=1, description="Input channels; empty: the dataset's.")
    gradcam_layer: str | None = Field(
        None, description="Dotted module name for GradCAM when it cannot be inferred (e.g. 'features.11')."
    )
    label: str | None = Field(None, max_length=200, description="A human name for this checkpoint.")

    @field_validator("architecture")
    @classmethod
    def _check_architecture(cls, value: str) -> str:
        """The canonical form (:func:`focus_core.arch_string.canonical_architecture`): one string per model.

        A malformed string raises its ``FocusError`` (a ``ValueError``), whose sentence pydantic reports; so does
        a factory a worker may not build (:func:`flows.worker.confinement.check_architecture`), before any import.
        """
        return confinement.check_architecture(canonical_architecture(value))


def _no_credentials(location: str | None) -> str | None:
    from flows.weights.weight_store import check_no_secret

    return check_no_secret(location)


#: A weights file or folder: a local path or an fsspec URL without credentials in it (they are the worker's); on a
#: worker, in its roots or at a URL it may read (:func:`flows.worker.confinement.check_location`).
WeightsLocation = Annotated[str | None, AfterValidator(_no_credentials), AfterValidator(confinement.check_location)]
#: A folder for weights: a local path or an fsspec URL prefix, likewise without credentials; on a worker, under its
#: output root or at a URL it may write (:func:`flows.worker.confinement.check_output`).
CheckpointFolder = Annotated[str, AfterValidator(_no_credentials), AfterValidator(confinement.check_output)]
#: A folder a flow writes into (tile caches, figures): on a worker, under the operator's output root.
OutputFolder = Annotated[str | None, AfterValidator(confinement.check_output)]
#: A folder a flow reads data from: on a worker, in the operator's data roots (or the output root).
DataFolder = Annotated[str | None, AfterValidator(confinement.check_read_path)]


def _checkpoint_schema() -> dict[str, Any]:
    """ModelSpec's JSON schema with ``weights`` required (a non-empty string): the form of a trained checkpoint."""
    schema = ModelSpec.model_json_schema()
    weights = schema["properties"]["weights"]
    for key in ("anyOf", "default", "type"):
        weights.pop(key, None)
    weights.update(type="string", minLength=1, description="Where the trained weights (a state_dict) are: a path on "
                   "the worker or a URL such as s3://bucket/digits.pt (see `focus checkpoint list`).")
    schema["required"] = sorted({*schema.get("required", []), "weights"})
    schema["title"] = "Checkpoint"
    return schema


#: A :class:`ModelSpec` whose weights the form requires (evaluate, randomization, sweep): in Python it is a plain
#: ModelSpec (the flows' validators say what is missing in one sentence); in the JSON schema, and so in the Prefect
#: UI form and for ``enforce_parameter_schema``, ``weights`` is a required field, so a deployment whose defaults
#: name no weights file asks for one instead of failing on the worker.
Checkpoint = Annotated[ModelSpec, WithJsonSchema(_checkpoint_schema())]


class MosaicSetSpec(_Spec):
    """Which mosaics: a seeded manifest over one held-out split, of ``grid`` x ``grid`` tiles with ``targets`` targets.

    ``grid``, ``targets`` and ``confident`` leave the dump (and so :func:`spec_key` and every stored request)
    while they have their defaults: a 2x2 two-target spec is the same JSON as before grids existed.
    """

    split: Literal["val", "test"] = Field(
        "test", description="Held-out split the tiles come from (never 'train': the model saw those)."
    )
    per_class: int = Field(20, ge=1, le=100_000, description="Mosaics per target class.")
    seed: int = Field(0, ge=0, description="Seed of the manifest: same seed, same mosaics.")
    layout: Layout = Field(
        "random", description="Where the target tiles go: 'random' per mosaic or one fixed arrangement (2x2 with two "
        "targets: top, bottom, left, right, diagonal, antidiagonal; otherwise contiguous or scattered)."
    )
    classes: list[int] | None = Field(None, description="Target classes; empty: every class.")
    grid: int = Field(2, ge=2, le=4, description="Tiles per side of a mosaic: 2 (the paper's), 3 or 4.")
    targets: int = Field(2, ge=1, le=15, description="Target tiles per mosaic, fewer than grid²; chance is targets/grid².")
    confident: float | None = Field(
        None, gt=0, le=1, description="The grid pointing game's protocol: only images the checkpoint classifies "
        "correctly with at least this softmax probability (e.g. 0.99) become tiles; empty: every image."
    )
    probe: dict[str, Any] | None = Field(
        None, description="A probe set: {'kind': 'corner_patch', 'size': 3, 'seed': 0} stamps a bright square in a "
        "corner (seeded per tile, or 'corner': 'tl'|'tr'|'bl'|'br') of every non-target tile; empty: clean mosaics."
    )

    @model_validator(mode="after")
    def _check_grid(self) -> MosaicSetSpec:
        layouts.check(self.layout, self.grid, self.targets)  # FocusError (a ValueError): one sentence
        return self

    @field_validator("probe")
    @classmethod
    def _check_probe(cls, probe: dict[str, Any] | None) -> dict[str, Any] | None:
        from focus_core.probes import CornerPatch  # torch: only a probe set needs it

        return None if probe is None else CornerPatch.parse(probe).to_dict()  # every key given: one identity

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict):
            for key, default in _GRID_DEFAULTS.items():
                if data.get(key, default) == default:
                    data.pop(key, None)
        return data

    def chance_level(self) -> float:
        """What a method that spreads relevance evenly scores: ``targets / grid²`` (0.5 for the paper's mosaics)."""
        return layouts.chance_level(self.grid, self.targets)


#: MosaicSetSpec's fields that are left out of its dump while they have these values.
_GRID_DEFAULTS: dict[str, Any] = {"grid": 2, "targets": 2, "confident": None, "probe": None}


class MethodSpec(_Spec):
    """An attribution method from the explainer registry and its parameters."""

    name: str = Field(
        "gradcam",
        description=f"A registered method: {', '.join(BUILT_IN_METHODS)}.",
        json_schema_extra=lambda schema: _method_enum(schema),
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Method parameters, e.g. {'n_samples': 10} for smoothgrad."
    )

    @model_validator(mode="after")
    def _check_registry(self) -> MethodSpec:
        """An unknown name, or a parameter of the wrong name or kind, is refused from the methods' torch-free table
        (and the registry's names, which include methods registered at run time); the values' ranges are checked
        by building the explainer, which imports it."""
        from focus_core.explainers import registry

        available = registry.available_explainers()
        if self.name not in available:
            hint = method_table.close_match(self.name, available)
            raise ValueError(f"Unknown method {self.name!r}{hint}: use one of {', '.join(available)}.")
        registry.get_explainer(self.name, **self.params)  # names and kinds first, torch-free; then the values
        return self


def _method_enum(schema: dict[str, Any]) -> None:
    """Add the registry's names as an enum (a dropdown in the UI) when the registry is importable."""
    try:
        from focus_core import explainers

        schema["enum"] = list(explainers.available_explainers())
    except ImportError:  # pragma: no cover - the registry is part of the package
        pass


class RandomizationSpec(_Spec):
    """How the evaluated model is altered: not at all, fully, or layers from the top (Adebayo et al.)."""

    kind: Literal["none", "full", "cascading", "independent"] = Field(
        "none", description="Evaluate the checkpoint ('none') or a randomized copy of it: fully random, cascading "
        "from the top layer (with stage), or one layer (with layer)."
    )
    stage: int | None = Field(None, ge=0, description="Cascading: layers [0, stage] of cascading_stages() re-initialised.")
    layer: str | None = Field(None, description="Independent: the one re-initialised layer; cascading: the deepest.")
    seed: int = Field(0, ge=0, description="Seed of the re-initialisation.")

    @model_validator(mode="after")
    def _check(self) -> RandomizationSpec:
        if self.kind == "cascading" and self.stage is None:
            raise ValueError("A cascading randomization needs its stage.")
        if self.kind == "independent" and not self.layer:
            raise ValueError("An independent randomization needs its layer.")
        return self


Device = Annotated[
    str,
    Field(
        pattern=DEVICE_PATTERN,
        description="'cpu', 'cuda', 'cuda:N' or 'mps'. A worker without that device fails at once.",
    ),
]
BatchSize = Annotated[int, Field(ge=1, le=65_536, description="Mosaics per forward/backward pass.")]
Precision = Annotated[
    Literal["fp32", "bf16"],
    Field(
        description="fp32, or bf16: the model and the explainer run under torch.autocast(bfloat16) (faster on "
        "recent GPUs; maps differ slightly from fp32); quadrant sums and Focus are always accumulated in fp32."
    ),
]


def _no_secret(url: str | None) -> str | None:
    """Refuse a store URL that carries a secret: flow parameters are stored and shown by Prefect."""
    from db.engine import has_secret

    if url and has_secret(url):
        raise ValueError(
            "the store's URL carries a password, and flow parameters are visible in the Prefect UI: "
            "leave database_url empty and set FOCUS_DATABASE_URL where the flow runs"
        )
    return url


def check_name(value: str) -> str:
    """Refuse a name that breaks :data:`NAME_PATTERN` with a sentence that says what a name may hold.

    Examples
    --------
    >>> check_name("nightly-2024.06")
    'nightly-2024.06'
    >>> check_name("../../tmp/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The name '../../tmp/x' may hold only letters, digits, '.', '_' and '-' and must start with a ...
    """
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"The name {value!r} may hold only letters, digits, '.', '_' and '-' and must start with a letter or digit."
        )
    return value


#: A name that becomes a path or a key; the schema carries the pattern (the UI form refuses a bad name), the
#: validator the sentence.
RunName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        json_schema_extra={"pattern": NAME_PATTERN},
        description="Letters, digits, '.', '_' and '-', starting with a letter or digit (it names folders and keys).",
    ),
    AfterValidator(check_name),
]
DatabaseUrl = Annotated[
    str | None,
    AfterValidator(_no_secret),
    Field(
        description="SQLAlchemy URL of focus-audit's store (never Prefect's database); empty: the worker's "
        "FOCUS_DATABASE_URL, else sqlite:///focus.db. A URL with a password (user-info, ?password= or "
        "?sslpassword=) is refused: parameters are visible in the UI, so it belongs in FOCUS_DATABASE_URL.",
    ),
]
#: :data:`DatabaseUrl` left out of the JSON schema: code and ``focus`` set it, the Prefect UI form never shows it
#: (a worker's store is its FOCUS_DATABASE_URL), and a deployment's flow run cannot be given one.
HiddenDatabaseUrl = SkipJsonSchema[DatabaseUrl]


def without_empty_database_url(data: Any) -> Any:
    """``data`` (a model's dump) without an empty ``database_url``: a form's default value never carries the field.

    Prefect writes a flow's default ``params`` into the parameter schema as the model's dump; the field is no
    property of that schema, so the dump leaves it out unless it is set (code and ``focus`` set it).
    """
    if isinstance(data, dict) and data.get("database_url", "") is None:
        data = {k: v for k, v in data.items() if k != "database_url"}
    return data


class RunSpec(_Spec):
    """How the work runs: device, batch and chunk sizes, retries, store (shared by the evaluating flows)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused database_url may hold a password

    device: Device = "cpu"
    batch_size: BatchSize = 64
    dtype: Precision = "fp32"
    chunk_size: int = Field(512, ge=1, description="Mosaics per task (the unit of retry and of one transaction).")
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed chunk (errors that cannot succeed are not retried).")
    retry_delay_seconds: float = Field(10.0, ge=0, description="First retry delay; later ones back off exponentially.")
    max_chunks: int | None = Field(
        None, ge=1, description="Run at most this many chunks now; the next identical request runs the rest."
    )
    max_mosaics: int = Field(
        MAX_MOSAICS, ge=1, description="The most mosaics (per class x target classes) one request may ask for: a "
        "larger request is refused before anything is written. Raise it for a deliberately large mosaic set.",
    )
    lease_seconds: float = Field(
        300.0, ge=1, le=86_400,
        description="How long a run's claim on its evaluations and chunks lasts unless renewed (every third of it): "
        "a run that dies is shown as crashed, and its work taken over, this long after it stopped.",
    )
    database_url: HiddenDatabaseUrl = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return without_empty_database_url(handler(self))


class TrainRunSpec(_Spec):
    """How a training run runs: device, retries of an epoch, store (``TrainParams.run``).

    The batch size is no field here: a training run's batch size changes its weights, so it belongs to the
    recipe (``TrainParams.batch_size``, part of the run's key), unlike :class:`RunSpec`'s.
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused database_url may hold a password

    device: Device = "cpu"
    retries: int = Field(1, ge=0, le=10, description="Retries of a failed epoch (it restarts from the last checkpoint).")
    database_url: HiddenDatabaseUrl = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return without_empty_database_url(handler(self))


def nest_run_fields(value: Any, spec: type[BaseModel]) -> Any:
    """A flow's raw parameters with the top-level keys that are fields of ``spec`` moved into ``value["run"]``.

    Reads a flat form (``{"device": "cuda", "epochs": 3}``) as the nested one (``{"run": {"device": "cuda"},
    "epochs": 3}``); a key given both ways keeps its nested value. Anything but a dict is returned as it is.

    Examples
    --------
    >>> nest_run_fields({"device": "cuda", "epochs": 3, "run": {"retries": 0}}, TrainRunSpec)
    {'epochs': 3, 'run': {'device': 'cuda', 'retries': 0}}
    """
    if not isinstance(value, dict):
        return value
    flat = {key: value[key] for key in spec.model_fields if key in value}
    if not flat:
        return value
    run = value.get("run") or {}
    if isinstance(run, BaseModel):
        run = run.model_dump(exclude_unset=True)
    rest = {key: item for key, item in value.items() if key not in flat and key != "run"}
    return {**rest, "run": {**flat, **run}}


class EvaluationSpecs(_Spec):
    """What every chunk of one evaluation shares: its data, mosaic set, checkpoint, randomization and run settings.

    An ``EvaluateParams`` has these fields too; :meth:`flows.tasks.ChunkRequest.of` reads either.
    """

    dataset: DatasetSpec
    mosaics: MosaicSetSpec
    model: ModelSpec
    randomization: RandomizationSpec = RandomizationSpec()
    run: RunSpec = Field(default_factory=RunSpec)
