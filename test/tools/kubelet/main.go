// Command kubelet is the real Kubernetes node agent, built from k8s.io/kubernetes for the test
// cluster of pyexec's end-to-end suite.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
