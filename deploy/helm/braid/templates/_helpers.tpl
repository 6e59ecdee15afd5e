{{/* The name of the StatefulSet and the pods' prefix. */}}
{{- define "braid.fullname" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service that gives every pod a stable DNS name. */}}
{{- define "braid.headless" -}}
{{- include "braid.fullname" . }}-headless
{{- end -}}

{{- define "braid.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "braid.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The gossip addresses of the first bootstrapExpect pods, comma-separated:
     every node joins them. */}}
{{- define "braid.join" -}}
{{- $root := . -}}
{{- range $i := until (int .Values.bootstrapExpect) -}}
{{- if $i }},{{ end -}}
{{ include "braid.fullname" $root }}-{{ $i }}.{{ include "braid.headless" $root }}.{{ $root.Release.Namespace }}.svc.cluster.local:{{ $root.Values.ports.gossip }}
{{- end -}}
{{- end -}}
