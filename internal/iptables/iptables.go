// Package iptables keeps the chains the kubelet makes for other components
// (makeIPTablesUtilChains, on by default): KUBE-IPTABLES-HINT in the mangle
// table, whose presence tells others which iptables (legacy or nft) the node
// uses, and on IPv4 the KUBE-FIREWALL chain with its rule that drops outside
// traffic to 127.0.0.0/8 (the route_localnet hole of kube-proxy's NodePorts),
// jumped to from INPUT and OUTPUT. As upstream's, the rules are put back when
// something flushes the tables (a KUBE-KUBELET-CANARY chain in each table
// tells), checked every minute.
package iptables

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

const (
	hintChain     = "KUBE-IPTABLES-HINT"
	firewallChain = "KUBE-FIREWALL"
	canaryChain   = "KUBE-KUBELET-CANARY"
)

// Runner runs one iptables command (a test seam); the error says whether it
// failed (for -C: the rule is absent).
type Runner func(ctx context.Context, binary string, args ...string) error

// Exec runs the binary.
func Exec(ctx context.Context, binary string, args ...string) error {
	out, err := exec.CommandContext(ctx, binary, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", binary, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// family is one of iptables (IPv4) and ip6tables.
type family struct {
	binary string
	ipv6   bool
}

// Sync makes the chains and rules of one family (binary: iptables or
// ip6tables).
func Sync(ctx context.Context, run Runner, binary string, ipv6 bool) error {
	ensureChain := func(table, chain string) error {
		if run(ctx, binary, "-t", table, "-n", "-L", chain) == nil {
			return nil
		}
		return run(ctx, binary, "-t", table, "-N", chain)
	}
	ensureRule := func(op, table, chain string, rule ...string) error {
		if run(ctx, binary, append([]string{"-t", table, "-C", chain}, rule...)...) == nil {
			return nil
		}
		return run(ctx, binary, append([]string{"-t", table, op, chain}, rule...)...)
	}
	var errs []error
	errs = append(errs, ensureChain("mangle", hintChain))
	if !ipv6 {
		errs = append(errs,
			ensureChain("filter", firewallChain),
			ensureRule("-I", "filter", "OUTPUT", "-j", firewallChain),
			ensureRule("-I", "filter", "INPUT", "-j", firewallChain),
			ensureRule("-A", "filter", firewallChain, "-m", "comment", "--comment", "block incoming localnet connections",
				"--dst", "127.0.0.0/8", "!", "--src", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"))
	}
	for _, table := range []string{"mangle", "nat", "filter"} {
		errs = append(errs, ensureChain(table, canaryChain))
	}
	return errors.Join(errs...)
}

// canariesPresent says whether every table still has the canary chain.
func canariesPresent(ctx context.Context, run Runner, binary string) bool {
	for _, table := range []string{"mangle", "nat", "filter"} {
		if run(ctx, binary, "-t", table, "-n", "-L", canaryChain) != nil {
			return false
		}
	}
	return true
}

// Run makes the chains for each family the node has an iptables for, and
// makes them again when a canary goes, until ctx ends. A family whose
// binary is missing is skipped, as upstream skips a node without iptables.
func Run(ctx context.Context, run Runner, every time.Duration) {
	logger := klog.FromContext(ctx)
	var families []family
	for _, f := range []family{{"iptables", false}, {"ip6tables", true}} {
		if _, err := exec.LookPath(f.binary); err == nil {
			families = append(families, f)
		}
	}
	if len(families) == 0 {
		logger.Info("No iptables support on this system; not creating the KUBE-IPTABLES-HINT chain")
		return
	}
	for _, f := range families {
		if err := Sync(ctx, run, f.binary, f.ipv6); err != nil {
			logger.Info("Failed to initialize iptables rules; some functionality may be missing.", "protocol", f.binary, "err", err)
		} else {
			logger.Info("Initialized iptables rules.", "protocol", f.binary)
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range families {
			if canariesPresent(ctx, run, f.binary) {
				continue
			}
			if err := Sync(ctx, run, f.binary, f.ipv6); err != nil {
				logger.Error(err, "Failed to restore iptables rules", "protocol", f.binary)
			}
		}
	}
}
