{{/*
Every object name, label set and shared value is built here, once. Templates never assemble a
name inline: the operator, the NetworkPolicy and the RerankerModel selector must agree on them.
*/}}

{{/* The chart name, overridable. */}}
{{- define "hotswap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "hotswap.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "hotswap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A child name: "<fullname>-<suffix>", kept within 63 characters. */}}
{{- define "hotswap.childName" -}}
{{- $full := include "hotswap.fullname" .ctx }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" }}
{{- end }}

{{/* Object names. */}}
{{- define "hotswap.operator.name" -}}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "operator") }}
{{- end }}

{{- define "hotswap.reranker.name" -}}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "reranker") }}
{{- end }}

{{/* The reranker pods' ServiceAccount: the chart's, or one you manage (serviceAccount.create=false). */}}
{{- define "hotswap.reranker.serviceAccountName" -}}
{{- $sa := .Values.reranker.serviceAccount }}
{{- if $sa.create }}
{{- default (include "hotswap.reranker.name" .) $sa.name }}
{{- else }}
{{- required "reranker.serviceAccount.name is required when reranker.serviceAccount.create is false" $sa.name }}
{{- end }}
{{- end }}

{{/* The pre-delete hook's objects (ServiceAccount, Role, RoleBinding, Job). */}}
{{- define "hotswap.uninstall.name" -}}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "uninstall") }}
{{- end }}

{{/*
Prometheus job labels the ServiceMonitor and PodMonitor set, and the selectors the alerts and the
dashboard use: this release's servers and agents only.
*/}}
{{- define "hotswap.metrics.serverJob" -}}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "server") }}
{{- end }}

{{- define "hotswap.metrics.agentJob" -}}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "agent") }}
{{- end }}

{{- define "hotswap.metrics.serverSelector" -}}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "hotswap.metrics.serverJob" .) }}
{{- end }}

{{- define "hotswap.metrics.agentSelector" -}}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "hotswap.metrics.agentJob" .) }}
{{- end }}

{{/* The routes that score (docs/api.md): errors and latency are measured on these only. */}}
{{- define "hotswap.metrics.rerankRoutes" -}}
/rerank|/v1/rerank|/v2/rerank
{{- end }}

{{/* The RerankerModel selector of kube-state-metrics' custom resource state series. */}}
{{- define "hotswap.metrics.modelSelector" -}}
{{- printf "namespace=%q,name=%q" .Release.Namespace (include "hotswap.model.name" .) }}
{{- end }}

{{/* The data-plane Service: the short name clients use. */}}
{{- define "hotswap.service.name" -}}
{{- include "hotswap.fullname" . }}
{{- end }}

{{- define "hotswap.modelCacheClaim.name" -}}
{{- if .Values.reranker.modelCache.existingClaim }}
{{- .Values.reranker.modelCache.existingClaim }}
{{- else }}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "model-cache") }}
{{- end }}
{{- end }}

{{/* The cache's byte limit for --cache-max-bytes: a quantity as written, a number as an integer. */}}
{{- define "hotswap.modelCache.maxBytes" -}}
{{- $v := .Values.reranker.modelCache.maxBytes }}
{{- if kindIs "string" $v }}{{ $v }}{{ else }}{{ int64 $v }}{{ end }}
{{- end }}

{{- define "hotswap.modelsClaim.name" -}}
{{- if .Values.reranker.models.persistentVolumeClaim.existingClaim }}
{{- .Values.reranker.models.persistentVolumeClaim.existingClaim }}
{{- else }}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "models") }}
{{- end }}
{{- end }}

{{/* The RerankerModel the chart creates. */}}
{{- define "hotswap.model.name" -}}
{{- default (include "hotswap.fullname" .) .Values.model.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The boot ConfigMap: the operator keeps it pointing at the last-good version and pods mount it as
their boot file. Named after the RerankerModel ("<rrm>-boot"), the name the operator derives.
*/}}
{{- define "hotswap.bootConfigMap.name" -}}
{{- printf "%s-boot" (include "hotswap.model.name" . | trunc 58) | trimSuffix "-" }}
{{- end }}

{{/* The key of the boot file inside the boot ConfigMap. */}}
{{- define "hotswap.bootConfigMap.key" -}}
boot.json
{{- end }}

{{/* The Secret holding the agent token, and the key in it. */}}
{{- define "hotswap.agentToken.secretName" -}}
{{- if .Values.agentToken.existingSecret }}
{{- .Values.agentToken.existingSecret }}
{{- else }}
{{- include "hotswap.childName" (dict "ctx" . "suffix" "agent-token") }}
{{- end }}
{{- end }}

{{/* Labels on every object. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "hotswap.labels" -}}
helm.sh/chart: {{ include "hotswap.chart" .ctx }}
{{ include "hotswap.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: hotswap
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: immutable in a Deployment's selector, so never anything that changes between
releases. The NetworkPolicy admits the agent port from the operator's selector labels only.
*/}}
{{- define "hotswap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hotswap.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* The image reference, tag or digest. */}}
{{- define "hotswap.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Pod-level security context, shared by every pod. */}}
{{- define "hotswap.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurity.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.podSecurity.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.podSecurity.fsGroup }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context, shared by every container. */}}
{{- define "hotswap.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The server's drain and the grace period derived from it (always longer than the drain). */}}
{{- define "hotswap.reranker.terminationGracePeriodSeconds" -}}
{{- $s := .Values.reranker.server }}
{{- add (int $s.preStopSleepSeconds) (int $s.drainTimeoutSeconds) (int $s.graceMarginSeconds) }}
{{- end }}

{{/* Paths inside the reranker pods. */}}
{{- define "hotswap.paths.adminToken" -}}
/var/run/hotswap/admin/token
{{- end }}

{{- define "hotswap.paths.agentTokenDir" -}}
/var/run/hotswap/agent-token
{{- end }}

{{- define "hotswap.paths.bootDir" -}}
/etc/hotswap/boot
{{- end }}

{{/* Ports fixed by the contract (docs/contract.md): not configurable on purpose. */}}
{{- define "hotswap.ports.data" -}}8080{{- end }}
{{- define "hotswap.ports.admin" -}}8081{{- end }}
{{- define "hotswap.ports.agent" -}}9090{{- end }}

{{/* The namespaces the operator watches when its scope is "namespace". */}}
{{- define "hotswap.operator.namespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.operator.extraWatchNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/*
The operator's RBAC rules, shared by the Role and the ClusterRole. Each rule says why it exists.
*/}}
{{- define "hotswap.operator.rules" -}}
# Watch RerankerModels and record kopf's progress (annotations, finalizers) on them.
- apiGroups: ["hotswap.dev"]
  resources: ["rerankermodels"]
  verbs: ["get", "list", "watch", "patch"]
# Write status: targetVersion, per-pod state, history, conditions.
- apiGroups: ["hotswap.dev"]
  resources: ["rerankermodels/status"]
  verbs: ["get", "patch"]
# Find the selected pods and their IPs, and notice pods that appear, restart or drift.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Post an Event for every rollout step, failure and rollback.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Keep the boot ConfigMap ("<rrm>-boot") pointing at the last-good version.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
{{- if and (include "hotswap.operator.peering" .) (ne .Values.operator.scope "cluster") }}
# kopf peering (replicas > 1): watch the peers' keep-alives, patch our own into the status; the
# operator creates the peering object at startup when it is missing (peering.py).
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch", "create"]
{{- end }}
{{- end }}

{{/* "true" when the operator replicas run with kopf peering (replicas > 1 or peering.enabled). */}}
{{- define "hotswap.operator.peering" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{/* The kopf peering object's name: KopfPeering in each watched namespace, or (scope "cluster")
a ClusterKopfPeering prefixed with the release namespace so two releases never share one. */}}
{{- define "hotswap.operator.peeringName" -}}
{{- $name := .Values.operator.peering.name | default (include "hotswap.operator.name" .) }}
{{- if eq .Values.operator.scope "cluster" }}
{{- printf "%s-%s" .Release.Namespace $name | trunc 253 }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/* The operator's command-line arguments (kopf run flags plus the operator's own). */}}
{{- define "hotswap.operator.args" -}}
{{- if include "hotswap.operator.peering" . }}
{{- /* The priority is derived per pod by hotswap-operator from POD_NAME (cli.py). */}}
- {{ printf "--peering=%s" (include "hotswap.operator.peeringName" .) }}
{{- else }}
- --standalone
{{- end }}
- {{ printf "--liveness=http://0.0.0.0:%d/healthz" (int .Values.operator.livenessPort) }}
{{- if eq .Values.operator.scope "cluster" }}
- --all-namespaces
{{- else }}
{{- range include "hotswap.operator.namespaces" . | fromJsonArray }}
- {{ printf "--namespace=%s" . }}
{{- end }}
{{- end }}
{{- if eq .Values.operator.logLevel "quiet" }}
- --quiet
{{- else if eq .Values.operator.logLevel "verbose" }}
- --verbose
{{- else if eq .Values.operator.logLevel "debug" }}
- --debug
{{- end }}
{{- if eq .Values.operator.logFormat "json" }}
- --log-format=json
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The models volume of a reranker pod, by reranker.models.type. */}}
{{- define "hotswap.reranker.modelsVolume" -}}
{{- $m := .Values.reranker.models }}
{{- if eq $m.type "emptyDir" }}
emptyDir:
  {{- with $m.emptyDir.medium }}
  medium: {{ . }}
  {{- end }}
  sizeLimit: {{ $m.emptyDir.sizeLimit }}
{{- else if eq $m.type "ephemeral" }}
ephemeral:
  volumeClaimTemplate:
    metadata:
      labels:
        {{- include "hotswap.selectorLabels" (dict "ctx" . "component" "reranker") | nindent 8 }}
    spec:
      accessModes: ["ReadWriteOnce"]
      {{- with $m.ephemeral.storageClassName }}
      storageClassName: {{ . }}
      {{- end }}
      resources:
        requests:
          storage: {{ $m.ephemeral.size }}
{{- else }}
persistentVolumeClaim:
  claimName: {{ include "hotswap.modelsClaim.name" . }}
{{- end }}
{{- end }}

{{/* POD_NAME from the downward API, for subPathExpr and the agent's status. */}}
{{- define "hotswap.reranker.podNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
