#!/usr/bin/env bash
# Installs the node software the local cluster needs from Debian, when missing:
# containerd, runc, the CNI plugins, iptables, curl, make, bzip2 and libc6-dev
# (to build busybox), netcat-openbsd and bind9-dnsutils (for the offline images), iproute2 and util-linux (nsenter) for
# the nodes' network namespaces, conntrack for kube-proxy, libseccomp-dev,
# pkg-config and gcc to build runc (RUNTIME=containerd2), docker-registry with
# apache2-utils (htpasswd) for the local image registries, and mount (losetup)
# for the test CSI driver's raw block volumes.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables conntrack libseccomp-dev pkg-config gcc make bzip2 libc6-dev bind9-dnsutils iproute2 util-linux ca-certificates curl netcat-openbsd docker-registry apache2-utils systemd mount)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo ">>> installing from Debian: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's containerd package may try to start a service; the harness runs
  # its own containerd with its own config, so a service start is not wanted.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
