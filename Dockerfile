# braid in a container: the static binary and an empty /tmp, nothing else.
#
#   make image                      # CGO_ENABLED=0 bin/braid, then docker build -t braid:dev .
#   docker run --rm braid:dev --help
#
# There is no builder stage on purpose: the image is assembled FROM scratch out
# of bin/braid, built on the host by `make build` (static, CGO_ENABLED=0), so
# nothing has to be pulled. The image has no shell and no libc: run commands by
# exec'ing the binary (`docker exec NODE /braid status`).
#
# What braid needs at run time: its flags or BRAID_* variables, a certificate
# directory (--tls-dir), a writable --data-dir (a volume), and a /tmp with the
# usual 1777 mode (`braid bench` writes temporary certificates there; Go's
# os.TempDir). DNS comes from the /etc/hosts and /etc/resolv.conf that Docker
# mounts; no CA bundle is needed (nodes trust only the cluster CA they are given).
# bin/rootfs/tmp is made, mode 1777, by `make image`.
FROM scratch
COPY bin/rootfs/ /
COPY bin/braid /braid
# gossip (TCP and UDP), QUIC (UDP), HTTP API (TCP, needs --http 0.0.0.0:7950 and --http-token)
EXPOSE 7946/tcp 7946/udp 7947/udp 7950/tcp
ENTRYPOINT ["/braid"]
CMD ["--help"]
