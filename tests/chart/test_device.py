"""Where the engine computes: every model of the engine's models.toml gets a `device`, the
GPU profile's ("cuda" on GPU node groups, with the `-cuda` image; "cpu" on the cpu
profile) unless the model names its own, and `gpuMemoryUtilization` becomes
`gpu_memory_utilization`. The gateway loads no weights and gets neither."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from chartlib import CASES, chart, config_text, container, engine, render, render_files

MODEL = {"id": "m", "hf": "org/repo"}
GPU_PROFILES = sorted(n for n, p in chart().values["gpuProfiles"].items() if p["gpus"] > 0)


def engine_models(values: dict[str, Any]) -> list[dict[str, Any]]:
    return tomllib.loads(config_text(render(values), "engine"))["model"]


def profile_of(values: dict[str, Any]) -> dict[str, Any]:
    name = (values.get("engine") or {}).get("gpuProfile") or chart().values["engine"]["gpuProfile"]
    return chart().values["gpuProfiles"][name]


def test_profiles_name_their_device() -> None:
    profiles = chart().values["gpuProfiles"]
    assert profiles["cpu"] == {**profiles["cpu"], "gpus": 0, "device": "cpu"}
    assert GPU_PROFILES, "no GPU profile?"
    for name in GPU_PROFILES:
        assert profiles[name]["device"] == "cuda", name


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_gpu_profiles_render_cuda_and_the_cuda_image(profile: str) -> None:
    values = {"engine": {"gpuProfile": profile}}
    objects = render(values)
    assert [m["device"] for m in engine_models(values)] == ["cuda"]
    image = container(engine(objects))["image"]
    assert image.endswith("-cuda"), image
    limits = container(engine(objects))["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == chart().values["gpuProfiles"][profile]["gpus"]


def test_cpu_profile_renders_cpu_and_the_cpu_image() -> None:
    values = {"engine": {"gpuProfile": "cpu"}}
    assert [m["device"] for m in engine_models(values)] == ["cpu"]
    objects = render(values)
    assert not container(engine(objects))["image"].endswith("-cuda")
    assert "nvidia.com/gpu" not in container(engine(objects))["resources"]["limits"]


def test_every_shipped_case_runs_where_its_profile_says(case: tuple[str, dict[str, Any]]) -> None:
    values = case[1]
    want = "cuda" if profile_of(values)["gpus"] > 0 else "cpu"
    for got, model in zip(engine_models(values), values.get("models") or chart().values["models"], strict=True):
        assert got["device"] == model.get("device", want), case[0]


def test_a_model_device_wins_over_the_profile() -> None:
    values = {
        "engine": {"gpuProfile": "nvidia-h100-8"},
        "models": [
            {**MODEL, "id": "a", "device": "cuda:3"},
            {**MODEL, "id": "b", "device": "cpu"},
            {**MODEL, "id": "c"},
        ],
    }
    assert [m["device"] for m in engine_models(values)] == ["cuda:3", "cpu", "cuda"]


def test_a_profile_without_device_falls_back_on_its_gpus() -> None:
    custom = {"gpus": 2, "nodeSelector": {}, "tolerations": []}
    values = {"engine": {"gpuProfile": "custom"}, "gpuProfiles": {"custom": custom}}
    # Helm merges maps: the default `device` of `custom` stays unless set to null.
    assert [m["device"] for m in engine_models(values)] == ["cuda"]
    values["gpuProfiles"]["custom"] = {**custom, "device": None}
    assert [m["device"] for m in engine_models(values)] == ["cuda"]
    values["gpuProfiles"]["custom"] = {**custom, "gpus": 0, "device": None}
    assert [m["device"] for m in engine_models(values)] == ["cpu"]


def test_gpu_memory_utilization_is_a_toml_float() -> None:
    models = [
        {**MODEL, "id": "a", "gpuMemoryUtilization": 0.55},
        {**MODEL, "id": "b", "gpuMemoryUtilization": 1},
        {**MODEL, "id": "c"},
    ]
    text = config_text(render({"models": models}), "engine")
    assert "gpu_memory_utilization = 0.55\n" in text
    assert "gpu_memory_utilization = 1.0\n" in text
    got = tomllib.loads(text)["model"]
    assert [m.get("gpu_memory_utilization") for m in got] == [0.55, 1.0, None]
    assert isinstance(got[1]["gpu_memory_utilization"], float)


def test_the_gateway_catalog_has_no_device() -> None:
    values = {"models": [{**MODEL, "device": "cuda:1", "gpuMemoryUtilization": 0.5}]}
    (model,) = tomllib.loads(config_text(render(values), "gateway"))["model"]
    assert not {"device", "gpu_memory_utilization"} & set(model)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"models": [{**MODEL, "device": "gpu"}]}, "/models/0/device"),
        ({"models": [{**MODEL, "device": "cuda:"}]}, "/models/0/device"),
        ({"models": [{**MODEL, "device": "CUDA"}]}, "/models/0/device"),
        ({"models": [{**MODEL, "gpuMemoryUtilization": 0}]}, "/models/0/gpuMemoryUtilization"),
        ({"models": [{**MODEL, "gpuMemoryUtilization": 1.5}]}, "/models/0/gpuMemoryUtilization"),
        ({"models": [{**MODEL, "gpuMemoryUtilization": "90%"}]}, "/models/0/gpuMemoryUtilization"),
        ({"gpuProfiles": {"custom": {"gpus": 1, "device": "rocm"}}}, "/gpuProfiles/custom/device"),
    ],
    ids=["gpu", "cuda-colon", "upper-case", "zero", "above-one", "percent-string", "profile-rocm"],
)
def test_schema_rejects_bad_devices(values: dict[str, Any], key: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render_files(values)
    assert key in str(err.value), str(err.value)


def _check_config(inferd_bin: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return subprocess.run(
        [str(inferd_bin), "check-config", "--models", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )


def test_inferd_accepts_the_rendered_device_keys(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]], inferd_bin: Path, tmp_path: Path
) -> None:
    """`inferd check-config` on the rendered catalog, device keys included. The `device` and
    `gpu_memory_utilization` keys come with the CUDA engine's config change; a binary from
    before it refuses them by name, which is reported as an expected failure (the other
    keys are checked by test_config either way)."""
    text = config_text(objects, "engine")
    extra = "\n[[model]]\nid = \"pinned\"\nhf = \"org/repo\"\ndevice = \"cuda:1\"\ngpu_memory_utilization = 0.5\n"
    result = _check_config(inferd_bin, text + extra, tmp_path)
    out = result.stdout + result.stderr
    if result.returncode != 0 and "unknown field `device`" in out:
        pytest.xfail("this inferd predates the models.toml `device` key (CUDA engine config)")
    assert result.returncode == 0, f"{case[0]}:\n{text}{extra}\n{out}"
    n = len(tomllib.loads(text)["model"]) + 1
    assert f"ok ({n} models)" in result.stdout
    # And the check can fail on a device value: inferd names the key.
    bad = _check_config(inferd_bin, text.replace('device = "c', 'device = "x', 1), tmp_path)
    assert bad.returncode != 0 and "device" in bad.stdout + bad.stderr


def test_shipped_values_cover_both_devices() -> None:
    devices = {m["device"] for values in CASES.values() for m in engine_models(values)}
    assert devices == {"cpu", "cuda"}
