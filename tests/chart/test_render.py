"""The chart renders with Helm's own engine, lints clean in strict mode, and every object
it renders is valid: built-in kinds against the Kubernetes JSON schemas in strict mode
(unknown fields are errors), custom resources against their published field names."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from chartlib import CASES, CHART_DIR, NAMESPACE, REPO, find, render, render_files
from crd_fields import CUSTOM_RESOURCES, check_custom_resource

# The chart's kubeVersion floor (Chart.yaml) and the newest schemas kubernetes-validate
# ships: an object must be valid on both.
MIN_KUBE = "1.30"
KUBE_VERSIONS = [MIN_KUBE, kubernetes_validate.utils.latest_version()]


def test_chart_metadata_names_the_images_and_kube_floor() -> None:
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["kubeVersion"] == f">={MIN_KUBE}.0-0"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/inferd/inferd"


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_strict_reports_nothing_above_info(name: str) -> None:
    report = helm.lint(
        CHART_DIR, CASES[name] or None, strict=True, namespace=NAMESPACE, kube_version=f"v{MIN_KUBE}.0"
    )
    assert report["errors"] == []
    # Severity 1 is "info" (e.g. "icon is recommended"); 2 warning, 3 error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_strict_fails_a_broken_value() -> None:
    """The lint above can fail: a value that breaks the schema is an error finding."""
    report = helm.lint(CHART_DIR, {"engine": {"replicas": -1}}, strict=True, namespace=NAMESPACE)
    assert report["errors"], report


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_builtin_objects_validate_strictly(objects: list[dict[str, Any]], version: str) -> None:
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{name} is invalid on Kubernetes {version}: {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            pytest.fail(f"{name}: {err.message}")
        checked += 1
    assert checked >= 10


def test_strict_validation_catches_an_unknown_field() -> None:
    """The validation above can fail: a misspelt field of a Deployment is rejected."""
    deployment = find(render(), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBE, strict=True)


def test_custom_resources_use_published_fields(objects: list[dict[str, Any]]) -> None:
    known_groups = ("keda.sh/", "monitoring.coreos.com/", "karpenter.sh/", "karpenter.k8s.aws/")
    for obj in objects:
        if obj["apiVersion"].startswith(known_groups):
            problems = check_custom_resource(obj)
            assert problems == [], f"{obj['kind']}/{obj['metadata']['name']}: {problems}"


def test_custom_resource_check_catches_typos_and_wrong_types() -> None:
    objects = render(CASES["examples/eks-karpenter.yaml"])
    scaled = find(objects, "ScaledObject")[0]
    scaled["spec"]["minReplicas"] = 0  # HPA's name, not KEDA's
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 4  # metadata is map[string]string
    scaled["spec"]["triggers"][0]["metadata"]["serverAdress"] = "http://x"
    problems = check_custom_resource(scaled)
    assert any("spec.minReplicas" in p for p in problems), problems
    assert any("metadata.*" in p and "int" in p for p in problems), problems
    assert any("serverAdress" in p for p in problems), problems

    pool = find(objects, "NodePool")[0]
    pool["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized"  # v1beta1 only
    pool["spec"]["template"]["spec"]["kubelet"] = {}  # moved to EC2NodeClass in v1
    problems = check_custom_resource(pool)
    assert any("consolidationPolicy" in p for p in problems), problems
    assert any("spec.template.spec.kubelet" in p for p in problems), problems


def test_examples_render_what_they_promise() -> None:
    eks = render(CASES["examples/eks-karpenter.yaml"])
    kinds = {o["kind"] for o in eks}
    assert {"ScaledObject", "ServiceMonitor", "NodePool", "EC2NodeClass"} <= kinds
    assert "HorizontalPodAutoscaler" in kinds  # the gateway's
    cpu = render(CASES["examples/cpu-single-node.yaml"])
    kinds = {o["kind"] for o in cpu}
    assert not kinds & {"ScaledObject", "ServiceMonitor", "NodePool", "EC2NodeClass"}
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in cpu)


def test_every_optional_object_renders_and_validates() -> None:
    """Turn every optional template on at once (engine HPA instead of KEDA, PVC cache,
    dashboard, ServiceMonitor with relabelings) and validate the lot."""
    values = {
        "engine": {
            "autoscaling": {"enabled": True, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}},
            "modelCache": {"type": "pvc", "sizeLimit": "50Gi", "storageClassName": "gp3"},
        },
        "gateway": {"autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}},
        "hfTokenSecret": {"name": "hf", "key": "token"},
        "serviceMonitor": {
            "enabled": True,
            "metricRelabelings": [
                {
                    "sourceLabels": ["__name__"],
                    "regex": "inferd:(.*)",
                    "targetLabel": "__name__",
                    "replacement": "vllm:$1",
                }
            ],
        },
        "dashboards": {"enabled": True},
        "networkPolicy": {"allowedPodLabels": [{"app": "agent"}], "allowedNamespaces": ["agents"]},
    }
    objects = render(values)
    kinds = {o["kind"] for o in objects}
    assert {"PersistentVolumeClaim", "ServiceMonitor", "HorizontalPodAutoscaler"} <= kinds
    assert len(find(objects, "HorizontalPodAutoscaler")) == 2
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            assert check_custom_resource(obj) == []
        else:
            kubernetes_validate.validate(obj, MIN_KUBE, strict=True)


def _documented_metrics() -> set[str]:
    readme = (REPO / "README.md").read_text()
    return set(re.findall(r"`(inferd:[a-z0-9_]+)`", readme))


def test_dashboard_is_valid_json_and_queries_documented_metrics() -> None:
    dashboard = json.loads((CHART_DIR / "dashboards" / "inferd.json").read_text())
    documented = _documented_metrics()
    assert "inferd:gateway_demand" in documented, "README's metric tables moved?"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        for name in re.findall(r"(inferd:[a-z0-9_]+)", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used, "no inferd metric in the dashboard"
    assert used <= documented, f"not in README's metric tables: {sorted(used - documented)}"
    assert {"inferd:gateway_demand", "inferd:num_requests_waiting", "inferd:kv_cache_usage_perc"} <= used


def test_dashboard_configmap_carries_the_file() -> None:
    objects = render({"dashboards": {"enabled": True}})
    cm = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert len(cm) == 1
    assert cm[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = json.loads(cm[0]["data"]["inferd.json"])
    assert embedded == json.loads((CHART_DIR / "dashboards" / "inferd.json").read_text())


def test_notes_tell_how_to_call_the_endpoint() -> None:
    notes = next(t for p, t in render_files().items() if p.endswith("NOTES.txt"))
    assert f"http://inferd-gateway.{NAMESPACE}.svc.cluster.local:80/v1" in notes
    assert "port-forward svc/inferd-gateway" in notes
    assert '"model": "smollm2-135m-instruct"' in notes


def test_readme_values_table_covers_every_key() -> None:
    """Every top-level key, and every key of the engine, gateway and networkPolicy blocks,
    is named in the chart README's values table."""
    readme = (CHART_DIR / "README.md").read_text()
    table = readme[readme.index("## Values") :]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in table]
    for block in ("engine", "gateway", "networkPolicy"):
        missing += [
            f"{block}.{key}"
            for key in values[block]
            if f".{key}" not in table and f"`{block}.{key}" not in table
        ]
    assert missing == []
