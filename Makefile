# Two commands set up a fresh machine (Debian, Go installed, run as root):
#   make demo   build pyexec and run `pyexec init` against the local system Python; print the report
#   make test   go vet and every test (real Python, real pip, real mounts)

GO        ?= go
DEMO_DIR  ?= /tmp/pyexec-demo
# Debian packages the tests and the demo use: the system Python with venv and pip.
APT_PKGS  := python3 python3-venv python3-pip
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/pyexec/pyexec/pkg/version.Version=$(VERSION)

.PHONY: deps build demo test bench

deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/pyexec ./cmd/pyexec

demo: deps build
	bin/pyexec init --require 'pip>=20' --preload json,sqlite3 \
		--packages-dir $(DEMO_DIR)/packages --report $(DEMO_DIR)/preflight.json --log-format console
	cat $(DEMO_DIR)/preflight.json
	bin/pyexec detect -o text

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 20x ./...
