"""NetworkPolicies (only the gateway reaches the engine; only named callers reach the
gateway; the gateway's egress is DNS, the engine and HTTPS), the Karpenter NodePool's
fit with the engine's GPU profile, and Kubernetes blocks passed through unchanged."""

from __future__ import annotations

from typing import Any

import yaml

from chartlib import CASES, CHART_DIR, RELEASE, container, deep_merge, engine, find, gateway, one, render

DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def policy_for(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    mine = [
        p for p in find(objects, "NetworkPolicy") if matches(p["spec"]["podSelector"], pod_labels(deployment))
    ]
    assert len(mine) == 1, [p["metadata"]["name"] for p in mine]
    return mine[0]


def test_only_the_gateway_reaches_the_engine(objects: list[dict[str, Any]]) -> None:
    policy = policy_for(objects, engine(objects))
    assert "Ingress" in policy["spec"]["policyTypes"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    gateway_peers = [p for p in rule["from"] if "podSelector" in p and "namespaceSelector" not in p]
    assert any(matches(p["podSelector"], pod_labels(gateway(objects))) for p in gateway_peers)
    for peer in gateway_peers:
        # No same-namespace peer may let other pods (the engine itself, agents) in.
        assert peer["podSelector"].get("matchLabels"), peer
        assert not matches(peer["podSelector"], pod_labels(engine(objects)))


def test_engine_ingress_admits_only_named_scrapers_besides_the_gateway() -> None:
    values = CASES["examples/eks-karpenter.yaml"]
    objects = render(values)
    (rule,) = policy_for(objects, engine(objects))["spec"]["ingress"]
    first, *others = rule["from"]
    assert list(first) == ["podSelector"] and matches(first["podSelector"], pod_labels(gateway(objects)))
    assert others == values["networkPolicy"]["metricsScrapers"] != []


def test_gateway_admits_only_the_callers_you_name() -> None:
    objects = render(
        {
            "networkPolicy": {
                "allowSameNamespace": False,
                "allowedNamespaces": ["agents"],
                "allowedPodLabels": [{"app": "agent"}],
            }
        }
    )
    (rule,) = policy_for(objects, gateway(objects))["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}}},
        {"podSelector": {"matchLabels": {"app": "agent"}}},
    ]
    nobody = render({"networkPolicy": {"allowSameNamespace": False}})
    assert policy_for(nobody, gateway(nobody))["spec"]["ingress"] == []


def test_gateway_egress_is_dns_the_engine_and_https(objects: list[dict[str, Any]]) -> None:
    policy = policy_for(objects, gateway(objects))
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    rules = policy["spec"]["egress"]
    ports = sorted((p["port"], p["protocol"]) for r in rules for p in r["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (8080, "TCP")]
    for rule in rules:
        port = rule["ports"][0]["port"]
        if port == 53:
            (peer,) = rule["to"]
            assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
            assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        elif port == 8080:
            (peer,) = rule["to"]
            assert matches(peer["podSelector"], pod_labels(engine(objects)))
            assert "namespaceSelector" not in peer
        else:
            assert all("ipBlock" in peer for peer in rule["to"])


def test_engine_egress_is_dns_and_https_only(objects: list[dict[str, Any]]) -> None:
    policy = policy_for(objects, engine(objects))
    assert "Egress" in policy["spec"]["policyTypes"]
    ports = sorted((p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP")]


def test_network_policies_can_be_turned_off() -> None:
    assert find(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def requirement_allows(requirements: list[dict[str, Any]], key: str, value: str) -> bool:
    for r in requirements:
        if r["key"] != key:
            continue
        if r["operator"] == "In" and value not in r["values"]:
            return False
        if r["operator"] == "NotIn" and value in r["values"]:
            return False
        if r["operator"] == "DoesNotExist":
            return False
    return True


def test_karpenter_node_pool_fits_the_engine() -> None:
    """The GPU NodePool's taint is tolerated by the engine and its requirements allow the
    engine's node selector, so a pending engine pod makes Karpenter launch a node."""
    objects = render(CASES["examples/eks-karpenter.yaml"])
    (pool,) = find(objects, "NodePool")
    (node_class,) = find(objects, "EC2NodeClass")
    spec = pool["spec"]["template"]["spec"]
    assert spec["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": node_class["metadata"]["name"],
    }
    pod = engine(objects)["spec"]["template"]["spec"]
    for taint in spec["taints"]:
        assert any(
            t.get("key") == taint["key"]
            and t.get("effect") == taint["effect"]
            and t.get("operator") == "Exists"
            for t in pod["tolerations"]
        ), taint
    for key, value in pod["nodeSelector"].items():
        assert requirement_allows(spec["requirements"], key, value), (key, value)
    assert "nvidia.com/gpu" in pool["spec"]["limits"]
    assert pool["spec"]["disruption"]["consolidationPolicy"] in {"WhenEmpty", "WhenEmptyOrUnderutilized"}
    assert node_class["spec"]["metadataOptions"]["httpPutResponseHopLimit"] == 1


def test_kubernetes_blocks_pass_through_unchanged() -> None:
    """What Helm's merged values hold is what the pods get (Helm merges maps key by key,
    so a probe given in values keeps the default's other keys unless set to null)."""
    affinity = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                }
            ]
        }
    }
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2, "failureThreshold": 9}
    spread = [
        {
            "maxSkew": 2,
            "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"a": "b"}},
        }
    ]
    env = [{"name": "AWS_REGION", "value": "eu-west-1"}]
    tolerations = [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
    security = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    objects = render(
        {
            "securityContext": security,
            "gateway": {
                "affinity": affinity,
                "resources": resources,
                "readinessProbe": probe,
                "topologySpreadConstraints": spread,
                "extraEnv": env,
                "tolerations": tolerations,
                "podAnnotations": {"example.com/team": "ml"},
                "priorityClassName": "high",
            },
            "engine": {"podAnnotations": {"example.com/scrape": "true"}, "affinity": affinity},
        }
    )
    g = gateway(objects)
    pod = g["spec"]["template"]["spec"]
    c = container(g)
    assert pod["affinity"] == affinity
    assert pod["topologySpreadConstraints"] == spread
    assert pod["tolerations"] == tolerations
    assert pod["priorityClassName"] == "high"
    assert c["resources"] == resources
    assert c["readinessProbe"] == deep_merge(DEFAULTS["gateway"]["readinessProbe"], probe)
    assert c["securityContext"] == deep_merge(DEFAULTS["securityContext"], security)
    assert env[0] in c["env"]
    annotations = g["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "ml" and "checksum/config" in annotations
    e = engine(objects)
    assert e["spec"]["template"]["spec"]["affinity"] == affinity
    assert e["spec"]["template"]["metadata"]["annotations"]["example.com/scrape"] == "true"


def test_default_gateway_spread_prefers_distinct_nodes() -> None:
    pod = gateway(render())["spec"]["template"]["spec"]
    keys = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert matches(keys["kubernetes.io/hostname"]["labelSelector"], pod_labels(gateway(render())))


def test_service_monitor_scrapes_both_roles() -> None:
    objects = render(CASES["examples/eks-karpenter.yaml"])
    (sm,) = find(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for name in (f"{RELEASE}-engine", f"{RELEASE}-gateway"):
        svc = one(objects, "Service", name)
        assert matches(sm["spec"]["selector"], svc["metadata"]["labels"]), name
        assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
