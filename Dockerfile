# syntax=docker/dockerfile:1
# Four images from one build (make images builds the first three without an engine):
#   docker build --target sidecar     -t REGISTRY/pyexec:0.1.0 .             # pyexec init, serve, runner
#   docker build --target datascience -t REGISTRY/pyexec-datascience:0.1.0 . # the same with numpy, pandas, matplotlib
#   docker build --target injector    -t REGISTRY/pyexec-injector:0.1.0 .    # the admission webhook
#   docker build --target bot         -t REGISTRY/pyexec-bot:0.1.0 .         # the sample bot (config/samples)
# Both binaries are static (CGO_ENABLED=0) and run as a non-root user with a read-only root
# filesystem: everything they write is on volumes (emptyDirs) that the chart and the injector
# mount.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY pkg/go.mod pkg/
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/pyexec/pyexec/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/pyexec ./cmd/pyexec-injector

# The injector: the static binary alone on an empty base, as an arbitrary non-root user.
FROM scratch AS injector
COPY --from=build /out/pyexec-injector /pyexec-injector
USER 65532:65532
ENTRYPOINT ["/pyexec-injector"]
CMD ["serve"]

# The sidecar: the system Python of Debian with pip (installs go to the packages volume with
# pip --target; no venv is ever made in a container, so python3-venv is not here). The package
# list is shared with the test cluster's Python root (test/cluster).
FROM debian:bookworm-slim AS sidecar
COPY config/image/sidecar-packages /tmp/
RUN apt-get update \
 && sed 's/#.*//' /tmp/sidecar-packages | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/sidecar-packages
COPY --from=build /out/pyexec /usr/local/bin/pyexec
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["serve"]

# The data-science sidecar: the sidecar's packages and numpy, pandas and matplotlib from Debian
# (what a model's code most often imports; preload them with pyexec.dev/preload).
FROM debian:bookworm-slim AS datascience
COPY config/image/sidecar-packages config/image/datascience-packages /tmp/
RUN apt-get update \
 && sed 's/#.*//' /tmp/sidecar-packages /tmp/datascience-packages | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/sidecar-packages /tmp/datascience-packages
COPY --from=build /out/pyexec /usr/local/bin/pyexec
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["serve"]

# The sample bot of config/samples/bot.yaml: clients/python/sample_bot.py with the stdlib-only
# client, on the same Python base.
FROM debian:bookworm-slim AS bot
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
COPY clients/python/pyexec_client.py clients/python/sample_bot.py /app/
WORKDIR /app
USER 65532:65532
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "/app/sample_bot.py"]
