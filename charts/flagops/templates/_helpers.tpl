{{- define "flagops.labels" -}}
app.kubernetes.io/name: flagops
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: flagops
{{- end }}

{{- define "flagops.selector" -}}
app.kubernetes.io/name: flagops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* What the operator does, and nothing more; see README "Security". */}}
{{- define "flagops.rules" -}}
- apiGroups: [flagops.io]
  resources: [featureflagsets, rollbackrequests]
  verbs: [get, list, watch]
- apiGroups: [flagops.io]
  resources: [rollbackrequests]
  verbs: [create]          # triggers request rollbacks
- apiGroups: [flagops.io]
  resources: [featureflagsets/status, rollbackrequests/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, list, watch, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create]     # job checks
- apiGroups: [""]
  resources: [pods]
  verbs: [list]            # the pods of a failed check Job, for its last log lines
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]             # webhook URLs and Prometheus tokens, by name; never list
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}
