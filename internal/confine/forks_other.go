//go:build !amd64 && !arm64

package confine

// forkCalls: confine has no seccomp programs for this architecture (see auditArch).
var forkCalls []uintptr
