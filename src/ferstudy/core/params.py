"""Reading ``params.yaml`` into one typed :class:`Params`, validated once at the boundary.

:func:`load_params` validates every value against the schema below (pydantic models, extra
keys forbidden, frozen) and returns the :class:`Params` every stage takes; the defaults live
here and nowhere else. A bad value is a
one-line :class:`FerError` naming the dotted key and what it accepts, for example
``params.yaml: lr: expected a number > 0 (got 'abc')``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ferstudy.core.errors import FerError
from ferstudy.core.paths import finetune_run
from ferstudy.models.specs import INITS, SPECS

PARAMS_FILE = "params.yaml"

BACKBONE_NAMES: tuple[str, ...] = tuple(SPECS)
#: Backbones without a random initialisation, and why (their spec's ``inits``).
PRETRAINED_ONLY: dict[str, str] = {
    s.name: f"{s.name} has no random initialisation"
    for s in SPECS.values()
    if "random" not in s.inits
}
#: Backbones that cannot be fine-tuned, and why (their spec's ``frozen_only``).
FROZEN_ONLY: dict[str, str] = {s.name: s.frozen_only_note for s in SPECS.values() if s.frozen_only}
UINT32_MAX = 2**32 - 1

# --------------------------------------------------------------------------- the schema


def _no_bool(value: Any) -> Any:
    """YAML ``yes``/``true`` would pass as 1 for a number: refuse booleans outright."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("duplicate values")
    return values


def _run_names(values: list[str]) -> list[str]:
    for value in values:
        backbone, sep, init = value.rpartition("-")
        if not sep or backbone not in BACKBONE_NAMES or init not in INITS:
            raise ValueError(f"not a run name: {value!r}")
        if backbone in PRETRAINED_ONLY and init != "pretrained":  # dlib
            raise PydanticCustomError(
                "params",
                "runs: {run}: {why}; use {backbone}-pretrained",
                {"run": value, "why": PRETRAINED_ONLY[backbone], "backbone": backbone},
            )
    return _unique(values)


Int = Annotated[int, BeforeValidator(_no_bool)]
# numeric strings such as "1e-4" (how PyYAML reads YAML 1.2's 1e-4) are accepted as floats
Float = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
BackboneName = Literal[BACKBONE_NAMES]  # type: ignore[valid-type]
RunNames = Annotated[list[str], AfterValidator(_run_names)]


def _one_of(values: tuple[str, ...]) -> str:
    return "one of " + ", ".join(values)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Section:
    """``_Section[Model]``: a nested section of ``params.yaml``, described by its keys."""

    def __class_getitem__(cls, model: type[BaseModel]) -> Any:
        keys = ", ".join(model.model_fields)
        return Annotated[model, Field(description=f"a mapping of {keys}")]


class BackboneSettings(_Strict):
    """One entry of ``backbone:``."""

    input_size: Annotated[Int, Field(ge=32, description="an integer >= 32")]
    fraction: Annotated[Float, Field(gt=0, le=1, description="a number in (0, 1]")] = 1.0
    descriptor: Annotated[Literal["fc8", "fc7"] | None, Field(description="fc8, fc7 or null")] = (
        None
    )


class DataParams(_Strict):
    """The ``data:`` section."""

    source: Annotated[
        str, Field(description="a string: kaggle, a local zip/folder/CSV path or an https URL")
    ] = "kaggle"
    kaggle_dataset: Annotated[str, Field(description="a string (a Kaggle handle owner/name)")] = (
        "msambare/fer2013"
    )
    sha256: Annotated[
        str | None,
        Field(pattern=r"^[0-9a-fA-F]{64}$", description="null or 64 hexadecimal characters"),
    ] = None
    split: Annotated[
        Literal["stratified", "usage"], Field(description=_one_of(("stratified", "usage")))
    ] = "stratified"
    test_size: Annotated[Float, Field(gt=0, lt=1, description="a number in (0, 1)")] = 0.2
    val_size: Annotated[Float, Field(gt=0, lt=1, description="a number in (0, 1)")] = 0.1
    random_state: Annotated[
        Int, Field(ge=0, le=UINT32_MAX, description=f"an integer in 0..{UINT32_MAX}")
    ] = 42
    max_unpacked_bytes: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 2 * 1024**3
    max_image_pixels: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 40_000_000

    @model_validator(mode="after")
    def _sizes_leave_a_train_set(self) -> DataParams:
        if self.test_size + self.val_size >= 1:
            raise PydanticCustomError(
                "params",
                "data.test_size + data.val_size: expected a sum < 1 (got {test} + {val})",
                {"test": self.test_size, "val": self.val_size},
            )
        return self


class HeadsParams(_Strict):
    """The ``heads:`` section: scikit-learn classifiers on cached features."""

    runs: Annotated[
        RunNames, Field(description="a list of run names, each also in runs (empty: no heads)")
    ] = []
    kinds: Annotated[
        list[Literal["logistic", "linear_svm"]],
        Field(min_length=1, description="a non-empty list among logistic, linear_svm"),
        AfterValidator(_unique),
    ] = ["logistic", "linear_svm"]
    C: Annotated[
        list[Annotated[Float, Field(gt=0)]],
        Field(min_length=1, description="a non-empty list of numbers > 0"),
    ] = [1.0]
    class_weight: Annotated[
        Literal["balanced", "none"], Field(description=_one_of(("balanced", "none")))
    ] = "balanced"
    max_iter: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 1000
    flip: Annotated[bool, Field(description="true or false")] = False


class AugmentParams(_Strict):
    """``finetune.augment``: on-the-fly augmentation of training images (0 turns one off)."""

    flip: Annotated[bool, Field(description="true or false")] = True
    shift: Annotated[Float, Field(ge=0, lt=0.5, description="a number in [0, 0.5)")] = 0.1
    rotation: Annotated[Float, Field(ge=0, le=180, description="degrees in [0, 180]")] = 10.0
    scale: Annotated[Float, Field(ge=0, lt=1, description="a number in [0, 1)")] = 0.1


class FinetuneParams(_Strict):
    """The ``finetune:`` section: whole backbones trained end to end on augmented images."""

    runs: Annotated[
        RunNames, Field(description="a list of run names <backbone>-<init> (empty: no fine-tuning)")
    ] = []
    split: Annotated[
        Literal["usage", "stratified"], Field(description=_one_of(("usage", "stratified")))
    ] = "usage"
    input_size: Annotated[
        dict[BackboneName, Annotated[Int, Field(ge=27)]],
        Field(description="a mapping of backbone name to an input size >= 27"),
    ] = {"onet": 48, "mobilenet": 96, "openface": 96}
    epochs: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 60
    batch_size: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 64
    lr: Annotated[Float, Field(gt=0, description="a number > 0")] = 1e-3
    warmup_epochs: Annotated[Int, Field(ge=0, description="an integer >= 0")] = 1
    patience: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 10
    dropout: Annotated[Float, Field(ge=0, lt=1, description="a number in [0, 1)")] = 0.3
    class_weight: Annotated[
        Literal["balanced", "none"], Field(description=_one_of(("balanced", "none")))
    ] = "none"
    augment: _Section[AugmentParams] = AugmentParams()

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> FinetuneParams:
        if self.warmup_epochs >= self.epochs:
            raise PydanticCustomError(
                "params",
                "finetune.warmup_epochs: expected fewer than finetune.epochs ({w} >= {e})",
                {"w": self.warmup_epochs, "e": self.epochs},
            )
        for run in self.runs:
            backbone = run.rpartition("-")[0]
            if backbone in FROZEN_ONLY:
                raise PydanticCustomError(
                    "params",
                    "finetune.runs: {run}: {why}",
                    {"run": run, "why": FROZEN_ONLY[backbone]},
                )
            if backbone not in self.input_size:
                raise PydanticCustomError(
                    "params",
                    "finetune.input_size.{b}: missing (the input size {run} trains at)",
                    {"b": backbone, "run": run},
                )
        return self


class ExportParams(_Strict):
    """The ``export:`` section: the model that ships inside the package."""

    runs: Annotated[
        RunNames,
        Field(
            max_length=1,
            description="a list of at most one run of finetune.runs, whose seeds are the "
            "candidates (empty: no export)",
        ),
    ] = []


class Params(_Strict):
    """The whole of ``params.yaml``.

    ``lr``, ``runs`` and ``backbone`` have no default: a stage that needs one of them and
    does not find it says so (:func:`require`), so that a partial file (one stage's keys)
    still loads. Every other key gets the default the stages have always used.
    """

    lr: Annotated[Float, Field(gt=0, description="a number > 0")] = None  # type: ignore[assignment]
    epochs: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 20
    batch_size: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 64
    optimizer: Annotated[
        Literal["adam", "sgd", "rmsprop"], Field(description=_one_of(("adam", "sgd", "rmsprop")))
    ] = "adam"
    seeds: Annotated[
        list[Annotated[Int, Field(ge=0, le=UINT32_MAX)]],
        Field(
            min_length=1,
            description=f"a non-empty list of unique integers in 0..{UINT32_MAX}",
        ),
        AfterValidator(_unique),
    ] = [42]
    trainable_layers: Annotated[Int, Field(ge=0, description="an integer >= 0")] = 4
    window: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 5
    runs: Annotated[
        list[str],
        Field(
            min_length=1,
            description="a non-empty list of unique run names <backbone>-<init> (backbone among "
            + ", ".join(BACKBONE_NAMES)
            + "; init pretrained or random)",
        ),
        AfterValidator(_run_names),
    ] = None  # type: ignore[assignment]
    precision: Annotated[
        Literal["fp32", "bf16", "auto"], Field(description=_one_of(("fp32", "bf16", "auto")))
    ] = "fp32"
    features_batch_size: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 64
    frozen_bn: Annotated[
        Literal["inference", "recalibrated"],
        Field(description=_one_of(("inference", "recalibrated"))),
    ] = "recalibrated"
    bn_calibration_images: Annotated[Int, Field(ge=1, description="an integer >= 1")] = 1024
    metric0: Annotated[
        Literal["untrained", "epoch1"], Field(description=_one_of(("untrained", "epoch1")))
    ] = "untrained"
    backbone: Annotated[
        dict[BackboneName, BackboneSettings],
        Field(description="a mapping of backbone name to {input_size, fraction, descriptor}"),
    ] = None  # type: ignore[assignment]
    data: _Section[DataParams] = DataParams()
    heads: _Section[HeadsParams] = HeadsParams()
    finetune: _Section[FinetuneParams] = FinetuneParams()
    export: _Section[ExportParams] = ExportParams()

    @model_validator(mode="after")
    def _settings_for_each_backbone(self) -> Params:
        for name in [r.rpartition("-")[0] for r in self.runs or []]:
            if name not in (self.backbone or {}):
                raise PydanticCustomError(
                    "params",
                    "backbone.{name}: missing; expected an entry with input_size (and "
                    "fraction) for every backbone listed in runs",
                    {"name": name},
                )
        return self

    @model_validator(mode="after")
    def _runs_named_where_they_exist(self) -> Params:
        """Heads need runs of the matrix; an export needs a fine-tuned run."""
        checks = [
            ("heads.runs", self.heads.runs, "runs", self.runs),
            ("export.runs", self.export.runs, "finetune.runs", self.finetune.runs),
        ]
        why = {
            "heads.runs": "a head needs the run's features; set heads.runs with runs, e.g. "
            "-S 'heads.runs=[...]'",
            "export.runs": "the shipped model is chosen among the seeds of a fine-tuned run; "
            "set both, or export.runs=[]",
        }
        for key, names, parent, allowed in checks:
            for name in names if allowed is not None else []:
                if name not in allowed:
                    raise PydanticCustomError(
                        "params",
                        "{key}: {run} is not in {parent} ({why})",
                        {"key": key, "run": name, "parent": parent, "why": why[key]},
                    )
        return self

    def need(self, key: str) -> Any:
        """A top-level value without a default (``lr``, ``runs``, ``backbone``); a one-line
        error when the file leaves it out."""
        value = getattr(self, key)
        if value is None:
            raise FerError(f"{PARAMS_FILE}: missing parameter '{key}'")
        return value

    def backbone_settings(self, name: str) -> BackboneSettings:
        """The ``backbone.<name>`` entry (input size, fraction, descriptor)."""
        settings = self.need("backbone").get(name)
        if settings is None:
            raise FerError(f"{PARAMS_FILE}: missing parameter 'backbone.{name}'")
        return settings

    @property
    def all_runs(self) -> list[str]:
        """The study's runs, then the fine-tuned ones (``finetune.runs`` with their suffix)."""
        return list(self.need("runs")) + [finetune_run(run) for run in self.finetune.runs]


def _expectations() -> dict[str, str]:
    """Dotted key (``backbone.*`` for any backbone name) -> what it accepts."""
    table = {name: f.description for name, f in Params.model_fields.items()}
    table["backbone.*"] = "a mapping of " + ", ".join(BackboneSettings.model_fields)
    for section, model in (
        ("backbone.*", BackboneSettings),
        ("data", DataParams),
        ("heads", HeadsParams),
        ("finetune", FinetuneParams),
        ("finetune.augment", AugmentParams),
        ("export", ExportParams),
    ):
        for name, f in model.model_fields.items():
            table[f"{section}.{name}"] = f.description
    return table


_EXPECTED = _expectations()
_KEYS_AT = {
    "": list(Params.model_fields),
    "backbone.*": list(BackboneSettings.model_fields),
    "data": list(DataParams.model_fields),
    "heads": list(HeadsParams.model_fields),
    "finetune": list(FinetuneParams.model_fields),
    "finetune.augment": list(AugmentParams.model_fields),
    "export": list(ExportParams.model_fields),
}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """One pydantic error as ``<dotted key>: expected <what it accepts> (got <value>)``."""
    if error["type"] == "params":  # our own cross-field checks carry their whole message
        return error["msg"]
    unknown = error["type"] in ("extra_forbidden", "invalid_key")  # a key not in the schema
    keys: list[str] = []  # the dotted key, e.g. ["backbone", "vggface", "fraction"]
    pattern: list[str] = []  # the same with "*" for a backbone name
    value: Any = raw
    for part in error["loc"]:
        if part == "[key]":  # a key of the backbone mapping that is no backbone name
            return (
                f"{'.'.join(keys)}: unknown backbone; expected a name among "
                f"{', '.join(BACKBONE_NAMES)}"
            )
        candidate = [*pattern, "*" if pattern == ["backbone"] else str(part)]
        if not unknown and (not isinstance(part, str) or ".".join(candidate) not in _EXPECTED):
            break  # a list index or pydantic's union tag: the field itself is the key to name
        keys.append(str(part))
        pattern = candidate
        value = value.get(part) if isinstance(value, dict) else None
    dotted = ".".join(keys)
    if unknown:
        allowed = _KEYS_AT.get(".".join(pattern[:-1]), [])
        return f"{dotted}: unknown key (allowed: {', '.join(allowed)})"
    expected = _EXPECTED.get(".".join(pattern), "")
    if not expected:  # not a place the schema describes: pydantic's own words
        return f"{dotted or '(top level)'}: {error['msg']}"
    if error["type"] == "missing":
        return f"{dotted}: missing; expected {expected}"
    return f"{dotted}: expected {expected} (got {_short(value)})"


def validate_params(raw: dict[str, Any], where: str = PARAMS_FILE) -> Params:
    """Check a parameter mapping against the schema: the typed :class:`Params`."""
    try:
        model = Params.model_validate(raw)
    except ValidationError as err:
        messages = dict.fromkeys(_describe(e, raw) for e in err.errors())  # in order, once each
        raise FerError(f"{where}: " + "; ".join(messages)) from None
    return model


def load_params(path: str | os.PathLike = PARAMS_FILE) -> Params:
    """Load and validate the parameter file (one-line error when missing, malformed or wrong)."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FerError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as err:
        raise FerError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(params, dict):
        raise FerError(f"{path}: expected a mapping of parameters")
    return validate_params(params, str(path))
