{{/* Names, labels and images shared by every template. */}}

{{- define "inferd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix; suffixes ("-engine", "-gateway") stay within 63 chars. */}}
{{- define "inferd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inferd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Call with (dict "ctx" $ "component" "engine"). */}}
{{- define "inferd.labels" -}}
helm.sh/chart: {{ include "inferd.chart" .ctx }}
{{ include "inferd.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: inferd
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "inferd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferd.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "inferd.engine.name" -}}
{{ include "inferd.fullname" . }}-engine
{{- end }}

{{- define "inferd.gateway.name" -}}
{{ include "inferd.fullname" . }}-gateway
{{- end }}

{{/* host:port of the engine's headless Service: every ready engine pod is an A record. */}}
{{- define "inferd.engine.dns" -}}
{{ include "inferd.engine.name" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:8080
{{- end }}

{{- define "inferd.engine.serviceAccountName" -}}
{{- if .Values.engine.serviceAccount.create }}
{{- default (include "inferd.engine.name" .) .Values.engine.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.engine.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inferd.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "inferd.gateway.name" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The engine's GPU profile (a dict). */}}
{{- define "inferd.engine.profile" -}}
{{- toYaml (index .Values.gpuProfiles .Values.engine.gpuProfile) }}
{{- end }}

{{/* Engine image: the CUDA variant ("<tag>-cuda") when the profile has GPUs. */}}
{{- define "inferd.engine.image" -}}
{{- $profile := include "inferd.engine.profile" . | fromYaml }}
{{- $repo := default .Values.image.repository .Values.engine.image.repository }}
{{- $tag := .Values.engine.image.tag }}
{{- if not $tag }}
{{- $tag = default .Chart.AppVersion .Values.image.tag }}
{{- if gt (int $profile.gpus) 0 }}
{{- $tag = printf "%s-cuda" $tag }}
{{- end }}
{{- end }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "inferd.gateway.image" -}}
{{- $repo := default .Values.image.repository .Values.gateway.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.gateway.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* Rules a JSON schema cannot express (or that deserve a clearer message). */}}
{{- define "inferd.validate" -}}
{{- if and .Values.engine.keda.enabled .Values.engine.autoscaling.enabled }}
{{- fail "engine.keda.enabled and engine.autoscaling.enabled are mutually exclusive: KEDA creates its own HPA for the engine" }}
{{- end }}
{{- if .Values.apiKeysSecret.name }}
{{- fail "apiKeysSecret is reserved: this inferd release does not check API keys yet, so the endpoint would not be protected; leave apiKeysSecret.name empty" }}
{{- end }}
{{- if not (hasKey .Values.gpuProfiles .Values.engine.gpuProfile) }}
{{- fail (printf "engine.gpuProfile %q is not in gpuProfiles" .Values.engine.gpuProfile) }}
{{- end }}
{{- $ids := dict }}
{{- range .Values.models }}
{{- if hasKey $ids .id }}
{{- fail (printf "models: id %q appears twice" .id) }}
{{- end }}
{{- $_ := set $ids .id true }}
{{- if and .bedrock .bedrock.enabled (not .bedrock.modelId) }}
{{- fail (printf "models[%s].bedrock.enabled needs bedrock.modelId" .id) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.engine.modelCache.type "pvc") (not .Values.engine.modelCache.existingClaim) (gt (int .Values.engine.replicas) 1) (not (has "ReadWriteMany" .Values.engine.modelCache.accessModes)) }}
{{- fail "engine.modelCache: one ReadWriteOnce claim cannot serve several engine pods on different nodes; use accessModes [ReadWriteMany] or type emptyDir/hostPath" }}
{{- end }}
{{- end }}

{{/* `key = value` in TOML: strings quoted (JSON strings are TOML basic strings), bools
     as is, numbers as integers. Call with (list "snake_key" value). */}}
{{- define "inferd.toml.kv" -}}
{{- $v := index . 1 }}
{{- index . 0 }} = {{ if kindIs "string" $v }}{{ $v | toJson }}{{ else if kindIs "bool" $v }}{{ $v }}{{ else }}{{ $v | int64 }}{{ end }}
{{- end }}

{{/* Present, non-empty keys of `src`, renamed camelCase -> snake_case, one per line.
     Call with (list src (list (list "camelKey" "snake_key") ...)). */}}
{{- define "inferd.toml.keys" -}}
{{- $src := index . 0 }}
{{- range $pair := index . 1 }}
{{- $key := index $pair 0 }}
{{- if and $src (hasKey $src $key) }}
{{- $v := index $src $key }}
{{- if not (and (kindIs "string" $v) (eq $v "")) }}
{{ include "inferd.toml.kv" (list (index $pair 1) $v) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The device the engine's models run on when a model names none: the GPU profile's
     `device`, else "cuda" for a profile with GPUs and "cpu" for one without. */}}
{{- define "inferd.engine.device" -}}
{{- $profile := include "inferd.engine.profile" . | fromYaml }}
{{- if $profile.device }}
{{- $profile.device }}
{{- else if gt (int $profile.gpus) 0 }}
{{- "cuda" }}
{{- else }}
{{- "cpu" }}
{{- end }}
{{- end }}

{{/* The engine's models.toml (inferd serve). */}}
{{- define "inferd.engineToml" -}}
# Rendered by the inferd Helm chart from .Values.models; `inferd check-config` validates it.
{{- $device := include "inferd.engine.device" . }}
{{- range .Values.models }}

[[model]]
{{- include "inferd.toml.keys" (list . (list
  (list "id" "id") (list "path" "path") (list "hf" "hf") (list "file" "file")
  (list "revision" "revision") (list "dequantize" "dequantize")
  (list "maxModelLen" "max_model_len") (list "kvCacheTokens" "kv_cache_tokens")
  (list "kvCacheBytes" "kv_cache_bytes") (list "maxNumSeqs" "max_num_seqs")
  (list "maxNumBatchedTokens" "max_num_batched_tokens") (list "blockSize" "block_size")
  (list "maxWaiting" "max_waiting") (list "enablePrefixCaching" "enable_prefix_caching")
  (list "requestTimeoutSecs" "request_timeout_secs"))) }}
device = {{ default $device .device | toJson }}
{{- if hasKey . "gpuMemoryUtilization" }}
{{- $u := float64 .gpuMemoryUtilization }}
gpu_memory_utilization = {{ if eq $u (floor $u) }}{{ printf "%.1f" $u }}{{ else }}{{ $u }}{{ end }}
{{- end }}
{{- end }}
{{ end }}

{{/* The gateway's gateway.toml (inferd gateway): the engine pods, then Bedrock. */}}
{{- define "inferd.gatewayToml" -}}
# Rendered by the inferd Helm chart from .Values.models; `inferd check-config` validates it.
{{- $dns := include "inferd.engine.dns" . }}
{{- range .Values.models }}

[[model]]
{{- include "inferd.toml.keys" (list . (list (list "id" "id") (list "maxModelLen" "max_model_len"))) }}

[[model.backend]]
type = "replicas"
dns = {{ $dns | toJson }}
{{- include "inferd.toml.keys" (list .hold (list
  (list "whenNoneReady" "when_none_ready") (list "maxWaitMs" "max_wait_ms")
  (list "maxHeld" "max_held") (list "keepaliveMs" "keepalive_ms"))) }}
{{- include "inferd.toml.keys" (list .replicas (list
  (list "model" "model") (list "probeIntervalMs" "probe_interval_ms")
  (list "dnsRefreshMs" "dns_refresh_ms") (list "failureThreshold" "failure_threshold")
  (list "openMs" "open_ms") (list "connectTimeoutMs" "connect_timeout_ms")
  (list "maxAttempts" "max_attempts"))) }}
{{- if and .bedrock .bedrock.enabled }}

[[model.backend]]
type = "bedrock"
{{- include "inferd.toml.keys" (list .bedrock (list
  (list "modelId" "model_id") (list "region" "region") (list "endpointUrl" "endpoint_url")
  (list "unsupportedParams" "unsupported_params") (list "maxAttempts" "max_attempts")
  (list "timeoutMs" "timeout_ms"))) }}
{{- end }}
{{- end }}
{{ end }}

{{/* Environment of both roles. */}}
{{- define "inferd.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: HOME
  value: /tmp
{{- end }}

{{/* k=v,k=v of a label map (NOTES.txt). */}}
{{- define "inferd.notes.labels" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end }}
{{- join "," $pairs }}
{{- end }}
