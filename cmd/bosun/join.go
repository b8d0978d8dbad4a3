package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/join"
)

// runJoin is `bosun join`: token discovery, preflight, the seed's files, and
// the agent started (--start) or the command that starts it printed.
func runJoin(ctx context.Context, args []string) int {
	var o join.Options
	fs := o.FlagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "bosun join: %v (see bosun join --help)\n", err)
		return 2
	}
	if o.Help {
		fmt.Printf("Usage: bosun join --server https://<apiserver>:6443 --token <id>.<secret> --discovery-token-ca-cert-hash sha256:<hash> [flags]\n\n"+
			"Joins this node: checks the cluster's identity with the token and the CA hash, runs the preflight checks,\n"+
			"then writes the bootstrap kubeconfig, the KubeletConfiguration and the systemd unit where the seed guide puts them.\n\n%s", fs.FlagUsages())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bosun join: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.SkipCAVerification {
		fmt.Fprintln(os.Stderr, "bosun join: WARNING: --discovery-token-unsafe-skip-ca-verification: the cluster CA is not pinned, "+
			"so whoever answers at --server and knows the token can pose as the cluster; give --discovery-token-ca-cert-hash instead")
	}
	plan, err := join.Prepare(ctx, o)
	if plan != nil {
		join.PrintResults(os.Stdout, plan.Preflight)
	}
	if errors.Is(err, join.ErrPreflight) && plan != nil {
		// The [FAIL] lines above say what and how to fix it.
		fmt.Fprintln(os.Stderr, "bosun join: preflight failed (the [FAIL] lines above), nothing was written")
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bosun join: %v\n", err)
		return 1
	}
	if err := plan.Write(); err != nil {
		fmt.Fprintf(os.Stderr, "bosun join: %v\n", err)
		return 1
	}
	for _, f := range plan.Files {
		fmt.Printf("wrote %s\n", f.Path)
	}
	if plan.KeptConfig {
		fmt.Printf("kept %s (it existed)\n", o.ConfigFile)
	}
	unitName := filepath.Base(o.UnitFile)
	systemd := isDir("/run/systemd/system") && strings.HasPrefix(o.UnitFile, "/etc/systemd/system/")
	if !o.Start {
		if systemd {
			fmt.Printf("start it: systemctl daemon-reload && systemctl enable --now %s\n", unitName)
		} else {
			fmt.Printf("start it: %s\n", strings.Join(plan.Args, " "))
		}
		return 0
	}
	if systemd {
		for _, c := range [][]string{{"daemon-reload"}, {"enable", "--now", unitName}} {
			cmd := exec.Command("systemctl", c...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "bosun join: systemctl %s: %v\n", strings.Join(c, " "), err)
				return 1
			}
		}
		fmt.Printf("started %s: kubectl get nodes shows %s once its CSR is approved\n", unitName, plan.Args[0])
		return 0
	}
	// No systemd: become the agent, in the foreground.
	if err := syscall.Exec(plan.Args[0], plan.Args, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "bosun join: starting %s: %v\n", plan.Args[0], err)
		return 1
	}
	return 0
}

// runPreflight is `bosun preflight <the agent's flags>`: the join's checks
// against this node's configuration, writing nothing.
func runPreflight(ctx context.Context, args []string) int {
	cfg, err := config.Load(args)
	switch {
	case errors.Is(err, config.ErrHelp):
		fmt.Print("Usage: bosun preflight <the flags bosun runs with>\n\nChecks swap, the container runtime and its cgroup driver, " +
			"the ports, the clock and the bootstrap RBAC, as bosun join does, writing nothing.\n\n" + config.Usage())
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "bosun preflight: %v\n", err)
		return 1
	}
	pf, err := join.ForAgent(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bosun preflight: %v\n", err)
		return 1
	}
	results := pf.Run(ctx)
	join.PrintResults(os.Stdout, results)
	if join.Failed(results) != nil {
		return 1
	}
	return 0
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
