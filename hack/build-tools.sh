#!/usr/bin/env bash
# Builds the pinned upstream test equipment from the tools/ module into
# _output/bin. A binary already built for the pinned version is kept: each
# build leaves a stamp _output/bin/.stamp-<name> holding the version key.
# Usage: hack/build-tools.sh [name...]   (default: the control plane + kubelet + kubectl + etcd)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/_output/bin"
mkdir -p "$out"
cd "$root/tools"
# The version key: the pinned module versions (go.sum) and the Go toolchain.
key="$(go env GOVERSION)-$(sha256sum go.mod go.sum | sha256sum | cut -c1-16)"
# CoreDNS's and the runtime's own modules have their own keys.
coredns_key="$(go env GOVERSION)-$(sha256sum coredns/go.mod coredns/go.sum coredns/main.go | sha256sum | cut -c1-16)"
runtime_key="$(go env GOVERSION)-$(sha256sum runtime/go.mod runtime/go.sum | sha256sum | cut -c1-16)"
metricsserver_key="$(go env GOVERSION)-$(sha256sum metricsserver/go.mod metricsserver/go.sum | sha256sum | cut -c1-16)"
prometheus_key="3.16.0-$(go env GOVERSION)-$(sha256sum prometheus/go.mod prometheus/go.sum | sha256sum | cut -c1-16)"
# busybox for the offline test images: upstream's release, as the registry's
# busybox:1.37.0 image has it. Debian's busybox-static is patched (its
# debian-installer patch) to drop environment variables whose names are not
# shell names, such as data-1, which the ConfigMap and Secret env specs print.
# The release tarball comes from Debian's archive (the mirror this machine
# reaches), checked against upstream's sha256.
busybox_version=1.37.0
busybox_sha256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
busybox_url=http://deb.debian.org/debian/pool/main/b/busybox/busybox_${busybox_version}.orig.tar.bz2
busybox_key="$busybox_version-$(gcc -dumpfullversion 2>/dev/null)-defconfig-static-notc"
# The DRA specs' hostpathplugin proxy is Bosun's own test equipment (main module).
hostpath_proxy_key="$(go env GOVERSION)-$(sha256sum "$root/hack/hostpath-proxy/main.go" | cut -c1-16)"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.36.3 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/client-go/pkg/version.gitVersion=v1.36.3"

build_one() {
  local name=$1 stamp="$out/.stamp-$1" key=$key
  [[ $name == coredns ]] && key=$coredns_key
  [[ $name == runtime ]] && key=$runtime_key
  [[ $name == metrics-server ]] && key=$metricsserver_key
  [[ $name == prometheus ]] && key=$prometheus_key
  [[ $name == busybox ]] && key=$busybox_key
  [[ $name == hostpath-proxy ]] && key=$hostpath_proxy_key
  if [[ -x "$out/$name" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    return 0
  fi
  echo ">>> building $name (upstream, pinned)"
  local start=$SECONDS
  case $name in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy)
      go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "k8s.io/kubernetes/cmd/$name" ;;
    etcd)
      go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" ./etcd ;;
    etcd-static)
      # For the offline etcd image: no C libraries to carry.
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" ./etcd ;;
    sample-apiserver)
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" k8s.io/sample-apiserver ;;
    e2e.test)
      go test -c -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" k8s.io/kubernetes/test/e2e ;;
    agnhost)
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" k8s.io/kubernetes/test/images/agnhost ;;
    nnp)
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" k8s.io/kubernetes/test/images/nonewprivs ;;
    sample-device-plugin)
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" k8s.io/kubernetes/test/images/sample-device-plugin ;;
    metrics-server)
      # Its own module (tools/metricsserver), as CoreDNS.
      (cd metricsserver && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" sigs.k8s.io/metrics-server/cmd/metrics-server) ;;
    prometheus)
      # Its own module (tools/prometheus); without the web UI's assets (the
      # API is what the tests read).
      (cd prometheus && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.16.0" -o "$out/$name.tmp" github.com/prometheus/prometheus/cmd/prometheus) ;;
    coredns)
      # Its own module (tools/coredns), so its dependencies stay out of ours.
      (cd coredns && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" .) ;;
    runtime)
      # containerd 2 with its shim and ctr, and runc with seccomp (Debian's
      # libseccomp), from their own module (tools/runtime), into _output/bin/runtime.
      mkdir -p "$out/runtime.tmp"
      (cd runtime && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -tags "no_btrfs no_zfs no_devmapper" -o "$out/runtime.tmp/" \
          github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
          github.com/containerd/containerd/v2/cmd/ctr &&
        CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -tags seccomp -o "$out/runtime.tmp/runc" github.com/opencontainers/runc)
      rm -rf "$out/runtime" ;;
    busybox)
      # defconfig (as the release image), static, without tc (it does not
      # build against current kernel headers, and no spec runs it).
      local src="$root/_output/src"
      mkdir -p "$src"
      if ! echo "$busybox_sha256  $src/busybox.tar.bz2" | sha256sum -c --quiet >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$src/busybox.tar.bz2.tmp" "$busybox_url" ||
          { echo "cannot download $busybox_url" >&2; return 1; }
        echo "$busybox_sha256  $src/busybox.tar.bz2.tmp" | sha256sum -c --quiet ||
          { echo "$busybox_url: checksum mismatch" >&2; return 1; }
        mv -f "$src/busybox.tar.bz2.tmp" "$src/busybox.tar.bz2"
      fi
      rm -rf "$src/busybox-$busybox_version"
      tar -xjf "$src/busybox.tar.bz2" -C "$src"
      (cd "$src/busybox-$busybox_version" && make defconfig >/dev/null &&
        sed -i 's/^CONFIG_TC=y/# CONFIG_TC is not set/; s/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/' .config &&
        make -j"$(nproc)" >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }) || return 1
      cp "$src/busybox-$busybox_version/busybox" "$out/$name.tmp"
      rm -rf "$src/busybox-$busybox_version" ;;
    ginkgo)
      go build -trimpath -o "$out/$name.tmp" github.com/onsi/ginkgo/v2/ginkgo ;;
    hostpath-proxy)
      (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" ./hack/hostpath-proxy) ;;
    *) echo "unknown tool $name" >&2; return 2 ;;
  esac
  mv -f "$out/$name.tmp" "$out/$name"
  echo "$key" > "$stamp"
  echo ">>> built $name in $((SECONDS-start))s"
}

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
for n in "${names[@]}"; do build_one "$n"; done
