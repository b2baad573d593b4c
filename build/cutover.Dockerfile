# cutover, FROM scratch around its static binary: nothing is pulled to
# build it. Build context: a folder holding the `cutover` binary built with
# CGO_ENABLED=0 (scripts/images.sh does both).
#
# Run it with its configuration at /etc/cutover/cutover.yaml, a volume for
# state_dir (state file, self-signed certificate, admin socket) and, for
# pools of containers, the Docker socket:
#   docker run -d --network my-network -p 80:80 -p 443:443 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v $PWD/cutover.yaml:/etc/cutover/cutover.yaml:ro \
#     -v $PWD/state:/var/lib/cutover cutover/cutover
FROM scratch
COPY cutover /cutover
EXPOSE 80 443
VOLUME ["/var/lib/cutover"]
# SIGTERM: stop accepting, let requests in flight finish (timeouts.shutdown).
STOPSIGNAL SIGTERM
# The image has no shell or curl: cutover asks its own GET /healthz over the
# admin socket (200 once it serves, 503 while it starts or shuts down).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/cutover", "health", "-c", "/etc/cutover/cutover.yaml"]
ENTRYPOINT ["/cutover"]
CMD ["serve", "-c", "/etc/cutover/cutover.yaml"]
