# etcd, FROM scratch around the static binary of cmd/etcd-for-examples
# (etcd's server built from its Go module): nothing is pulled to build it.
# Build context: a folder holding the `etcd` binary built with
# CGO_ENABLED=0 (scripts/images.sh does both). For examples and tests; in
# production run etcd as its operators ship it.
FROM scratch
COPY etcd /etcd
EXPOSE 2379 2380
VOLUME ["/data"]
ENTRYPOINT ["/etcd", "--data-dir", "/data"]
