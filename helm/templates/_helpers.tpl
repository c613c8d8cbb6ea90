{{/*
Names and labels. They mirror ipa_tasks/actuation/manifests.py, because the Kubernetes target finds and
checks the stage objects by them (tests/helm checks that the two agree).
*/}}

{{/* A DNS-1123 label, as manifests.stage_object_name makes it: lower case, other characters "-", at most 63. */}}
{{- define "ipa.dnsName" -}}
{{- regexReplaceAll "[^a-z0-9]+" (lower .) "-" | trimAll "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* stage_object_name: "<pipeline>-<stage>". */}}
{{- define "ipa.stageName" -}}
{{- include "ipa.dnsName" (printf "%s-%s" .pipeline .stage) -}}
{{- end -}}

{{- define "ipa.configMapName" -}}
{{- printf "%s-config" (include "ipa.stageName" .) -}}
{{- end -}}

{{- define "ipa.routerName" -}}
{{- include "ipa.dnsName" (printf "%s-router" .pipeline) -}}
{{- end -}}

{{/* label_value: a spec name as a valid label value. */}}
{{- define "ipa.labelValue" -}}
{{- regexReplaceAll "[^A-Za-z0-9_.-]+" . "-" | trunc 63 | trimAll "-_." -}}
{{- end -}}

{{/* Helm's own labels, on every object. */}}
{{- define "ipa.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* stage_labels: what the target's owner selector and ownership check look for. */}}
{{- define "ipa.stageLabels" -}}
app.kubernetes.io/part-of: ipa
app.kubernetes.io/component: stage-server
ipa/pipeline: {{ include "ipa.labelValue" .pipeline | quote }}
ipa/stage: {{ include "ipa.labelValue" .stage | quote }}
{{- end -}}

{{/* selector_labels: immutable once the Deployment exists, so only the stable ones. */}}
{{- define "ipa.stageSelector" -}}
ipa/pipeline: {{ include "ipa.labelValue" .pipeline | quote }}
ipa/stage: {{ include "ipa.labelValue" .stage | quote }}
{{- end -}}

{{- define "ipa.routerLabels" -}}
app.kubernetes.io/part-of: ipa
app.kubernetes.io/component: router
ipa/pipeline: {{ include "ipa.labelValue" .pipeline | quote }}
{{- end -}}

{{- define "ipa.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "ipa.homeClaim" -}}
{{- if .Values.ipaHome.existingClaim -}}
{{- .Values.ipaHome.existingClaim -}}
{{- else if .Values.ipaHome.persistence.create -}}
{{- printf "%s-ipa-home" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The IPA_HOME volume: the claim, or an emptyDir when there is none. */}}
{{- define "ipa.homeVolume" -}}
- name: ipa-home
{{- with (include "ipa.homeClaim" .) }}
  persistentVolumeClaim:
    claimName: {{ . | quote }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "ipa.prometheusAnnotations" -}}
{{- if .Values.prometheus.scrape -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{- define "ipa.airflowNamespace" -}}
{{- default .Release.Namespace .Values.airflow.serviceAccount.namespace -}}
{{- end -}}
