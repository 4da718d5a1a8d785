#!/usr/bin/env bash
# install-deps.sh: installs every Debian package cell needs to build, test
# and benchmark.  Idempotent; skips apt entirely when all are present.
set -euo pipefail

packages=(
  # build
  gcc make pkg-config libc6-dev libseccomp-dev libarchive-dev libjansson-dev
  # the daemon and the CLI's client: HTTP server, SQLite, SHA-256, HTTP client
  # (decide webhooks: libcurl is loaded at run time, the header is for the build)
  libmicrohttpd-dev libsqlite3-dev libssl-dev nettle-dev libcurl4-openssl-dev
  # the TCP listener's TLS: libmicrohttpd's GnuTLS, which src/server/tls.c calls too
  libgnutls28-dev
  # cell-daemon's config file (/etc/cell/cell.conf, src/daemon/options.c)
  libinih-dev
  # egress: nftables rules, netlink routes, DNS messages, HTTP parsing
  libnftables-dev libnftnl-dev libmnl-dev libldns-dev libhttp-parser-dev
  # runtime helpers: debootstrap builds the debian-bookworm image, mke2fs
  # makes size-limited lanes
  debootstrap ca-certificates iproute2 e2fsprogs
  # virtual filesystems (cell_options_add_vfs): libfuse's low-level API
  libfuse3-dev fuse3
  # tests and benchmarks
  libcmocka-dev python3 python3-pytest git bubblewrap util-linux procps wrk curl
  python3-dnspython nftables passt slirp4netns
  # daemon.openapi_check: responses checked against docs/openapi.json
  python3-jsonschema
  # test_daemon_metrics.py parses GET /metrics with the Prometheus client's parser
  python3-prometheus-client
  # test_install.py: systemd-analyze verify of cell.service, groff to read
  # the generated man pages, zsh to drive the generated completion
  systemd groff-base zsh
  # test_image_import.py builds its images from a static busybox
  busybox-static
  # scripts/test.sh runs the integration tests in two processes (pytest -n 2)
  python3-pytest-xdist
  # a hung integration test fails alone (scripts/test.sh: --timeout) instead
  # of holding CI to its deadline
  python3-pytest-timeout
  # bench/egress.sh's https benchmark makes its test CA with the openssl CLI
  openssl
  # fuzzing (libFuzzer ships in clang's runtime package)
  clang libclang-rt-14-dev
  # the OCI runtime's tests (tests/integration/oci.py): runc as the reference,
  # containerd and ctr run privately by the tests (never as a system service)
  runc containerd
  # test_oci_cri.py: a CRI (gRPC) client made at test time from
  # tests/integration/cri/api.proto (grpc_tools' protoc), and the CNI
  # plugins (bridge, host-local, loopback) of its pods' network
  python3-grpcio python3-protobuf python3-grpc-tools containernetworking-plugins
  # test_k8s_deploy.py reads deploy/kubernetes's manifests
  python3-yaml
  # the desktop (src/server/desktop.c) runs these in cells of the host image
  # (test_desktop.py, tests/sdk/desktop.test.mjs, bench/desktop.sh): the X
  # server, window manager, input, screenshots (convert), windows (xprop,
  # xwininfo), clipboard, recordings (ffmpeg, ffprobe), a test app and its
  # core font
  xvfb openbox xdotool imagemagick x11-utils xclip ffmpeg xterm xfonts-base
  # POST /desktop/open runs xdg-open in the cell
  xdg-utils
  # bench/desktop.sh: the reference server's desktop needs xrandr
  x11-xserver-utils
  # tests/ui and bench/ui.sh: the Inspector in a real browser (playwright-core
  # drives Debian's chromium; it downloads no browser of its own)
  chromium
)
# make builds the Inspector UI (ui/) with npm ci and esbuild; bench/daemon.sh
# fetches its reference (sandbox-agent) with npm, as tests/sdk/run.sh
# installs its suite: Debian's nodejs and npm unless a node
# that brings its own npm (NodeSource's) is installed already.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# containerd's package starts and enables a system-wide containerd; the tests
# run their own, so neither may happen: policy-rc.d (exit 101: "action
# forbidden") stops the start during the install, disable stops it at boot.
policy_rc=""
if [[ " ${missing[*]} " == *" containerd "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
  policy_rc=/usr/sbin/policy-rc.d
  trap 'rm -f "$policy_rc"' EXIT
  printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
  chmod 755 "$policy_rc"
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
if [[ " ${missing[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable containerd.service >/dev/null 2>&1 || true
fi
