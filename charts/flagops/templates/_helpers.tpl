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
  resources: [featureflagsets, rollbackrequests, rollbackdrills]
  verbs: [get, list, watch]
- apiGroups: [flagops.io]
  resources: [checktemplates]
  verbs: [get]               # resolved into a request's plan when it is planned
- apiGroups: [flagops.io]
  resources: [rollbackrequests]
  verbs: [create, patch, delete]   # triggers and drills request rollbacks; the lock annotation flagops.io/holds; drill history
- apiGroups: [flagops.io]
  resources: [featureflagsets/status, rollbackrequests/status, rollbackdrills/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, list, watch]   # list/watch: its own, by label, to put them back
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [get, list, create, delete]   # the revisions of each set's served values (toRevision)
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

{{/* CEL for the delegation policy: the Secret uses ([name, key, destination]) of an object. */}}
{{- define "flagops.secretUses" -}}
{{- $o := . -}}
(request.resource.resource == 'featureflagsets'
  ? {{ $o }}.spec.?flags.orValue([]).map(f,
      f.?checks.orValue([])
        .filter(c, has(c.prometheus) && has(c.prometheus.bearerTokenSecretRef))
        .map(c, [c.prometheus.bearerTokenSecretRef.name, c.prometheus.bearerTokenSecretRef.key, c.prometheus.server])
      + f.?triggers.orValue([])
        .filter(t, has(t.prometheus.bearerTokenSecretRef))
        .map(t, [t.prometheus.bearerTokenSecretRef.name, t.prometheus.bearerTokenSecretRef.key, t.prometheus.server])
    ).flatten(1)
    + {{ $o }}.spec.?notifications.?webhook.?urlSecretRef
        .optMap(r, [[string(r.name), string(r.key), 'webhook']]).orValue([])
    + {{ $o }}.spec.?notifications.?escalation.?urlSecretRef
        .optMap(r, [[string(r.name), string(r.key), 'escalation']]).orValue([])
  : {{ $o }}.spec.?checks.orValue([])
      .filter(c, has(c.prometheus) && has(c.prometheus.bearerTokenSecretRef))
      .map(c, [c.prometheus.bearerTokenSecretRef.name, c.prometheus.bearerTokenSecretRef.key, c.prometheus.server]))
{{- end -}}

{{/* CEL: the Job specs of an object's job checks. */}}
{{- define "flagops.jobSpecs" -}}
{{- $o := . -}}
(request.resource.resource == 'featureflagsets'
  ? {{ $o }}.spec.?flags.orValue([]).map(f,
      f.?checks.orValue([]).filter(c, has(c.job)).map(c, c.job.template)).flatten(1)
  : {{ $o }}.spec.?checks.orValue([]).filter(c, has(c.job)).map(c, c.job.template))
{{- end -}}
