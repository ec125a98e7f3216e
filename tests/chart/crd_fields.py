"""The published fields of the custom resources the chart renders, for the objects the
Kubernetes JSON schemas (kubernetes-validate) do not cover.

Each allow-list maps a field path to what its value may be. `[]` steps into list items,
`*` stands for any key of a free-form map (labels, trigger metadata, limits). A value is
a type (or tuple of types), a set of allowed strings, or ANY for a subtree passed
through unvalidated. An object field not listed, a scalar of the wrong type or a value
outside its set is reported with its path.

Sources (field names as published; re-check them when moving to a newer release):
- KEDA ScaledObject, keda.sh/v1alpha1: https://keda.sh/docs/2.16/reference/scaledobject-spec/
  and the Prometheus scaler's parameters: https://keda.sh/docs/2.16/scalers/prometheus/
- ServiceMonitor, monitoring.coreos.com/v1 (prometheus-operator v0.76):
  https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor
- Karpenter NodePool, karpenter.sh/v1: https://karpenter.sh/v1.0/concepts/nodepools/
- Karpenter EC2NodeClass, karpenter.k8s.aws/v1: https://karpenter.sh/v1.0/concepts/nodeclasses/
"""

from __future__ import annotations

from typing import Any

ANY = object()
STR = str
INT = int
BOOL = bool
QUANTITY = (str, int)

_METADATA = {
    "apiVersion": STR,
    "kind": STR,
    "metadata.name": STR,
    "metadata.namespace": STR,
    "metadata.labels.*": STR,
    "metadata.annotations.*": STR,
}

SCALED_OBJECT: dict[str, Any] = {
    **_METADATA,
    "spec.scaleTargetRef.apiVersion": STR,
    "spec.scaleTargetRef.kind": STR,
    "spec.scaleTargetRef.name": STR,
    "spec.scaleTargetRef.envSourceContainerName": STR,
    "spec.pollingInterval": INT,
    "spec.cooldownPeriod": INT,
    "spec.initialCooldownPeriod": INT,
    "spec.idleReplicaCount": INT,
    "spec.minReplicaCount": INT,
    "spec.maxReplicaCount": INT,
    "spec.fallback.failureThreshold": INT,
    "spec.fallback.replicas": INT,
    "spec.fallback.behavior": {
        "static",
        "currentReplicas",
        "currentReplicasIfHigher",
        "currentReplicasIfLower",
    },
    "spec.advanced.restoreToOriginalReplicaCount": BOOL,
    "spec.advanced.horizontalPodAutoscalerConfig.name": STR,
    # An autoscaling/v2 HorizontalPodAutoscalerBehavior, checked by Kubernetes itself.
    "spec.advanced.horizontalPodAutoscalerConfig.behavior": ANY,
    "spec.advanced.scalingModifiers.target": STR,
    "spec.advanced.scalingModifiers.activationTarget": STR,
    "spec.advanced.scalingModifiers.metricType": {"AverageValue", "Value"},
    "spec.advanced.scalingModifiers.formula": STR,
    "spec.triggers[].type": STR,
    "spec.triggers[].name": STR,
    # Trigger metadata is map[string]string: a number here is rejected by the CRD.
    "spec.triggers[].metadata.*": STR,
    "spec.triggers[].authenticationRef.name": STR,
    "spec.triggers[].authenticationRef.kind": {"TriggerAuthentication", "ClusterTriggerAuthentication"},
    "spec.triggers[].metricType": {"AverageValue", "Value", "Utilization"},
    "spec.triggers[].useCachedMetrics": BOOL,
}

# The Prometheus scaler's metadata keys (the same page's "Trigger Specification").
PROMETHEUS_TRIGGER_METADATA = {
    "serverAddress",
    "query",
    "queryParameters",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "unsafeSsl",
    "authModes",
}
PROMETHEUS_TRIGGER_REQUIRED = {"serverAddress", "query", "threshold"}

_RELABEL = {
    "sourceLabels[]": STR,
    "separator": STR,
    "targetLabel": STR,
    "regex": STR,
    "modulus": INT,
    "replacement": STR,
    "action": {
        "replace",
        "Replace",
        "keep",
        "Keep",
        "drop",
        "Drop",
        "hashmod",
        "HashMod",
        "labelmap",
        "LabelMap",
        "labeldrop",
        "LabelDrop",
        "labelkeep",
        "LabelKeep",
        "lowercase",
        "Lowercase",
        "uppercase",
        "Uppercase",
        "keepequal",
        "KeepEqual",
        "dropequal",
        "DropEqual",
    },
}

SERVICE_MONITOR: dict[str, Any] = {
    **_METADATA,
    "spec.jobLabel": STR,
    "spec.targetLabels[]": STR,
    "spec.podTargetLabels[]": STR,
    "spec.selector.matchLabels.*": STR,
    "spec.selector.matchExpressions[].key": STR,
    "spec.selector.matchExpressions[].operator": {"In", "NotIn", "Exists", "DoesNotExist"},
    "spec.selector.matchExpressions[].values[]": STR,
    "spec.namespaceSelector.any": BOOL,
    "spec.namespaceSelector.matchNames[]": STR,
    "spec.sampleLimit": INT,
    "spec.targetLimit": INT,
    "spec.labelLimit": INT,
    "spec.labelNameLengthLimit": INT,
    "spec.labelValueLengthLimit": INT,
    "spec.keepDroppedTargets": INT,
    "spec.attachMetadata.node": BOOL,
    "spec.scrapeClass": STR,
    "spec.endpoints[].port": STR,
    "spec.endpoints[].targetPort": (str, int),
    "spec.endpoints[].path": STR,
    "spec.endpoints[].scheme": {"http", "https"},
    "spec.endpoints[].params": ANY,
    "spec.endpoints[].interval": STR,
    "spec.endpoints[].scrapeTimeout": STR,
    "spec.endpoints[].honorLabels": BOOL,
    "spec.endpoints[].honorTimestamps": BOOL,
    "spec.endpoints[].trackTimestampsStaleness": BOOL,
    "spec.endpoints[].followRedirects": BOOL,
    "spec.endpoints[].enableHttp2": BOOL,
    "spec.endpoints[].filterRunning": BOOL,
    "spec.endpoints[].proxyUrl": STR,
    "spec.endpoints[].tlsConfig": ANY,
    "spec.endpoints[].bearerTokenSecret": ANY,
    "spec.endpoints[].authorization": ANY,
    "spec.endpoints[].basicAuth": ANY,
    "spec.endpoints[].oauth2": ANY,
    **{f"spec.endpoints[].relabelings[].{k}": v for k, v in _RELABEL.items()},
    **{f"spec.endpoints[].metricRelabelings[].{k}": v for k, v in _RELABEL.items()},
}

_TAINT = {"key": STR, "value": STR, "effect": {"NoSchedule", "PreferNoSchedule", "NoExecute"}}

NODE_POOL: dict[str, Any] = {
    **{k: v for k, v in _METADATA.items() if k != "metadata.namespace"},  # cluster-scoped
    "spec.template.metadata.labels.*": STR,
    "spec.template.metadata.annotations.*": STR,
    "spec.template.spec.nodeClassRef.group": STR,
    "spec.template.spec.nodeClassRef.kind": STR,
    "spec.template.spec.nodeClassRef.name": STR,
    **{f"spec.template.spec.taints[].{k}": v for k, v in _TAINT.items()},
    **{f"spec.template.spec.startupTaints[].{k}": v for k, v in _TAINT.items()},
    "spec.template.spec.requirements[].key": STR,
    "spec.template.spec.requirements[].operator": {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"},
    "spec.template.spec.requirements[].values[]": STR,
    "spec.template.spec.requirements[].minValues": INT,
    "spec.template.spec.expireAfter": STR,
    "spec.template.spec.terminationGracePeriod": STR,
    "spec.disruption.consolidationPolicy": {"WhenEmpty", "WhenEmptyOrUnderutilized"},
    "spec.disruption.consolidateAfter": STR,
    "spec.disruption.budgets[].nodes": STR,
    "spec.disruption.budgets[].schedule": STR,
    "spec.disruption.budgets[].duration": STR,
    "spec.disruption.budgets[].reasons[]": {"Underutilized", "Empty", "Drifted"},
    "spec.limits.*": QUANTITY,
    "spec.weight": INT,
}

EC2_NODE_CLASS: dict[str, Any] = {
    **{k: v for k, v in _METADATA.items() if k != "metadata.namespace"},  # cluster-scoped
    "spec.role": STR,
    "spec.instanceProfile": STR,
    "spec.amiFamily": STR,
    "spec.amiSelectorTerms[].alias": STR,
    "spec.amiSelectorTerms[].id": STR,
    "spec.amiSelectorTerms[].name": STR,
    "spec.amiSelectorTerms[].owner": STR,
    "spec.amiSelectorTerms[].ssmParameter": STR,
    "spec.amiSelectorTerms[].tags.*": STR,
    "spec.subnetSelectorTerms[].id": STR,
    "spec.subnetSelectorTerms[].tags.*": STR,
    "spec.securityGroupSelectorTerms[].id": STR,
    "spec.securityGroupSelectorTerms[].name": STR,
    "spec.securityGroupSelectorTerms[].tags.*": STR,
    "spec.associatePublicIPAddress": BOOL,
    "spec.userData": STR,
    "spec.tags.*": STR,
    "spec.kubelet": ANY,
    "spec.blockDeviceMappings[].deviceName": STR,
    "spec.blockDeviceMappings[].rootVolume": BOOL,
    "spec.blockDeviceMappings[].ebs.deleteOnTermination": BOOL,
    "spec.blockDeviceMappings[].ebs.encrypted": BOOL,
    "spec.blockDeviceMappings[].ebs.iops": INT,
    "spec.blockDeviceMappings[].ebs.kmsKeyID": STR,
    "spec.blockDeviceMappings[].ebs.snapshotID": STR,
    "spec.blockDeviceMappings[].ebs.throughput": INT,
    "spec.blockDeviceMappings[].ebs.volumeSize": STR,
    "spec.blockDeviceMappings[].ebs.volumeType": {"standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"},
    "spec.instanceStorePolicy": {"RAID0"},
    "spec.detailedMonitoring": BOOL,
    "spec.metadataOptions.httpEndpoint": {"enabled", "disabled"},
    "spec.metadataOptions.httpProtocolIPv6": {"enabled", "disabled"},
    "spec.metadataOptions.httpPutResponseHopLimit": INT,
    "spec.metadataOptions.httpTokens": {"required", "optional"},
    "spec.context": STR,
}

# (apiVersion, kind) -> (allow-list, fields that must be present)
CUSTOM_RESOURCES: dict[tuple[str, str], tuple[dict[str, Any], set[str]]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): (
        SCALED_OBJECT,
        {"spec.scaleTargetRef.name", "spec.triggers[].type"},
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        SERVICE_MONITOR,
        {"spec.selector", "spec.endpoints[].port"},
    ),
    ("karpenter.sh/v1", "NodePool"): (
        NODE_POOL,
        {"spec.template.spec.nodeClassRef.name", "spec.template.spec.requirements[].key"},
    ),
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): (
        EC2_NODE_CLASS,
        {"spec.amiSelectorTerms[].alias", "spec.subnetSelectorTerms", "spec.securityGroupSelectorTerms"},
    ),
}


def _prefixes(allowed: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for path in allowed:
        for i, ch in enumerate(path):
            if ch in ".[" and i:
                out.add(path[:i])
    return out


def _check_leaf(path: str, value: Any, spec: Any) -> list[str]:
    if spec is ANY:
        return []
    if isinstance(spec, set):
        if value not in spec:
            return [f"{path}: {value!r} is not one of {sorted(spec)}"]
        return []
    if isinstance(value, bool) and spec is not BOOL and not (isinstance(spec, tuple) and bool in spec):
        return [f"{path}: expected {spec}, got a boolean"]
    if not isinstance(value, spec):
        return [f"{path}: expected {spec}, got {type(value).__name__} {value!r}"]
    return []


def unknown_fields(obj: Any, allowed: dict[str, Any]) -> list[str]:
    """Every field of `obj` that the allow-list does not publish, or of the wrong type."""
    prefixes = _prefixes(allowed)

    def walk(node: Any, path: str) -> list[str]:
        spec = allowed.get(path)
        if spec is ANY:
            return []
        if isinstance(node, dict):
            if path in allowed and path not in prefixes:
                return [f"{path}: expected a scalar, got an object"]
            errors: list[str] = []
            for key, value in node.items():
                child = f"{path}.{key}" if path else key
                if child not in allowed and child not in prefixes:
                    wildcard = f"{path}.*" if path else "*"
                    if wildcard in allowed or wildcard in prefixes:
                        child = wildcard
                    else:
                        errors.append(f"{child}: not a published field")
                        continue
                errors += walk(value, child)
            return errors
        if isinstance(node, list):
            item = f"{path}[]"
            if item not in allowed and item not in prefixes:
                return [f"{path}: a list is not expected here"]
            return [e for value in node for e in walk(value, item)]
        if path not in allowed:
            return [f"{path}: expected an object or a list, got {node!r}"]
        return _check_leaf(path, node, spec)

    return walk(obj, "")


def present_paths(obj: Any, path: str = "") -> set[str]:
    """Every path (in allow-list notation) that `obj` holds, leaves and inner nodes."""
    out = {path} if path else set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            out |= present_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list):
        for value in obj:
            out |= present_paths(value, f"{path}[]")
    return out


def check_custom_resource(obj: dict[str, Any]) -> list[str]:
    """Problems of a rendered custom resource, or a note that it is not one we know."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key not in CUSTOM_RESOURCES:
        return [f"{key}: no published field list for this custom resource"]
    allowed, required = CUSTOM_RESOURCES[key]
    problems = unknown_fields(obj, allowed)
    have = present_paths(obj)
    problems += [f"{path}: required, missing" for path in sorted(required - have)]
    if key[1] == "ScaledObject":
        for trigger in obj.get("spec", {}).get("triggers", []):
            if trigger.get("type") != "prometheus":
                continue
            keys = set(trigger.get("metadata", {}))
            problems += [
                f"prometheus trigger: unknown metadata {k}"
                for k in sorted(keys - PROMETHEUS_TRIGGER_METADATA)
            ]
            problems += [
                f"prometheus trigger: missing {k}" for k in sorted(PROMETHEUS_TRIGGER_REQUIRED - keys)
            ]
    return problems
