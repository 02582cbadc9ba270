# syntax=docker/dockerfile:1
# The pyexec image: the static pyexec binary on a Debian Python root. The same image runs the
# init container (pyexec init) and, later, the sidecar (pyexec serve).
#   docker build -t pyexec:dev .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/pyexec/pyexec/pkg/version.Version=${VERSION}" \
    -o /out/pyexec ./cmd/pyexec

FROM debian:bookworm-slim AS sidecar
# The system Python that executions use, with pip for installs into the packages volume. No
# venv is ever created in a container: python3-venv is not needed here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/pyexec /usr/local/bin/pyexec
# A fixed non-root UID so Kubernetes can check runAsNonRoot without a user name.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["init"]
