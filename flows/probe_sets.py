"""The audit's probe mosaic sets: mosaics besides the clean audit set, on which a shortcut shows.

A probe set is the audit's mosaic set with one thing changed (a pydantic spec, light like :mod:`flows.specs`):

- ``patch``: a built-in transformation of the audit images, e.g. ``{"kind": "corner_patch", "size": 3,
  "seed": 0}``: a bright square stamped in a corner of every non-target tile (:mod:`focus_core.probes`); it is
  part of the mosaic set's identity, so the probe set has its own mosaic set and its own evaluations;
- ``dataset``: a data folder the team supplies (e.g. images with a suspected spurious pattern), one sub-folder
  per class of the model;
- ``mosaics``: another mosaic set altogether (its ``probe`` field may carry a patch itself).

The audit compares each probe set per target class exactly as it compares the clean set
(:mod:`flows.audit_classes`), and names the probe in the event it fires.

Examples
--------
>>> probe = ProbeSetSpec(name="corner", patch={"kind": "corner_patch", "size": 3})
>>> probe.mosaic_set(MosaicSetSpec(per_class=10)).probe
{'kind': 'corner_patch', 'size': 3, 'seed': 0, 'corner': 'random'}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.specs import DatasetSpec, MosaicSetSpec

__all__ = ["ProbeSetSpec", "ProbeSets", "CLEAN"]

#: The name the audit gives its clean mosaic set in per-class results and events.
CLEAN = "clean"


class ProbeSetSpec(BaseModel):
    """One probe mosaic set of an audit: a name, and what differs from the audit's data and mosaic set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="Named in the per-class results and in focus.audit.regressed (e.g. 'corner').")
    patch: dict[str, Any] | None = Field(
        None, description="A built-in transformation of the audit's mosaics: {'kind': 'corner_patch', 'size': 3, "
        "'seed': 0} stamps a bright square in a corner of every non-target tile.")
    dataset: DatasetSpec | None = Field(None, description="A data folder the team supplies; empty: the audit's data.")
    mosaics: MosaicSetSpec | None = Field(None, description="Another mosaic set; empty: the audit's (with patch).")

    @model_validator(mode="after")
    def _check(self) -> ProbeSetSpec:
        if self.name == CLEAN:
            raise ValueError(f"The probe name {CLEAN!r} names the audit's clean mosaic set: choose another name.")
        if self.patch is None and self.dataset is None and self.mosaics is None:
            raise ValueError(f"Probe {self.name!r} changes nothing: give it a patch, a dataset or mosaics.")
        return self

    @field_validator("patch")
    @classmethod
    def _check_patch(cls, patch: dict[str, Any] | None) -> dict[str, Any] | None:
        from focus_core.probes import CornerPatch  # torch: only a patch needs it

        return None if patch is None else CornerPatch.parse(patch).to_dict()  # FocusError: one sentence

    def mosaic_set(self, audit_mosaics: MosaicSetSpec) -> MosaicSetSpec:
        """The probe's mosaic set: its own, or the audit's, with ``patch`` stamped when given."""
        base = self.mosaics or audit_mosaics
        if self.patch is None:
            return base
        return MosaicSetSpec.model_validate({**base.model_dump(), "probe": self.patch})

    def data(self, audit_dataset: DatasetSpec) -> DatasetSpec:
        """The probe's data: its own folder, or the audit's."""
        return self.dataset or audit_dataset


def _unique_names(probes: list[ProbeSetSpec]) -> list[ProbeSetSpec]:
    names = [p.name for p in probes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Probe name(s) {repeated} are given more than once: give each probe set its own name.")
    return probes


#: An audit's probe sets: each name once (the name is what an event names).
ProbeSets = Annotated[list[ProbeSetSpec], AfterValidator(_unique_names)]
