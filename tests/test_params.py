"""params.yaml is validated when loaded: a wrong value is a one-line error naming its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import run_ferstudy

from ferstudy.cli import main
from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.params import load_params

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _holds(loaded, written, key=""):
    """Every value written in the file is in the loaded dict, unchanged (numbers as numbers)."""
    if isinstance(written, dict):
        assert isinstance(loaded, dict), key
        for k, v in written.items():
            assert k in loaded, f"{key}.{k}"
            _holds(loaded[k], v, f"{key}.{k}")
    elif isinstance(written, float):
        assert loaded == pytest.approx(written), key
    else:
        assert loaded == written, key


def test_committed_params_load_with_their_values():
    typed = load_params(ROOT / "params.yaml")
    params = typed.model_dump()
    _holds(params, COMMITTED)
    assert typed.lr == pytest.approx(1e-4) and typed.data.test_size == 0.2
    for run in typed.runs:  # every run's backbone has its settings
        assert typed.backbone_settings(paths.parse_run_name(run)[0]).input_size >= 32
    for entry in params["backbone"].values():  # defaults filled in
        assert set(entry) == {"input_size", "fraction", "descriptor"}
    for key in ("frozen_bn", "bn_calibration_images", "metric0", "precision", "window"):
        assert key in params


def test_defaults_are_filled_and_keys_without_default_stay_missing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: kaggle\n")
    params = load_params(path)
    assert params.epochs == 20 and params.seeds == [42] and params.window == 5
    assert params.data.max_image_pixels == 40_000_000
    assert params.lr is None
    with pytest.raises(FerError, match="missing parameter 'lr'"):
        params.need("lr")


def test_numeric_string_lr_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: 1e-4\n")  # PyYAML (YAML 1.1) reads this as the string '1e-4'
    assert yaml.safe_load(path.read_text())["lr"] == "1e-4"
    assert load_params(path).lr == pytest.approx(1e-4)


def _set(key: str, value):
    def change(params: dict) -> None:
        *parents, last = key.split(".")
        target = params
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def _drop_entry(params: dict) -> None:
    del params["backbone"]["mobilenet"]
    params["runs"] = ["mobilenet-random"]


def _sizes(params: dict) -> None:
    params["data"].update(test_size=0.6, val_size=0.4)


BAD = {
    "lr abc": (_set("lr", "abc"), "lr: expected a number > 0 (got 'abc')"),
    "lr -1": (_set("lr", -1), "lr: expected a number > 0 (got -1)"),
    "seeds [-5]": (
        _set("seeds", [-5]),
        "seeds: expected a non-empty list of unique integers in 0..4294967295 (got [-5])",
    ),
    "seeds [2**32]": (_set("seeds", [2**32]), "seeds: expected a non-empty list of unique"),
    "seeds []": (_set("seeds", []), "seeds: expected a non-empty list"),
    "seeds duplicated": (_set("seeds", [42, 42]), "seeds: expected a non-empty list of unique"),
    "seeds 42": (_set("seeds", 42), "seeds: expected a non-empty list"),
    "seed (the old key)": (_set("seed", 42), "seed: unknown key"),
    "epochs 0": (_set("epochs", 0), "epochs: expected an integer >= 1 (got 0)"),
    "optimizer adamw": (_set("optimizer", "adamw"), "optimizer: expected one of adam, sgd"),
    "precision fp16": (_set("precision", "fp16"), "precision: expected one of fp32, bf16, auto"),
    "runs foo-bar": (_set("runs", ["onet-bar"]), "runs: expected a non-empty list"),
    "runs foo-random": (_set("runs", ["foo-random"]), "runs: expected a non-empty list"),
    "runs duplicated": (
        _set("runs", ["onet-random", "onet-random"]),
        "runs: expected a non-empty list of unique run names",
    ),
    "fraction 0": (
        _set("backbone.vggface.fraction", 0),
        "backbone.vggface.fraction: expected a number in (0, 1] (got 0)",
    ),
    "fraction 1.5": (
        _set("backbone.vggface.fraction", 1.5),
        "backbone.vggface.fraction: expected a number in (0, 1] (got 1.5)",
    ),
    "sha256 xyz": (_set("data.sha256", "xyz"), "data.sha256: expected null or 64 hexadecimal"),
    "test+val >= 1": (_sizes, "data.test_size + data.val_size: expected a sum < 1"),
    "unknown key": (_set("lrr", 0.001), "lrr: unknown key (allowed: lr, "),
    "missing backbone entry": (_drop_entry, "backbone.mobilenet: missing"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_is_a_one_line_error_naming_the_key(tmp_path, case):
    change, message = BAD[case]
    params = copy.deepcopy(COMMITTED)
    change(params)
    path = _write(tmp_path, params)
    with pytest.raises(FerError) as info:
        load_params(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("frozen_bn", "train"), "frozen_bn: expected one of inference, recalibrated"),
        (_set("bn_calibration_images", 0), "bn_calibration_images: expected an integer >= 1"),
        (_set("metric0", "epoch0"), "metric0: expected one of untrained, epoch1"),
        (_set("backbone.vggface.descriptor", "fc6"), "backbone.vggface.descriptor: expected fc8"),
        (_set("backbone.vggface.input_size", 16), "backbone.vggface.input_size: expected an"),
        (_set("backbone.vgface", {"input_size": 224}), "backbone.vgface: unknown backbone"),
        (_set("backbone.vggface.fration", 0.5), "backbone.vggface.fration: unknown key"),
        (_set("data.test_size", 1.0), "data.test_size: expected a number in (0, 1)"),
        (_set("data.random_state", -1), "data.random_state: expected an integer"),
        (_set("seeds", [True]), "seeds: expected a non-empty list of unique integers"),
        (_set("lr", float("nan")), "lr: expected a number > 0"),
        (_set("inits", ["random"]), "inits: unknown key"),
        (_set("runs", "onet-random"), "runs: expected a non-empty list"),
    ],
)
def test_more_bad_values(tmp_path, change, message):
    params = copy.deepcopy(COMMITTED)
    change(params)
    with pytest.raises(FerError) as info:
        load_params(_write(tmp_path, params))
    assert message in str(info.value)


def test_new_keys_and_fifth_backbone_are_accepted(tmp_path):
    params = copy.deepcopy(COMMITTED)
    params.update(frozen_bn="inference", bn_calibration_images=64, metric0="epoch1")
    params["runs"] = ["vggface-random", "onet-pretrained"]
    params["backbone"]["onet"] = {"input_size": 48}
    params["backbone"]["vggface"]["descriptor"] = "fc7"
    loaded = load_params(_write(tmp_path, params)).model_dump()
    assert loaded["backbone"]["onet"] == {"input_size": 48, "fraction": 1.0, "descriptor": None}
    assert loaded["backbone"]["vggface"]["descriptor"] == "fc7"
    assert (loaded["frozen_bn"], loaded["metric0"]) == ("inference", "epoch1")


def test_several_errors_are_joined_on_one_line(tmp_path):
    params = {**COMMITTED, "lr": "abc", "seeds": [-5]}
    with pytest.raises(FerError) as info:
        load_params(_write(tmp_path, params))
    text = str(info.value)
    assert "lr: expected a number > 0 (got 'abc'); seeds: expected a non-empty list" in text


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    params = {**COMMITTED, "lr": "abc"}
    path = _write(tmp_path, params)
    assert main(["--params", str(path), "metrics"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {path}: lr: expected a number > 0 (got 'abc')\n"
    assert "Traceback" not in captured.out + captured.err


def test_command_line_in_a_fresh_interpreter(tmp_path):
    path = _write(tmp_path, {**COMMITTED, "seeds": [-5]})
    result = run_ferstudy("--params", str(path), "split")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: seeds: expected a non-empty list of unique integers in 0..4294967295 "
        "(got [-5])"
    ]
