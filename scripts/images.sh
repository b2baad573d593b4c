#!/usr/bin/env bash
# Builds cutover and the demo app as static binaries (CGO_ENABLED=0) and
# their Docker images FROM scratch (build/*.Dockerfile) — nothing is pulled.
#
#   scripts/images.sh            # cutover/cutover:dev, cutover/demo-app:v1 v2 v3,
#                                # cutover/etcd:dev (examples/multi-host)
#   TAG=1.0 scripts/images.sh    # cutover/cutover:1.0
#
# Environment: CUTOVER_REPO (the proxy image's repository, default
# cutover/cutover) and TAG (its tag, default dev); DEMO_APP_REPO (the demo
# app's repository, default cutover/demo-app) and DEMO_APP_VERSIONS (default
# "v1 v2 v3": one image per version, VERSION baked in, as the examples use).
# examples/seed takes the proxy image whole as PROXY_IMAGE (REPO:TAG) and
# the demo app's repository as DEMO_APP_REPO; examples/multi-host also
# takes ETCD_IMAGE (default cutover/etcd:dev, etcd's server built from its
# Go module by cmd/etcd-for-examples).
# The binaries are left in bin/ (bin/cutover is the CLI for the host).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/go/bin"

CUTOVER_REPO=${CUTOVER_REPO:-cutover/cutover}
TAG=${TAG:-dev}
DEMO_APP_REPO=${DEMO_APP_REPO:-cutover/demo-app}
DEMO_APP_VERSIONS=${DEMO_APP_VERSIONS:-v1 v2 v3}
ETCD_IMAGE=${ETCD_IMAGE:-cutover/etcd:dev}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p bin
# bin/ holds build output only; keep it out of git.
[ -e bin/.gitignore ] || echo "*" > bin/.gitignore

echo "== static binaries"
for cmd in cutover demo-app; do
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "bin/$cmd" "./cmd/$cmd"
	cp "bin/$cmd" "$ctx/$cmd"
	echo "bin/$cmd"
done
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/etcd ./cmd/etcd-for-examples
cp bin/etcd "$ctx/etcd"
echo bin/etcd

echo "== images (FROM scratch)"
docker build -q -f build/cutover.Dockerfile -t "$CUTOVER_REPO:$TAG" "$ctx" >/dev/null
echo "$CUTOVER_REPO:$TAG"
for v in $DEMO_APP_VERSIONS; do
	docker build -q -f build/demo-app.Dockerfile --build-arg "VERSION=$v" -t "$DEMO_APP_REPO:$v" "$ctx" >/dev/null
	echo "$DEMO_APP_REPO:$v"
done
docker build -q -f build/etcd.Dockerfile -t "$ETCD_IMAGE" "$ctx" >/dev/null
echo "$ETCD_IMAGE"
