// Package chart tests the Helm chart in charts/pyexec without a cluster and without the helm
// CLI: it renders the chart with Helm's own Go packages, decodes every object strictly into its
// Kubernetes type, checks what matters, runs `helm lint --strict`'s rules, and keeps the
// kustomize manifests under config/ identical to the chart.
//
// The resource files under config/rbac, config/manager, config/webhook and config/certmanager
// are generated from the chart; after changing a template, regenerate them with
//
//	go test ./test/chart -update
package chart
