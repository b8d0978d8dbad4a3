// Command deviceplugin is a device plugin for the e2e tests (test
// equipment): it serves -n devices of -resource from the node agent's device
// plugin folder, registers, and registers again whenever the agent restarts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/bosun-dev/bosun/hack/deviceplugin/plugin"
)

func main() {
	dir := flag.String("dir", "/var/lib/kubelet/device-plugins", "the node agent's device plugin folder")
	res := flag.String("resource", "example.com/dev", "the extended resource to serve")
	n := flag.Int("n", 2, "how many devices")
	mount := flag.String("host-mount", "", "a host folder each allocation mounts at /dev-info")
	numa := flag.String("numa", "", "the NUMA node of each device in turn, comma-separated (e.g. 0,1); none: no topology")
	registry := flag.String("registry", "", "register through the plugin watcher in this folder (<root-dir>/plugins_registry) instead")
	flag.Parse()
	p := plugin.New(*res, *dir, filepath.Base(*res)+".sock", *n)
	p.HostMount = *mount
	p.PreferredAllocation, p.PreStartRequired = true, true
	if *numa != "" {
		for i, f := range strings.Split(*numa, ",") {
			node, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil || i >= *n {
				fmt.Fprintf(os.Stderr, "-numa: %q is not a NUMA node of one of the %d devices\n", f, *n)
				os.Exit(2)
			}
			p.SetNUMA(fmt.Sprintf("%s-%d", filepath.Base(*res), i), node)
		}
	}
	if err := p.Serve(); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	defer p.Stop()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *registry != "" {
		stopRegistry, err := p.ServeRegistry(*registry, func(ok bool, msg string) { fmt.Println("registration status:", ok, msg) })
		if err != nil {
			fmt.Fprintln(os.Stderr, "registry:", err)
			os.Exit(1)
		}
		<-ctx.Done()
		stopRegistry()
		return
	}
	p.RegisterAgain(ctx, func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "register:", err)
		} else {
			fmt.Println("registered", *res)
		}
	})
}
