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
	"time"

	"github.com/bosun-dev/bosun/hack/deviceplugin/plugin"
)

func main() {
	dir := flag.String("dir", "/var/lib/kubelet/device-plugins", "the node agent's device plugin folder")
	res := flag.String("resource", "example.com/dev", "the extended resource to serve")
	n := flag.Int("n", 2, "how many devices")
	mount := flag.String("host-mount", "", "a host folder each allocation mounts at /dev-info")
	numa := flag.String("numa", "", "the NUMA node of each device in turn, comma-separated (e.g. 0,1); none: no topology")
	registry := flag.String("registry", "", "register through the plugin watcher in this folder (<root-dir>/plugins_registry) instead")
	healthFile := flag.String("health-file", "", "a file of \"<device> Unhealthy\" lines, read every half second: the devices' health")
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
	if *healthFile != "" {
		go followHealth(ctx, p, *healthFile, *n, filepath.Base(*res))
	}
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

// followHealth sets each device's health from the file: a device named on a
// line with "Unhealthy" is unhealthy, every other one healthy.
func followHealth(ctx context.Context, p *plugin.Plugin, path string, n int, prefix string) {
	last := map[string]string{}
	for {
		data, _ := os.ReadFile(path)
		want := map[string]string{}
		for i := range n {
			want[fmt.Sprintf("%s-%d", prefix, i)] = "Healthy"
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[1] == "Unhealthy" {
				want[f[0]] = "Unhealthy"
			}
		}
		for id, h := range want {
			if last[id] != h {
				p.SetHealth(id, h)
				last[id] = h
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
