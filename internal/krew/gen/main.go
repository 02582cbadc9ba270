// Command gen writes kubectl-pyexec's Krew archives and manifest (see package krew): `make krew`
// runs it on the binaries `make cross` built.
//
//	go run ./internal/krew/gen -version v0.1.0 -url https://HOST/RELEASE -homepage https://HOST/REPO -out dist bin
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pyexec/pyexec/internal/krew"
)

func main() {
	version := flag.String("version", "", "the release, vMAJOR.MINOR.PATCH")
	url := flag.String("url", "", "where the archives are downloaded from (https)")
	homepage := flag.String("homepage", "", "the project's page (https)")
	out := flag.String("out", "dist", "where the archives and pyexec.yaml are written")
	platforms := flag.String("platforms", "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64", "OS/ARCH, space-separated")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gen -version V -url URL -homepage URL [-out DIR] BINDIR (make cross's bin: BINDIR/OS-ARCH/kubectl-pyexec)")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *out, *version, *url, *homepage, strings.Fields(*platforms)); err != nil {
		fmt.Fprintln(os.Stderr, "krew:", err)
		os.Exit(1)
	}
}

func run(bin, out, version, url, homepage string, platforms []string) error {
	license, err := os.ReadFile("LICENSE")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var archives []krew.Archive
	for _, p := range platforms {
		goos, arch, _ := strings.Cut(p, "/")
		binary, err := os.ReadFile(filepath.Join(bin, goos+"-"+arch, krew.Binary(goos)))
		if err != nil {
			return fmt.Errorf("%s: %w (make cross builds it)", p, err)
		}
		a, err := krew.Pack(goos, arch, binary, license)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, a.Name), a.Data, 0o644); err != nil {
			return err
		}
		archives = append(archives, a)
	}
	manifest, err := krew.NewManifest(version, homepage, url, archives)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, krew.Name+".yaml"), manifest, 0o644)
}
