# reference-system/services:dev — the four services of the reference system in one image:
# /usr/local/bin/{gateway,order-service,inventory-service,payment-service}. The container's command
# picks which one runs (`docker run IMAGE order-service`), under tini (the base's entrypoint); each
# reads its configuration from environment variables and names the one that is missing.
#
# Build context: a directory holding just the four binaries (ci/build-images fills a temp dir with
# hard links to the workspace's target/debug ones):
#   docker build -f system/deploy/services.Dockerfile -t reference-system/services:dev DIR
# BASE: a Debian bookworm image with ca-certificates, zlib1g and ENTRYPOINT ["/usr/bin/tini", "--"]
# (ci/build-images: reference-system/debian:bookworm). One instruction: the binaries change together.
ARG BASE=reference-system/debian:bookworm
FROM ${BASE}
COPY gateway order-service inventory-service payment-service /usr/local/bin/
