"""A bad value fails at install time: Helm checks values.schema.json (and the chart's own
`fail` rules) before it renders anything, and the message names the offending key."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from chartlib import CASES, chart, render, render_files

MODEL = {"id": "m", "hf": "org/repo", "file": "m.gguf"}

REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("negative engine replicas", {"engine": {"replicas": -1}}, "/engine/replicas"),
    ("one gateway pod", {"gateway": {"replicas": 1}}, "/gateway/replicas"),
    (
        "gateway HPA floor of one",
        {"gateway": {"autoscaling": {"minReplicas": 1}}},
        "/gateway/autoscaling/minReplicas",
    ),
    ("unknown GPU profile", {"engine": {"gpuProfile": "nvidia-b200-1"}}, "/engine/gpuProfile"),
    ("typo'd top-level key", {"gatewy": {"replicas": 2}}, "gatewy"),
    ("typo'd nested key", {"engine": {"replicaCount": 2}}, "replicaCount"),
    ("new GPU profile name", {"gpuProfiles": {"nvidia-b200-1": {"gpus": 1}}}, "nvidia-b200-1"),
    (
        "KEDA and HPA together",
        {"engine": {"keda": {"enabled": True}, "autoscaling": {"enabled": True}}},
        "/engine/autoscaling/enabled",
    ),
    ("no models", {"models": []}, "/models"),
    ("model without a source", {"models": [{"id": "m"}]}, "/models/0"),
    ("model with hf and path", {"models": [{**MODEL, "path": "/w/m.gguf"}]}, "/models/0"),
    (
        "both KV cache sizes",
        {"models": [{**MODEL, "kvCacheTokens": 1, "kvCacheBytes": "1GiB"}]},
        "/models/0/kvCacheBytes",
    ),
    ("bad KV cache size", {"models": [{**MODEL, "kvCacheBytes": "1GB"}]}, "/models/0/kvCacheBytes"),
    ("block size not a power of two", {"models": [{**MODEL, "blockSize": 24}]}, "/models/0/blockSize"),
    ("TOML spelling in values", {"models": [{**MODEL, "max_model_len": 4}]}, "max_model_len"),
    (
        "unknown hold policy",
        {"models": [{**MODEL, "hold": {"whenNoneReady": "wait"}}]},
        "/models/0/hold/whenNoneReady",
    ),
    (
        "bedrock without a model id",
        {"models": [{**MODEL, "bedrock": {"enabled": True}}]},
        "/models/0/bedrock",
    ),
    (
        "bad unsupportedParams",
        {"models": [{**MODEL, "bedrock": {"unsupportedParams": "ignore"}}]},
        "unsupportedParams",
    ),
    ("bad model id", {"models": [{**MODEL, "id": "has space"}]}, "/models/0/id"),
    ("unknown cache type", {"engine": {"modelCache": {"type": "s3"}}}, "/engine/modelCache/type"),
    (
        "relative cache mount",
        {"engine": {"modelCache": {"mountPath": "cache"}}},
        "/engine/modelCache/mountPath",
    ),
    ("bad log format", {"logFormat": "yaml"}, "/logFormat"),
    ("malformed IRSA role", {"gateway": {"serviceAccount": {"irsaRoleArn": "inferd-role"}}}, "irsaRoleArn"),
    ("resources without limits", {"engine": {"resources": {"limits": None}}}, "/engine/resources"),
    (
        "namespace name with capitals",
        {"networkPolicy": {"allowedNamespaces": ["Agents"]}},
        "/networkPolicy/allowedNamespaces/0",
    ),
    ("NodePool weight above 100", {"karpenter": {"nodePool": {"weight": 101}}}, "/karpenter/nodePool/weight"),
]


@pytest.mark.parametrize("values, key", [(v, k) for _, v, k in REJECTED], ids=[n for n, _, _ in REJECTED])
def test_schema_rejects(values: dict[str, Any], key: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render_files(values)
    assert key in str(err.value), str(err.value)
    # The same values fail `helm install`'s own check, not only the render.
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(values)


FAILED_BY_TEMPLATE: list[tuple[str, dict[str, Any], str]] = [
    ("duplicate model ids", {"models": [MODEL, MODEL]}, 'id "m" appears twice'),
    (
        "API keys are not implemented",
        {"apiKeysSecret": {"name": "keys", "key": "k"}},
        "apiKeysSecret is reserved",
    ),
    (
        "one RWO claim for two engines",
        {"engine": {"replicas": 2, "modelCache": {"type": "pvc"}}},
        "ReadWriteMany",
    ),
    (
        "EC2NodeClass without a role",
        {"karpenter": {"enabled": True, "ec2NodeClass": {"create": True}}},
        "needs role",
    ),
]


@pytest.mark.parametrize(
    "values, message", [(v, m) for _, v, m in FAILED_BY_TEMPLATE], ids=[n for n, _, _ in FAILED_BY_TEMPLATE]
)
def test_template_rules_reject(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render_files(values)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_values_pass_the_schema(name: str) -> None:
    chart().validate_schema(CASES[name] or {})


def test_every_gpu_profile_is_accepted() -> None:
    for name in chart().values["gpuProfiles"]:
        assert render({"engine": {"gpuProfile": name}})
