"""Helpers of the chart tests: render charts/inferd with Helm's own engine
(helm-python-sdk binds Helm v4's Go library: no helm binary) and find objects in it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "inferd"
EXAMPLES = sorted((CHART_DIR / "examples").glob("*.yaml"))
RELEASE = "inferd"
NAMESPACE = "inferd"

# The value sets every test runs on: the chart's defaults and each example file.
CASES: dict[str, dict[str, Any]] = {"default": {}}
for _path in EXAMPLES:
    CASES[f"examples/{_path.name}"] = yaml.safe_load(_path.read_text()) or {}

_CHART = helm.Chart.load(CHART_DIR)


def chart() -> helm.Chart:
    return _CHART


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, maps merged key by key (as Helm merges values files)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_files(values: dict[str, Any] | None = None, **opts: Any) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce (schema checked)."""
    return _CHART.render(values or None, name=RELEASE, namespace=NAMESPACE, **opts)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for `values`."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: not an object: {doc!r}"
                objects.append(doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def engine(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment", f"{RELEASE}-engine")


def gateway(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment", f"{RELEASE}-gateway")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config_text(objects: list[dict[str, Any]], role: str) -> str:
    key = "models.toml" if role == "engine" else "gateway.toml"
    return one(objects, "ConfigMap", f"{RELEASE}-{role}")["data"][key]
