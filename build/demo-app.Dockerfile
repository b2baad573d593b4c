# The demo application, FROM scratch around its static binary: nothing is
# pulled to build it. Build context: a folder holding the `demo-app` binary
# built with CGO_ENABLED=0 (scripts/images.sh does both).
FROM scratch
COPY demo-app /demo-app
EXPOSE 8000
# Docker's health check: the binary's own -healthcheck mode (a scratch image
# has no curl). Use 127.0.0.1: a scratch image has no name resolution for
# "localhost". cutover sends no traffic to a container while this says
# "starting" or "unhealthy".
HEALTHCHECK --interval=1s --timeout=2s --start-period=10s --retries=3 \
    CMD ["/demo-app", "-healthcheck", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/demo-app"]
# VERSION is what GET / reports as "version" (PROFILE, set per container,
# names the replica). Last, so images of several versions share the layers
# above in the build cache.
ARG VERSION=dev
ENV VERSION=${VERSION}
