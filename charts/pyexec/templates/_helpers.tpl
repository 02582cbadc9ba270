{{/*
Names, labels and the few values that several templates derive the same way.
*/}}

{{/*
The name of every object: fullnameOverride, else the release name when it already contains the
chart name, else "<release>-pyexec". Truncated to 63 characters, the limit of a Service name.
*/}}
{{- define "pyexec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels of the injector pods. app.kubernetes.io/name is fixed: the injector never
injects a pod that carries app.kubernetes.io/name=pyexec-injector, so it cannot block its own
pods.
*/}}
{{- define "pyexec.selectorLabels" -}}
app.kubernetes.io/name: pyexec-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object.
*/}}
{{- define "pyexec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pyexec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pyexec
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Labels of the injector pods: podLabels, then the selector labels and the version, which win.
*/}}
{{- define "pyexec.podLabels" -}}
{{- $own := fromYaml (include "pyexec.selectorLabels" .) -}}
{{- $_ := set $own "app.kubernetes.io/version" .Chart.AppVersion -}}
{{- toYaml (merge $own .Values.podLabels) -}}
{{- end -}}

{{/*
The injector's ServiceAccount.
*/}}
{{- define "pyexec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "pyexec.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
The injector image, and the image of the containers it injects; both tags default to appVersion.
*/}}
{{- define "pyexec.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "pyexec.sidecarImage" -}}
{{- if .Values.sidecar.image.digest -}}
{{- printf "%s@%s" .Values.sidecar.image.repository .Values.sidecar.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (.Values.sidecar.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The Secret with the webhook's serving certificate (tls.crt, tls.key, ca.crt): written by the
injector in self mode, by cert-manager in cert-manager mode.
*/}}
{{- define "pyexec.certSecretName" -}}
{{- .Values.certs.secretName | default (printf "%s-tls" (include "pyexec.fullname" .)) -}}
{{- end -}}

{{/*
The cert-manager Certificate of the serving certificate; the webhook's
cert-manager.io/inject-ca-from annotation names it.
*/}}
{{- define "pyexec.servingCertificateName" -}}
{{- printf "%s-serving" (include "pyexec.fullname" .) -}}
{{- end -}}

{{/*
The --cert-mode flag of the injector: cert-manager is an external provider to it.
*/}}
{{- define "pyexec.certModeFlag" -}}
{{- if eq .Values.certs.mode "cert-manager" -}}external{{- else -}}self{{- end -}}
{{- end -}}

{{/*
Where the webhook server reads tls.crt and tls.key.
*/}}
{{- define "pyexec.certDir" -}}
/tmp/k8s-webhook-server/serving-certs
{{- end -}}
