// Command pyexec-injector is the mutating admission webhook that injects pyexec into opted-in
// pods, and `pyexec-injector inject -f FILE` applies the same mutation offline. See docs/kubernetes.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pyexec/pyexec/cmd/pyexec-injector/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], app.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv})
	stop()
	os.Exit(code)
}
