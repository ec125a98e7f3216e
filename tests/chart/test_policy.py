"""What an operator relies on in the rendered objects, for the defaults and every example:
GPU scheduling, hardened containers, probes and drain timing, no RBAC for the gateway,
headless engine Service, NetworkPolicies, autoscaling, and pass-through of Kubernetes
blocks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from chartlib import (
    CHART_DIR,
    RELEASE,
    container,
    deep_merge,
    engine,
    find,
    gateway,
    one,
    render,
)

DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}


def merged(case: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """The values Helm would use: defaults with the case's file on top."""
    return deep_merge(DEFAULTS, case[1])


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def effective_security(deployment: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """Container security settings, with the pod's as fallback (Kubernetes' precedence)."""
    pod = deployment["spec"]["template"]["spec"].get("securityContext", {})
    return {**pod, **c.get("securityContext", {})}


def test_every_container_is_hardened_and_sized(objects: list[dict[str, Any]]) -> None:
    deployments = find(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {f"{RELEASE}-engine", f"{RELEASE}-gateway"}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            where = f"{d['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), where
            assert "memory" in res.get("limits", {}), where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            sec = effective_security(d, c)
            assert sec.get("runAsNonRoot") is True, where
            assert sec.get("runAsUser") == 10001, where
            assert sec.get("readOnlyRootFilesystem") is True, where
            assert sec.get("allowPrivilegeEscalation") is False, where
            assert sec.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sec.get("capabilities", {}).get("add"), where
            assert sec.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_engine_has_a_startup_probe_that_allows_a_download(objects: list[dict[str, Any]]) -> None:
    c = container(engine(objects))
    probe = c["startupProbe"]
    assert probe["httpGet"]["path"] == "/health"
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 30 * 60
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert (
        engine(objects)["spec"]["progressDeadlineSeconds"]
        > probe["failureThreshold"] * probe["periodSeconds"]
    )


def test_gateway_probes(objects: list[dict[str, Any]]) -> None:
    c = container(gateway(objects))
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("role", ["engine", "gateway"])
def test_grace_period_covers_prestop_and_drain(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]], role: str
) -> None:
    d = engine(objects) if role == "engine" else gateway(objects)
    values = merged(case)[role]
    c = container(d)
    assert f"--drain-timeout-secs={values['drainTimeoutSeconds']}" in c["args"]
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep == values["preStopSleepSeconds"] > 0
    grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + values["drainTimeoutSeconds"]


def test_engine_gpu_scheduling_follows_the_profile(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]
) -> None:
    values = merged(case)
    profile = values["gpuProfiles"][values["engine"]["gpuProfile"]]
    d = engine(objects)
    pod = d["spec"]["template"]["spec"]
    c = container(d)
    if profile["gpus"] > 0:
        assert c["resources"]["limits"]["nvidia.com/gpu"] == profile["gpus"]
        assert tolerates(pod["tolerations"], GPU_TAINT)
        assert pod["nodeSelector"], "a GPU profile must select its GPU nodes"
        assert c["image"].endswith("-cuda")
    else:
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
        assert not tolerates(pod.get("tolerations", []), GPU_TAINT)
        assert not c["image"].endswith("-cuda")
    assert c["image"].startswith("ghcr.io/inferd/inferd:")


@pytest.mark.parametrize("name", sorted(DEFAULTS["gpuProfiles"]))
def test_each_gpu_profile(name: str) -> None:
    profile = DEFAULTS["gpuProfiles"][name]
    d = engine(render({"engine": {"gpuProfile": name}}))
    pod = d["spec"]["template"]["spec"]
    c = container(d)
    assert c["resources"]["limits"].get("nvidia.com/gpu", 0) == profile["gpus"]
    assert pod.get("nodeSelector", {}) == profile["nodeSelector"]
    if profile["gpus"]:
        assert tolerates(pod["tolerations"], GPU_TAINT)
        assert c["image"] == f"ghcr.io/inferd/inferd:{chart_app_version()}-cuda"
    else:
        assert c["image"] == f"ghcr.io/inferd/inferd:{chart_app_version()}"


def chart_app_version() -> str:
    return yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]


def test_engine_node_selector_and_tolerations_add_to_the_profile() -> None:
    extra_toleration = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    d = engine(render({"engine": {"nodeSelector": {"team": "ml"}, "tolerations": [extra_toleration]}}))
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"karpenter.k8s.aws/instance-gpu-name": "l4", "team": "ml"}
    assert extra_toleration in pod["tolerations"] and tolerates(pod["tolerations"], GPU_TAINT)


def test_gateway_has_no_kubernetes_api_access(objects: list[dict[str, Any]]) -> None:
    rbac = [o for o in objects if o["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]
    assert rbac == []
    pod = gateway(objects)["spec"]["template"]["spec"]
    sa = one(objects, "ServiceAccount", pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False


def test_gateway_service_account_carries_the_irsa_role(case: tuple[str, dict[str, Any]]) -> None:
    arn = "arn:aws:iam::123456789012:role/inferd-bedrock"
    objects = render(deep_merge(case[1], {"gateway": {"serviceAccount": {"irsaRoleArn": arn}}}))
    sa = one(objects, "ServiceAccount", f"{RELEASE}-gateway")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn


def test_gateway_runs_at_least_two_pods(objects: list[dict[str, Any]]) -> None:
    d = gateway(objects)
    hpas = [
        h
        for h in find(objects, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]
    ]
    if hpas:
        assert "replicas" not in d["spec"]
        assert hpas[0]["spec"]["minReplicas"] >= 2
    else:
        assert d["spec"]["replicas"] >= 2


def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_services_select_their_pods(objects: list[dict[str, Any]]) -> None:
    svc = one(objects, "Service", f"{RELEASE}-engine")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is False
    assert selects(svc["spec"]["selector"], engine(objects))
    assert not selects(svc["spec"]["selector"], gateway(objects))
    assert svc["spec"]["ports"][0]["port"] == 8080  # the port of the dns in gateway.toml
    gw = one(objects, "Service", f"{RELEASE}-gateway")
    assert selects(gw["spec"]["selector"], gateway(objects))
    assert not selects(gw["spec"]["selector"], engine(objects))


def test_pdbs_cover_both_roles_without_blocking_a_lone_engine(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]
) -> None:
    values = merged(case)
    pdbs = find(objects, "PodDisruptionBudget")
    for role, d in (("engine", engine(objects)), ("gateway", gateway(objects))):
        mine = [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], d)]
        assert len(mine) == int(values[role]["pdb"]["enabled"]), role
    for p in pdbs:
        if selects(p["spec"]["selector"]["matchLabels"], engine(objects)):
            assert "minAvailable" not in p["spec"] and p["spec"]["maxUnavailable"] >= 1


def test_no_secret_is_rendered_and_the_hf_token_is_a_reference() -> None:
    objects = render({"hfTokenSecret": {"name": "hub", "key": "token"}})
    assert find(objects, "Secret") == []
    env = {e["name"]: e for e in container(engine(objects))["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hub", "key": "token"}
    assert "value" not in env["HF_TOKEN"]
    assert "HF_TOKEN" not in {e["name"] for e in container(engine(render()))["env"]}


def test_engine_cache_is_hf_home(objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]) -> None:
    cache = merged(case)["engine"]["modelCache"]
    d = engine(objects)
    c = container(d)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"].startswith(cache["mountPath"] + "/")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["model-cache"]["mountPath"] == cache["mountPath"]
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert {"emptyDir": "emptyDir", "pvc": "persistentVolumeClaim", "hostPath": "hostPath"}[
        cache["type"]
    ] in volumes["model-cache"]


@pytest.mark.parametrize(
    "cache, volume",
    [
        ({"type": "pvc", "existingClaim": "weights"}, {"persistentVolumeClaim": {"claimName": "weights"}}),
        (
            {"type": "hostPath", "path": "/mnt/inferd"},
            {"hostPath": {"path": "/mnt/inferd", "type": "DirectoryOrCreate"}},
        ),
        ({"type": "emptyDir", "sizeLimit": "5Gi"}, {"emptyDir": {"sizeLimit": "5Gi"}}),
    ],
)
def test_model_cache_types(cache: dict[str, Any], volume: dict[str, Any]) -> None:
    objects = render({"engine": {"modelCache": cache}})
    volumes = {v["name"]: v for v in engine(objects)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", **volume}
    assert find(objects, "PersistentVolumeClaim") == []  # existing claim: none created


def test_keda_scales_the_engine_from_zero_on_demand(
    objects: list[dict[str, Any]], case: tuple[str, dict[str, Any]]
) -> None:
    values = merged(case)
    scaled = find(objects, "ScaledObject")
    if not values["engine"]["keda"]["enabled"]:
        assert scaled == []
        return
    (so,) = scaled
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["scaleTargetRef"]["name"] == engine(objects)["metadata"]["name"]
    queries = [t["metadata"]["query"] for t in so["spec"]["triggers"]]
    ids = "|".join(m["id"] for m in values["models"])
    assert any(q.startswith("sum(inferd:gateway_demand{") and f'model_name=~"{ids}"' in q for q in queries)
    assert any(q.startswith("sum(inferd:num_requests_waiting{") for q in queries)
    for t in so["spec"]["triggers"]:
        assert t["metadata"]["activationThreshold"] == "0"
    assert "replicas" not in engine(objects)["spec"]  # KEDA owns the count


def test_engine_hpa_uses_the_queue_metric() -> None:
    objects = render({"engine": {"autoscaling": {"enabled": True}}})
    hpa = one(objects, "HorizontalPodAutoscaler", f"{RELEASE}-engine")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "inferd_num_requests_waiting"
    assert "replicas" not in engine(objects)["spec"]
