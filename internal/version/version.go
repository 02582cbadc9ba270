// Package version holds pyexec's version, set at build time:
//
//	go build -ldflags "-X github.com/pyexec/pyexec/internal/version.Version=v0.1.0" ./cmd/...
package version

// Version is "dev" in builds that do not set it.
var Version = "dev"
