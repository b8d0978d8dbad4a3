// Command coredns is CoreDNS with only the plugins the local cluster's DNS
// uses: the cluster's records from the apiserver, health and readiness, a
// cache, metrics and error logs. Test equipment, built by hack/build-tools.sh.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The order the plugins run in, as in CoreDNS's plugin.cfg.
	dnsserver.Directives = []string{"prometheus", "errors", "log", "health", "ready", "loadbalance", "cache", "kubernetes"}
	coremain.Run()
}
