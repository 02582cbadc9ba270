// Command kube-controller-manager runs the real Kubernetes controllers (Deployments,
// ReplicaSets, EndpointSlices, ServiceAccounts, ...) for the test cluster of pyexec's
// end-to-end suite.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
