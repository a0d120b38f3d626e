{{/*
The Deployment, Service and PodDisruptionBudget of one long-running command (worker,
ingest, api): the same pod shape, its own ports, secrets and settings.
  .root       the chart's context
  .component  worker | ingest | api (the label, the container's name)
  .name       the resources' name
  .command    the ocitag-worker command
  .values     the component's values
  .ports      [{name, port}] besides metrics; a Service port each ({name, port: service port})
  .secrets    the secrets (values `secrets.*`) the command reads
  .env        extra env entries
*/}}
{{- define "ocitag.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $sel := include "ocitag.selector" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "ocitag.labels" . | nindent 4 }}
spec:
  {{- if not (and (eq .component "worker") $v.keda.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- $sel | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # one new pod is ready before an old one leaves (for the worker: one rebalance
      # per step)
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "ocitag.labels" . | nindent 8 }}
      annotations:
        {{- include "ocitag.checksums" $root | nindent 8 }}
    spec:
      {{- include "ocitag.podSecurity" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ include "ocitag.grace" (dict "root" $root "component" .component "grace" $v.terminationGracePeriodSeconds) }}
      topologySpreadConstraints:
        {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: 1
          topologyKey: {{ . }}
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- $sel | nindent 14 }}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "ocitag.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .command | quote }}]
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
            # /metrics, /healthz, /readyz (OCITAG_HTTP_PORT): for the cluster only
            - name: metrics
              containerPort: {{ include "ocitag.httpPort" $root }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: ocitag-worker
          {{- $env := include "ocitag.secretEnv" (dict "root" $root "names" .secrets) | trim }}
          {{- if or $env .env }}
          env:
            {{- with $env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- include "ocitag.probes" $root | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          {{- include "ocitag.containerSecurity" $root | nindent 10 }}
          volumeMounts:
            {{- with include "ocitag.secretMount" (dict "root" $root "names" .secrets) | trim }}{{ . | nindent 12 }}{{ end }}
            {{- include "ocitag.tmpMount" $root | nindent 12 }}
      volumes:
        {{- with include "ocitag.secretVolume" (dict "root" $root "names" .secrets) | trim }}{{ . | nindent 8 }}{{ end }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "ocitag.labels" . | nindent 4 }}
spec:
  type: {{ if $v.service }}{{ $v.service.type }}{{ else }}ClusterIP{{ end }}
  selector:
    {{- $sel | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ $v.service.port }}
      targetPort: {{ .name }}
      protocol: TCP
    {{- end }}
    - name: metrics
      port: {{ include "ocitag.httpPort" $root }}
      targetPort: metrics
      protocol: TCP
{{- if $v.podDisruptionBudget.enabled }}
---
# Voluntary disruptions (drains, node upgrades) keep minAvailable pods running.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "ocitag.labels" . | nindent 4 }}
spec:
  minAvailable: {{ $v.podDisruptionBudget.minAvailable }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- $sel | nindent 6 }}
{{- end }}
{{- end }}
