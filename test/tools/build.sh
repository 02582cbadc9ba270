#!/usr/bin/env bash
# Builds the real Kubernetes and etcd binaries from their Go modules (the versions in go.mod)
# and prints the directory that holds them: kube-apiserver and etcd (KUBEBUILDER_ASSETS for the
# webhook tests), and kube-controller-manager, kube-scheduler, kubelet and kubectl for the test
# cluster (test/cluster). Binaries are cached under the user's cache directory, keyed by this
# module's files, so only the first build on a machine is slow (about 20 minutes on 2 cores);
# the Go build cache makes a rebuild after a change fast.
set -euo pipefail
cd "$(dirname "$0")"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd)
key=$(cat go.mod go.sum build.sh */main.go | sha256sum | cut -c1-16)
out="${XDG_CACHE_HOME:-$HOME/.cache}/pyexec-tools/$key"
ok=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || ok=0; done
if [ "$ok" = 1 ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
v=k8s.io/component-base/version
ldflags="-X $v.gitVersion=v1.37.2 -X $v.gitMajor=1 -X $v.gitMinor=37 -X $v.gitTreeState=clean"
# One go build for all: it shares the compiled packages and runs on every core.
go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${bins[@]/#/./}" >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
