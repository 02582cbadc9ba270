# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target sidecar  -t REGISTRY/pyexec:0.1.0 .           # pyexec init + pyexec serve
#   docker build --target injector -t REGISTRY/pyexec-injector:0.1.0 .  # the admission webhook
# Both binaries are static (CGO_ENABLED=0) and run as a non-root user with a read-only root
# filesystem: everything they write is on volumes (emptyDirs) that the chart and the injector
# mount.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/pyexec/pyexec/pkg/version.Version=${VERSION}" \
      -o /out/ ./cmd/pyexec ./cmd/pyexec-injector

# The injector: the static binary alone on an empty base, as an arbitrary non-root user.
FROM scratch AS injector
COPY --from=build /out/pyexec-injector /pyexec-injector
USER 65532:65532
ENTRYPOINT ["/pyexec-injector"]
CMD ["serve"]

# The sidecar: the system Python of Debian with pip (installs go to the packages volume with
# pip --target; no venv is ever made in a container, so python3-venv is not here). Keep this
# package list in step with the test cluster's Python root.
FROM debian:bookworm-slim AS sidecar
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/pyexec /usr/local/bin/pyexec
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["serve"]
