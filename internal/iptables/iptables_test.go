package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// fakeTables keeps chains and rules as iptables would, per table.
type fakeTables struct {
	chains map[string]bool // "table/chain"
	rules  map[string]bool // "table/chain rule..."
	calls  []string
}

func newFake() *fakeTables {
	f := &fakeTables{chains: map[string]bool{}, rules: map[string]bool{}}
	for _, c := range []string{"filter/INPUT", "filter/OUTPUT", "nat/PREROUTING", "mangle/PREROUTING"} {
		f.chains[c] = true
	}
	return f
}

func (f *fakeTables) run(_ context.Context, _ string, args ...string) error {
	f.calls = append(f.calls, strings.Join(args, " "))
	table, op, chain := args[1], args[2], args[len(args)-1]
	if op != "-n" {
		chain = args[3]
	}
	key := table + "/" + chain
	rule := key + " " + strings.Join(args[4:], " ")
	switch op {
	case "-n": // -n -L chain
		if !f.chains[key] {
			return errors.New("no chain")
		}
	case "-N":
		if f.chains[key] {
			return errors.New("chain exists")
		}
		f.chains[key] = true
	case "-C":
		if !f.rules[rule] {
			return errors.New("no rule")
		}
	case "-I", "-A":
		if !f.chains[key] {
			return errors.New("no chain " + key)
		}
		f.rules[rule] = true
	}
	return nil
}

func TestSyncMakesUpstreamsChainsOnce(t *testing.T) {
	f := newFake()
	ctx := context.Background()
	if err := Sync(ctx, f.run, "iptables", false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"mangle/KUBE-IPTABLES-HINT", "filter/KUBE-FIREWALL", "mangle/KUBE-KUBELET-CANARY", "nat/KUBE-KUBELET-CANARY", "filter/KUBE-KUBELET-CANARY"} {
		if !f.chains[c] {
			t.Errorf("no chain %s", c)
		}
	}
	for _, r := range []string{"filter/INPUT -j KUBE-FIREWALL", "filter/OUTPUT -j KUBE-FIREWALL"} {
		if !f.rules[r] {
			t.Errorf("no rule %s", r)
		}
	}
	drop := false
	for r := range f.rules {
		if strings.HasPrefix(r, "filter/KUBE-FIREWALL ") && strings.Contains(r, "--dst 127.0.0.0/8 ! --src 127.0.0.0/8") && strings.HasSuffix(r, "-j DROP") {
			drop = true
		}
	}
	if !drop {
		t.Errorf("no localnet drop rule in KUBE-FIREWALL: %v", f.rules)
	}
	// Again: nothing is added twice.
	rules := len(f.rules)
	f.calls = nil
	if err := Sync(ctx, f.run, "iptables", false); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.calls {
		if strings.Contains(c, " -N ") || strings.Contains(c, " -I ") || strings.Contains(c, " -A ") {
			t.Errorf("a second sync changed the tables: %s", c)
		}
	}
	if len(f.rules) != rules || !canariesPresent(ctx, f.run, "iptables") {
		t.Errorf("rules %d after a second sync, want %d; canaries present %v", len(f.rules), rules, canariesPresent(ctx, f.run, "iptables"))
	}
	// IPv6: only the hint chain and the canaries.
	f6 := newFake()
	if err := Sync(ctx, f6.run, "ip6tables", true); err != nil {
		t.Fatal(err)
	}
	if f6.chains["filter/KUBE-FIREWALL"] || !f6.chains["mangle/KUBE-IPTABLES-HINT"] {
		t.Errorf("ip6tables chains %v", f6.chains)
	}
}
