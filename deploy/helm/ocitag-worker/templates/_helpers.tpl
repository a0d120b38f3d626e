{{/*
Shared pieces of the ocitag-worker chart. Resource names are fixed (see values.yaml):
the alerts and the dashboard select on them.
*/}}

{{- define "ocitag.labels" -}}
app.kubernetes.io/name: ocitag-worker
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: ocitag
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | trunc 63 | trimSuffix "-" | trimSuffix "." | trimSuffix "_" | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* what a component's Service, PDB and NetworkPolicy select: never the Jobs' pods */}}
{{- define "ocitag.selector" -}}
app.kubernetes.io/name: ocitag-worker
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ocitag.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{ $i.repository }}@{{ $i.digest }}
{{- else -}}
{{ $i.repository }}:{{ $i.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The secrets: the values key, the variable that names the mounted file, the file (and
key of the Secret the chart creates), and whether the value is JSON.
*/}}
{{- define "ocitag.secretSpecs" -}}
database: {env: OCITAG_DB_PASSWORD_FILE, file: db-password}
kafka: {env: OCITAG_KAFKA_SASL_PASSWORD_FILE, file: kafka-sasl-password}
kafkaCa: {env: OCITAG_KAFKA_SSL_CAFILE, file: kafka-ca.crt}
kafkaClientCert: {env: OCITAG_KAFKA_SSL_CERTFILE, file: kafka-client.crt}
kafkaClientKey: {env: OCITAG_KAFKA_SSL_KEYFILE, file: kafka-client.key}
kafkaKeyPassword: {env: OCITAG_KAFKA_SSL_KEY_PASSWORD_FILE, file: kafka-key-password}
apiTokens: {env: OCITAG_API_TOKENS_FILE, file: api-tokens}
apiGrants: {env: OCITAG_API_GRANTS_FILE, file: api-grants, json: true}
ingestReceivers: {env: OCITAG_INGEST_RECEIVERS_FILE, file: ingest-receivers, json: true}
registryEndpoints: {env: OCITAG_REGISTRY_ENDPOINTS_FILE, file: registry-endpoints}
registryCa: {env: OCITAG_REGISTRY_CA_FILE, file: registry-ca.crt}
{{- end }}

{{/* the Secret and key holding secret .name, or "" when it is not set; .created names
the Secret the chart creates for values (default ocitag-worker) */}}
{{- define "ocitag.secretRef" -}}
{{- $s := index .root.Values.secrets .name -}}
{{- if and $s.existingSecret $s.value -}}
{{- fail (printf "secrets.%s: set value or existingSecret, not both" .name) -}}
{{- else if $s.existingSecret -}}
{{ toJson (dict "secret" $s.existingSecret "key" $s.existingSecretKey) }}
{{- else if $s.value -}}
{{- $spec := index (include "ocitag.secretSpecs" . | fromYaml) .name -}}
{{ toJson (dict "secret" (.created | default "ocitag-worker") "key" $spec.file) }}
{{- end -}}
{{- end }}

{{/*
The files of the secrets in .names that are set, as a JSON list of {env, file, secret,
key}: the variable naming the file, the file under /var/run/secrets/ocitag, and the
Secret and key it comes from. "ingestKinds" stands for one file per kind listed.
*/}}
{{- define "ocitag.secretFiles" -}}
{{- $root := .root -}}
{{- $created := .created -}}
{{- $specs := include "ocitag.secretSpecs" . | fromYaml -}}
{{- $files := list -}}
{{- range .names }}
{{- if eq . "ingestKinds" }}
{{- $k := $root.Values.secrets.ingestKinds }}
{{- if and $k.existingSecret (not $k.kinds) }}{{ fail "secrets.ingestKinds: list the kinds its Secret holds" }}{{ end }}
{{- if and $k.kinds (not $k.existingSecret) }}{{ fail "secrets.ingestKinds: name the existingSecret holding the kinds' secrets" }}{{ end }}
{{- range $k.kinds }}
{{- $files = append $files (dict "env" (printf "OCITAG_INGEST_%s_SECRET_FILE" (upper .)) "file" (printf "ingest-%s" .) "secret" $k.existingSecret "key" .) }}
{{- end }}
{{- else }}
{{- $ref := include "ocitag.secretRef" (dict "root" $root "name" . "created" $created) -}}
{{- if $ref }}
{{- $ref = $ref | fromJson }}
{{- $files = append $files (dict "env" (index $specs .).env "file" (index $specs .).file "secret" $ref.secret "key" $ref.key) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* env entries pointing at those files */}}
{{- define "ocitag.secretEnv" -}}
{{- range include "ocitag.secretFiles" . | fromJsonArray }}
- name: {{ .env }}
  value: /var/run/secrets/ocitag/{{ .file }}
{{- end }}
{{- end }}

{{/* one projected volume with those files, or nothing when none is set */}}
{{- define "ocitag.secretVolume" -}}
{{- $sources := list -}}
{{- range include "ocitag.secretFiles" . | fromJsonArray }}
{{- $sources = append $sources (dict "secret" (dict "name" .secret "items" (list (dict "key" .key "path" .file)))) }}
{{- end }}
{{- if $sources }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- toYaml $sources | nindent 6 }}
{{- end }}
{{- end }}

{{- define "ocitag.secretMount" -}}
{{- if include "ocitag.secretVolume" . | trim }}
- name: secrets
  mountPath: /var/run/secrets/ocitag
  readOnly: true
{{- end }}
{{- end }}

{{/* pod-level: uid/gid 10001 of the image, non-root, seccomp RuntimeDefault */}}
{{- define "ocitag.podSecurity" -}}
automountServiceAccountToken: false
serviceAccountName: {{ .Values.serviceAccount.name }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* container-level: read-only root filesystem, no capabilities, no escalation */}}
{{- define "ocitag.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* the probes of the long-running commands: /healthz and /readyz on OCITAG_HTTP_PORT */}}
{{- define "ocitag.probes" -}}
# /healthz answers from the moment the HTTP server is up: the startup probe covers
# interpreter start-up on a slow node
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 2
  timeoutSeconds: 2
  failureThreshold: 30
# 503 once a watched part has not run for OCITAG_LIVENESS_TIMEOUT_SECONDS; waiting for
# Kafka or PostgreSQL is alive
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}

{{/* a Deployment's grace period must exceed the drain (OCITAG_SHUTDOWN_GRACE_SECONDS) */}}
{{- define "ocitag.grace" -}}
{{- $drain := .root.Values.config.OCITAG_SHUTDOWN_GRACE_SECONDS | default "20" | float64 -}}
{{- if le (float64 .grace) $drain -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must be above config.OCITAG_SHUTDOWN_GRACE_SECONDS (%v)" .component .grace $drain) -}}
{{- end -}}
{{ .grace }}
{{- end }}

{{- define "ocitag.httpPort" -}}
{{ .Values.config.OCITAG_HTTP_PORT | default "9400" | int }}
{{- end }}

{{/* pod annotations: roll the pods when the settings or created secrets change */}}
{{- define "ocitag.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* the tmp emptyDir every pod mounts (the root filesystem is read-only) */}}
{{- define "ocitag.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
