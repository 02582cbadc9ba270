// Command imagectl builds pyexec's images as OCI archives without a container engine and
// pushes them, with the chart, to a registry: what make images and make push run.
//
//	imagectl build -out dist/images -tag 0.1.0 [-version V] [-cache DIR]
//	imagectl push -registry HOST[:PORT][/PATH] [-insecure] [-chart charts/pyexec] ARCHIVE...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pyexec/pyexec/internal/images"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "build" && os.Args[1] != "push") {
		fmt.Fprintln(os.Stderr, "usage: imagectl build|push [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if os.Args[1] == "build" {
		err = build(ctx, os.Args[2:])
	} else {
		err = push(ctx, os.Args[2:])
	}
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "imagectl "+os.Args[1]+":", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "imagectl "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

// usageError is a command line that cannot work: exit 2, as the flag package's own errors.
type usageError string

func (e usageError) Error() string { return string(e) }

func build(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	cache, _ := os.UserCacheDir()
	o := images.Options{Repo: ".", Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	fs.StringVar(&o.Out, "out", "dist/images", "directory the archives are written to")
	fs.StringVar(&o.Tag, "tag", "", "the images' tag (make images: the chart's appVersion)")
	fs.StringVar(&o.Version, "version", "", "the binaries' version (pyexec --version)")
	fs.StringVar(&o.CacheDir, "cache", filepath.Join(cache, "pyexec-tools"), "where debootstrap's Python roots are kept")
	fs.Parse(args)
	if o.Tag == "" || fs.NArg() > 0 {
		return usageError("want -tag and no arguments")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("debootstrap needs root (or build with the Dockerfile: docker build --target sidecar .)")
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	archives, err := images.Build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(archives, "\n"))
	return nil
}

func push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	dest := fs.String("registry", "", "where to push: HOST[:PORT][/PATH]; images go to REGISTRY/NAME:TAG, the chart to REGISTRY/charts/pyexec")
	insecure := fs.Bool("insecure", false, "talk plain HTTP to the registry")
	chart := fs.String("chart", "", "a chart directory to package and push too")
	fs.Parse(args)
	if *dest == "" || fs.NArg() == 0 {
		return usageError("want -registry and the archives to push")
	}
	byName := map[string]images.Pushed{}
	for _, archive := range fs.Args() {
		p, err := images.Push(ctx, archive, *dest, *insecure)
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s:%s %s\n", p.Repository, p.Tag, p.Digest)
		byName[filepath.Base(p.Repository)] = p
	}
	if *chart == "" {
		return nil
	}
	c, err := images.PushChart(ctx, *chart, *dest, *insecure)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s:%s %s\n", c.Repository, c.Tag, c.Digest)
	fmt.Println("\ninstall it, the images pinned by digest:")
	fmt.Println(images.InstallCommand(c, byName[images.Injector], byName[images.Sidecar]))
	return nil
}
