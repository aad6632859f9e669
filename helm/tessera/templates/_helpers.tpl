{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- end -}}

{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tessera.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The headless Service whose DNS records are the ready workers. */}}
{{- define "tessera.workerDns" -}}
{{ include "tessera.fullname" . }}-worker.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.worker.port }}
{{- end -}}

{{- define "tessera.gatewayConfig" -}}
{{- $g := .Values.gateway -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int $g.port))
  "metrics_listen" (printf "0.0.0.0:%d" (int $g.metricsPort))
  "worker_dns" (list (include "tessera.workerDns" .))
  "routing_policy" $g.routingPolicy
  "request_timeout_s" (int $g.requestTimeoutSeconds)
  "drain_timeout_s" (int $g.drainTimeoutSeconds) -}}
{{- if gt (int $g.grpcPort) 0 -}}
{{- $_ := set $cfg "grpc_listen" (printf "0.0.0.0:%d" (int $g.grpcPort)) -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg $g.extraConfig) -}}
{{- end -}}

{{- define "tessera.workerConfig" -}}
{{- $w := .Values.worker -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int $w.port))
  "metrics_listen" (printf "0.0.0.0:%d" (int $w.metricsPort))
  "model" $w.model.path
  "threads" (int $w.threads)
  "tensor_parallel_size" (int $w.tensorParallelSize)
  "max_num_seqs" (int $w.maxNumSeqs)
  "max_num_batched_tokens" (int $w.maxNumBatchedTokens)
  "kv_cache_memory" (int $w.kvCacheMemoryMiB)
  "max_waiting" (int $w.maxWaiting)
  "max_loras" (int $w.adapters.maxLoras)
  "max_cpu_loras" (int $w.adapters.maxCpuLoras)
  "max_lora_rank" (int $w.adapters.maxLoraRank)
  "drain_timeout_s" (int $w.drainTimeoutSeconds) -}}
{{- if $w.model.name -}}
{{- $_ := set $cfg "model_name" $w.model.name -}}
{{- end -}}
{{- if $w.adapters.enabled -}}
{{- $_ := set $cfg "adapter_dirs" (list $w.adapters.mountPath) -}}
{{- end -}}
{{- if eq $w.device "cuda" -}}
{{- $_ := set $cfg "device" "cuda" -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg $w.extraConfig) -}}
{{- end -}}
