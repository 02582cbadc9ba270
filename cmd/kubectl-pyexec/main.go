// Command kubectl-pyexec is the kubectl plugin of pyexec: on PATH as kubectl-pyexec, it runs as
// `kubectl pyexec status|report|run|check`. See docs/operations.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pyexec/pyexec/cmd/kubectl-pyexec/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], app.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, app.Deps{})
	stop()
	os.Exit(code)
}
