# Two commands set up a fresh machine (Debian, Go installed, run as root):
#   make demo   install python3, pip and curl; build pyexec; run `pyexec init` against the local
#               system Python, then `pyexec serve` on a local socket, and send it a sample
#               execution with curl and with `pyexec run`
#   make test   go vet, the kubectl plugin built for macOS and Windows, and every test (real
#               Python, real pip, real mounts), then the end-to-end journey on a real one-node
#               Kubernetes cluster (test/e2e); node 20 or later with npm must be installed
#               (TestMCPTypeScriptClient runs `npm ci` in test/mcp-ts when needed; not in
#               APT_PKGS: node from a package that bundles npm, which Debian's npm conflicts with)
# and, to try pyexec on a local node by hand (see docs/development.md):
#   make cluster-up / make cluster-down
# and, to check that the test cluster boots every time: make cluster-soak

GO        ?= go
DEMO_DIR  ?= /tmp/pyexec-demo
# Debian packages the tests and the demo use: the system Python with venv and pip, and numpy,
# pandas and matplotlib for the fork-mode tests of preloaded scientific modules and the rich
# outputs (text/llm+plain of tables and arrays); for the test cluster,
# containerd, runc, the CNI plugins, iptables and debootstrap (the images' Python root).
DEMO_PKGS := python3 python3-pip curl
APT_PKGS  := python3 python3-venv python3-pip python3-numpy python3-pandas python3-matplotlib curl util-linux \
             containerd runc containernetworking-plugins iptables debootstrap
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/pyexec/pyexec/internal/version.Version=$(VERSION)

# The platforms the kubectl plugin is built for (make cross); make test builds it for one of
# each other operating system, so that Linux-only code cannot creep into it unseen.
PLUGIN_PLATFORMS      := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
PLUGIN_TEST_PLATFORMS := darwin/arm64 windows/amd64

.PHONY: deps deps-demo build cross krew images push demo tools test reference bench bench-modes bench-compare bench-footprint cluster-up cluster-down cluster-soak

# apt-install installs those of the Debian packages $(1) that are missing.
define apt-install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# What make demo needs: the system Python with pip, and curl.
deps-demo:
	$(call apt-install,$(DEMO_PKGS))

deps:
	$(call apt-install,$(APT_PKGS))
	@# node and npm for the MCP TypeScript SDK's client (TestMCPTypeScriptClient), from Debian when
	@# there is no node at all (a node of another origin, with its own npm, is used as it is).
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing Debian packages: nodejs npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; \
	fi

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/pyexec ./cmd/pyexec
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/pyexec-injector ./cmd/pyexec-injector
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/kubectl-pyexec ./cmd/kubectl-pyexec

# kubectl-pyexec for every platform in PLUGIN_PLATFORMS, into bin/OS-ARCH/.
cross:
	@for p in $(PLUGIN_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "kubectl-pyexec $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -ldflags "$(LDFLAGS)" -o bin/$$os-$$arch/kubectl-pyexec$$ext ./cmd/kubectl-pyexec || exit 1; \
	done

# The Krew archives and manifest (dist/pyexec.yaml) of a release: the archives go to KREW_URL,
# the manifest to a Krew index. KREW_VERSION is vMAJOR.MINOR.PATCH.
krew: cross
	@test -n "$(KREW_VERSION)" -a -n "$(KREW_URL)" -a -n "$(KREW_HOMEPAGE)" || { echo "make krew KREW_VERSION=v0.1.0 KREW_URL=https://... KREW_HOMEPAGE=https://..."; exit 2; }
	$(GO) run ./internal/krew/gen -version $(KREW_VERSION) -url $(KREW_URL) -homepage $(KREW_HOMEPAGE) -platforms "$(PLUGIN_PLATFORMS)" -out dist bin

# The images as OCI archives, without a container engine (as root: debootstrap makes the Debian
# Python roots, cached): pyexec (the sidecar), pyexec-datascience (the sidecar with numpy, pandas
# and matplotlib) and pyexec-injector, tagged IMAGE_TAG (the chart's appVersion), in IMAGES_DIR.
# With an engine, the Dockerfile builds the same images (targets sidecar, datascience, injector).
IMAGES_DIR ?= dist/images
IMAGE_TAG  ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' charts/pyexec/Chart.yaml)
images:
	$(call apt-install,debootstrap)
	$(GO) run ./internal/images/imagectl build -out $(IMAGES_DIR) -tag $(IMAGE_TAG) -version $(VERSION)

# Pushes the archives of make images to REGISTRY (HOST[:PORT][/PATH]) as REGISTRY/NAME:IMAGE_TAG,
# and the chart as REGISTRY/charts/pyexec; prints the helm install that pins the images by
# digest. Credentials: docker login (images), helm registry login (chart). INSECURE=1: plain HTTP.
push:
	@test -n "$(REGISTRY)" || { echo "make push REGISTRY=HOST[:PORT][/PATH] [INSECURE=1]"; exit 2; }
	$(GO) run ./internal/images/imagectl push -registry $(REGISTRY) $(if $(filter 1 true yes,$(INSECURE)),-insecure) -chart charts/pyexec \
		$(IMAGES_DIR)/pyexec_$(IMAGE_TAG).oci.tar $(IMAGES_DIR)/pyexec-datascience_$(IMAGE_TAG).oci.tar $(IMAGES_DIR)/pyexec-injector_$(IMAGE_TAG).oci.tar

demo: deps-demo build
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	bin/pyexec init --require 'pip>=20' --preload json,sqlite3 \
		--packages-dir $(DEMO_DIR)/packages --report $(DEMO_DIR)/preflight.json --log-format console
	bin/pyexec serve --socket $(DEMO_DIR)/pyexec.sock --report $(DEMO_DIR)/preflight.json \
		--packages-dir $(DEMO_DIR)/packages --work-dir $(DEMO_DIR)/work --probe-addr 127.0.0.1:9901 \
		--log-format console 2>$(DEMO_DIR)/serve.log & echo $$! >$(DEMO_DIR)/serve.pid
	@for i in $$(seq 100); do curl -sf http://127.0.0.1:9901/readyz >/dev/null && break; sleep 0.1; done
	curl -s --unix-socket $(DEMO_DIR)/pyexec.sock -H 'Content-Type: application/json' \
		-d '{"code":"import sys; print(sum(range(10))); print(sys.version)"}' http://pyexec/v1/execute; echo
	bin/pyexec run --socket $(DEMO_DIR)/pyexec.sock -c 'print("hello from pyexec run")'
	kill $$(cat $(DEMO_DIR)/serve.pid); sleep 1; cat $(DEMO_DIR)/serve.log

# The Kubernetes binaries (kube-apiserver, etcd, kube-controller-manager, kube-scheduler,
# kubelet, kubectl) for test/webhook and the test cluster, built from their Go modules and
# cached (about 20 minutes the first time on 2 cores, instant after).
tools:
	bash test/tools/build.sh >/dev/null

# The reference pages in docs/reference, generated from the settings and the annotations'
# doc comments; make test fails when they drift.
reference:
	$(GO) test -count=1 -run TestReference ./internal/settings ./internal/mutation -update-reference

# The end-to-end suite runs alone, after the others: it starts a whole cluster.
test: deps tools
	$(GO) vet ./...
	cd pkg && $(GO) vet ./... && $(GO) test -count=1 ./...
	@for p in $(PLUGIN_TEST_PLATFORMS); do \
		echo "kubectl-pyexec builds for $$p"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/kubectl-pyexec || exit 1; \
	done
	KUBEBUILDER_ASSETS=$$(bash test/tools/build.sh) $(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -count=1 -timeout 20m -v ./test/e2e/...

# A one-node cluster in the network namespace pyexec-cluster, files in /tmp/pyexec-cluster, with
# the images of this checkout imported; see docs/development.md.
cluster-up: deps tools
	$(GO) run ./test/cluster/clusterctl up

cluster-down:
	$(GO) run ./test/cluster/clusterctl down

# Boots the test cluster and tears it down SOAK_BOOTS times in a row (not part of make test);
# prints each boot and a summary: boots, failures, boot time min/median/max. The logs of a failed
# boot are kept in /tmp/pyexec-soak-failed/boot-N.
SOAK_BOOTS ?= 20
cluster-soak: deps tools
	$(GO) run ./test/cluster/clusterctl soak -n $(SOAK_BOOTS)

bench: deps
	$(GO) test -run '^$$' -bench . -skip 'Modes|Footprint' -benchtime 20x ./...

# The modes against the original bot's way, with pandas and matplotlib (see docs/benchmarks.md).
bench-modes: deps
	apt-get install -y -qq python3-pandas python3-matplotlib >/dev/null
	$(GO) test -run '^$$' -bench Modes -benchtime 40x -timeout 60m -v ./cmd/pyexec/app

# This tree against another build of pyexec, in the same run (see docs/benchmarks.md): BASE is a git ref,
# by default the parent commit; ROUNDS alternating rounds (base, this) of 30 requests each.
BASE   ?= HEAD~1
ROUNDS ?= 3
bench-compare: deps
	apt-get install -y -qq python3-pandas python3-matplotlib >/dev/null
	PYEXEC_BASE_REF=$(BASE) PYEXEC_ROUNDS=$(ROUNDS) $(GO) test -run '^$$' -bench AgainstRef -benchtime 30x -timeout 90m -v ./cmd/pyexec/app

# The memory of an idle pod by process, with pandas and matplotlib (see docs/benchmarks.md); as root.
bench-footprint: deps
	apt-get install -y -qq python3-pandas python3-matplotlib >/dev/null
	$(GO) test -run '^$$' -bench Footprint -benchtime 1x -v ./cmd/pyexec/app
