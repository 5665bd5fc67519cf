{{/*
Names, labels and the derived values every template shares. Templates hold no logic of their own
beyond what they render, so the rules live here once.
*/}}

{{/* Chart name, overridable. */}}
{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: fullnameOverride, else "<release>-<chart>" (just the release when it
already contains the chart name). Truncated so "-redis-headless" style suffixes still fit 63. */}}
{{- define "relay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource: name and instance plus relay.baseLabels. */}}
{{- define "relay.labels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "relay.baseLabels" . }}
{{- end -}}

{{/* Labels that are not part of any selector; pod templates add them to their selector labels. */}}
{{- define "relay.baseLabels" -}}
helm.sh/chart: {{ include "relay.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relay
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of the relay-node pods (immutable once deployed: keep it small). */}}
{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* Selector of the bundled Redis pod. */}}
{{- define "relay.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* metadata.annotations block content for commonAnnotations (may be empty). */}}
{{- define "relay.annotations" -}}
{{- with .Values.commonAnnotations }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "relay.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ---- Secrets ---------------------------------------------------------------------------- */}}

{{/* Name of the Secret the chart creates. */}}
{{- define "relay.secretName" -}}
{{- printf "%s-secrets" (include "relay.fullname" .) -}}
{{- end -}}

{{/* A value kept in the chart's own Secret from an earlier install (for generated values, so an
upgrade does not rotate them). Empty when there is none, e.g. under `helm template`. */}}
{{- define "relay.previousSecretValue" -}}
{{- $prev := lookup "v1" "Secret" .ctx.Release.Namespace (include "relay.secretName" .ctx) -}}
{{- $data := default dict (get (default dict $prev) "data") -}}
{{- if hasKey $data .key -}}
{{- index $data .key | b64dec -}}
{{- end -}}
{{- end -}}

{{/* "true" when the HS256 secret comes from the chart's Secret (given or generated). */}}
{{- define "relay.jwtSecret.inChart" -}}
{{- if and (not .Values.auth.existingSecret) (or .Values.auth.jwtSecret (not .Values.auth.jwtKeys)) -}}true{{- end -}}
{{- end -}}

{{/* The HS256 secret the chart stores: given, kept from the last install, or generated. */}}
{{- define "relay.jwtSecret.value" -}}
{{- if .Values.auth.jwtSecret -}}
{{- .Values.auth.jwtSecret -}}
{{- else -}}
{{- $prev := include "relay.previousSecretValue" (dict "ctx" . "key" "jwt-secret") -}}
{{- default (randAlphaNum 48) $prev -}}
{{- end -}}
{{- end -}}

{{/* Where RELAY_JWT_SECRET comes from: dict name/key, or empty when no HS256 secret is used. */}}
{{- define "relay.jwtSecret.ref" -}}
{{- if .Values.auth.existingSecret -}}
{{- if .Values.auth.existingSecretJwtSecretKey -}}
{{- dict "name" .Values.auth.existingSecret "key" .Values.auth.existingSecretJwtSecretKey | toJson -}}
{{- end -}}
{{- else if include "relay.jwtSecret.inChart" . -}}
{{- dict "name" (include "relay.secretName" .) "key" "jwt-secret" | toJson -}}
{{- end -}}
{{- end -}}

{{/* Where the JSON key set comes from: dict name/key, or empty. */}}
{{- define "relay.jwtKeys.ref" -}}
{{- if .Values.auth.existingSecret -}}
{{- if .Values.auth.existingSecretJwtKeysKey -}}
{{- dict "name" .Values.auth.existingSecret "key" .Values.auth.existingSecretJwtKeysKey | toJson -}}
{{- end -}}
{{- else if .Values.auth.jwtKeys -}}
{{- dict "name" (include "relay.secretName" .) "key" "jwt-keys.json" | toJson -}}
{{- end -}}
{{- end -}}

{{/* Mount point of the key set file. */}}
{{- define "relay.jwtKeys.dir" -}}/etc/relay/jwt{{- end -}}
{{- define "relay.jwtKeys.path" -}}/etc/relay/jwt/jwt-keys.json{{- end -}}

{{/* "true" when the Redis password lives in the chart's Secret (given, or generated for the
bundled Redis). */}}
{{- define "relay.redisPassword.inChart" -}}
{{- if and (not .Values.redis.existingSecret) (or .Values.redis.password .Values.redis.bundled.enabled) -}}true{{- end -}}
{{- end -}}

{{- define "relay.redisPassword.value" -}}
{{- if .Values.redis.password -}}
{{- .Values.redis.password -}}
{{- else -}}
{{- $prev := include "relay.previousSecretValue" (dict "ctx" . "key" "redis-password") -}}
{{- default (randAlphaNum 32) $prev -}}
{{- end -}}
{{- end -}}

{{/* Where the Redis password comes from: dict name/key, or empty for a Redis without one. */}}
{{- define "relay.redisPassword.ref" -}}
{{- if .Values.redis.existingSecret -}}
{{- dict "name" .Values.redis.existingSecret "key" .Values.redis.existingSecretPasswordKey | toJson -}}
{{- else if include "relay.redisPassword.inChart" . -}}
{{- dict "name" (include "relay.secretName" .) "key" "redis-password" | toJson -}}
{{- end -}}
{{- end -}}

{{/* ---- Redis ------------------------------------------------------------------------------ */}}

{{- define "relay.redis.fullname" -}}
{{- printf "%s-redis" (include "relay.fullname" .) -}}
{{- end -}}

{{/* host:port[/db] of the Redis relay-node talks to. */}}
{{- define "relay.redis.address" -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "%s:6379/0" (include "relay.redis.fullname" .) -}}
{{- else -}}
{{- trimPrefix "redis://" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* TCP port of the external Redis (for the NetworkPolicy), 6379 when the URL names none. */}}
{{- define "relay.redis.port" -}}
{{- $hostport := include "relay.redis.address" . | splitList "/" | first -}}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" -}}
{{- default "6379" $port -}}
{{- end -}}

{{/* RELAY_REDIS_URL; $(REDIS_PASSWORD) is expanded by the kubelet from the env var before it. */}}
{{- define "relay.redis.url" -}}
{{- if include "relay.redisPassword.ref" . -}}
{{- printf "redis://%s:$(REDIS_PASSWORD)@%s" .Values.redis.username (include "relay.redis.address" .) -}}
{{- else if .Values.redis.username -}}
{{- printf "redis://%s@%s" .Values.redis.username (include "relay.redis.address" .) -}}
{{- else -}}
{{- printf "redis://%s" (include "relay.redis.address" .) -}}
{{- end -}}
{{- end -}}

{{/* ---- Drain ------------------------------------------------------------------------------ */}}

{{/* The grace period the drain needs: preStop sleep + node delay + drain time + margin. */}}
{{- define "relay.terminationGracePeriod.min" -}}
{{- add .Values.drain.delay .Values.drain.nodeDelay .Values.drain.time .Values.drain.margin -}}
{{- end -}}

{{- define "relay.terminationGracePeriod" -}}
{{- $min := include "relay.terminationGracePeriod.min" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- $min -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/* ---- Cross-field checks the JSON schema cannot express ----------------------------------- */}}
{{- define "relay.validate" -}}
{{- if and .Values.redis.bundled.enabled .Values.redis.url -}}
{{- fail "redis: set either redis.url (external Redis) or redis.bundled.enabled=true, not both" -}}
{{- end -}}
{{- if and (not .Values.redis.bundled.enabled) (not .Values.redis.url) -}}
{{- fail "redis: set redis.url to your Redis, or redis.bundled.enabled=true to run one with the release" -}}
{{- end -}}
{{- if and .Values.auth.existingSecret (not .Values.auth.existingSecretJwtSecretKey) (not .Values.auth.existingSecretJwtKeysKey) -}}
{{- fail "auth.existingSecret needs auth.existingSecretJwtSecretKey or auth.existingSecretJwtKeysKey" -}}
{{- end -}}
{{- if lt (.Values.config.rateBurst | int) (.Values.config.rateLimit | int) -}}
{{- fail (printf "config.rateBurst (%v) must be at least config.rateLimit (%v)" .Values.config.rateBurst .Values.config.rateLimit) -}}
{{- end -}}
{{- $min := include "relay.terminationGracePeriod.min" . | int -}}
{{- if and (not (kindIs "invalid" .Values.terminationGracePeriodSeconds)) (lt (.Values.terminationGracePeriodSeconds | int) $min) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) is below drain.delay + drain.nodeDelay + drain.time + drain.margin (%d): pods would be killed mid-drain" .Values.terminationGracePeriodSeconds $min) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (lt (.Values.autoscaling.maxReplicas | int) (.Values.autoscaling.minReplicas | int)) -}}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" -}}
{{- end -}}
{{- end -}}
