package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The policies (topologyManagerPolicy) and scopes (topologyManagerScope).
const (
	PolicyNone           = "none"
	PolicyBestEffort     = "best-effort"
	PolicyRestricted     = "restricted"
	PolicySingleNUMANode = "single-numa-node"

	ScopeContainer = "container"
	ScopePod       = "pod"

	// The policy options (topologyManagerPolicyOptions), both GA in v1.36.
	OptionPreferClosestNUMA     = "prefer-closest-numa-nodes"
	OptionMaxAllowableNUMANodes = "max-allowable-numa-nodes"

	// defaultMaxNUMANodes is how many NUMA nodes a policy other than none
	// accepts unless max-allowable-numa-nodes says more.
	defaultMaxNUMANodes = 8
)

// Options are the parsed topologyManagerPolicyOptions.
type Options struct {
	PreferClosestNUMA bool
	MaxNUMANodes      int
}

// ParseOptions reads topologyManagerPolicyOptions with upstream's rules and
// messages.
func ParseOptions(opts map[string]string) (Options, error) {
	out := Options{MaxNUMANodes: defaultMaxNUMANodes}
	names := make([]string, 0, len(opts))
	for name := range opts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		value := opts[name]
		switch name {
		case OptionPreferClosestNUMA:
			b, err := strconv.ParseBool(value)
			if err != nil {
				return out, fmt.Errorf("bad value for option %q: %w", name, err)
			}
			out.PreferClosestNUMA = b
		case OptionMaxAllowableNUMANodes:
			n, err := strconv.Atoi(value)
			if err != nil {
				return out, fmt.Errorf("unable to convert policy option to integer %q: %w", name, err)
			}
			if n < defaultMaxNUMANodes {
				return out, fmt.Errorf("the minimum value of %q should not be less than %v", name, defaultMaxNUMANodes)
			}
			out.MaxNUMANodes = n
		default:
			return out, fmt.Errorf("unknown Topology Manager Policy option: %q", name)
		}
	}
	return out, nil
}

// NUMA is the machine's NUMA layout: its nodes and, for each, the distance
// to every node (indexed by node ID).
type NUMA struct {
	Nodes     []int
	Distances map[int][]uint64
}

// DiscoverNUMA reads the NUMA nodes and their distances under sysfs
// (/sys/devices/system/node). A machine without that folder is one node, 0.
func DiscoverNUMA(sysfs string) (NUMA, error) {
	out := NUMA{Distances: map[int][]uint64{}}
	dirs, _ := filepath.Glob(filepath.Join(sysfs, "devices/system/node/node[0-9]*"))
	for _, dir := range dirs {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "node"))
		if err != nil {
			continue
		}
		out.Nodes = append(out.Nodes, id)
		raw, err := os.ReadFile(filepath.Join(dir, "distance"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(raw)) {
			d, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return out, fmt.Errorf("NUMA node %d: bad distance %q in %s", id, f, filepath.Join(dir, "distance"))
			}
			out.Distances[id] = append(out.Distances[id], d)
		}
	}
	if len(out.Nodes) == 0 {
		out.Nodes = []int{0}
		out.Distances[0] = []uint64{10}
	}
	sort.Ints(out.Nodes)
	return out, nil
}

// all is the mask of every node.
func (n NUMA) all() Mask { return NewMask(n.Nodes...) }

// averageDistance is the mean distance between the mask's nodes (each pair,
// both ways, and each node to itself).
func (n NUMA) averageDistance(m Mask) float64 {
	var sum, count float64
	for _, a := range m.Nodes() {
		for _, b := range m.Nodes() {
			if b < len(n.Distances[a]) {
				sum += float64(n.Distances[a][b])
			}
			count++
		}
	}
	if count == 0 {
		return 0
	}
	return sum / count
}

// merger picks the best of every combination of the providers' hints, as
// upstream's HintMerger.
type merger struct {
	numa    NUMA
	closest bool // prefer-closest-numa-nodes (never under single-numa-node)
	// bestNonPreferred is the largest of the resources' narrowest hint
	// sizes: no non-preferred merged hint can be narrower than it.
	bestNonPreferred int
}

// better chooses between two masks of equal standing.
func (m merger) better(cur, cand Hint) Hint {
	if cand.Affinity == cur.Affinity {
		return cur
	}
	if m.closest && cur.Affinity.Count() == cand.Affinity.Count() {
		dc, dn := m.numa.averageDistance(cur.Affinity), m.numa.averageDistance(cand.Affinity)
		if dc != dn {
			if dn < dc {
				return cand
			}
			return cur
		}
	}
	if cur.Affinity.NarrowerThan(cand.Affinity) {
		return cur
	}
	return cand
}

func (m merger) compare(cur *Hint, cand Hint) *Hint {
	if cand.Affinity.Count() == 0 {
		return cur
	}
	if cur == nil {
		return &cand
	}
	switch {
	case !cur.Preferred && cand.Preferred:
		return &cand
	case cur.Preferred && !cand.Preferred:
		return cur
	case cur.Preferred && cand.Preferred:
		b := m.better(*cur, cand)
		return &b
	}
	// Both non-preferred: the one closest in size to bestNonPreferred,
	// from above, wins; then the wider of two smaller ones; then as above.
	best := m.bestNonPreferred
	cc, nc := cur.Affinity.Count(), cand.Affinity.Count()
	switch {
	case cc > best:
		b := m.better(*cur, cand)
		return &b
	case cc == best:
		if nc != best {
			return cur
		}
		b := m.better(*cur, cand)
		return &b
	case nc > best:
		return cur
	case nc == best:
		return &cand
	case nc > cc:
		return &cand
	case nc < cc:
		return cur
	}
	b := m.better(*cur, cand)
	return &b
}

// flatten turns the providers' answers into one list of hints per
// resource: a provider or resource with no preference counts as one
// preferred "any" hint, a resource that cannot be placed as one
// non-preferred "any" hint.
func flatten(answers []Hints) [][]Hint {
	var out [][]Hint
	for _, hints := range answers {
		if len(hints) == 0 {
			out = append(out, []Hint{{Preferred: true}})
			continue
		}
		names := make([]string, 0, len(hints))
		for name := range hints {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			switch h := hints[name]; {
			case h == nil:
				out = append(out, []Hint{{Preferred: true}})
			case len(h) == 0:
				out = append(out, []Hint{{Preferred: false}})
			default:
				out = append(out, h)
			}
		}
	}
	return out
}

// merge is the policy's merge: the best hint over every combination of one
// hint per resource, and whether the pod may be admitted with it.
func merge(policy string, opts Options, numa NUMA, answers []Hints) (Hint, bool) {
	lists := flatten(answers)
	if policy == PolicySingleNUMANode {
		for i, list := range lists {
			var kept []Hint
			for _, h := range list {
				if h.Preferred && (h.Affinity == 0 || h.Affinity.Count() == 1) {
					kept = append(kept, h)
				}
			}
			lists[i] = kept
		}
	}
	m := merger{numa: numa, closest: opts.PreferClosestNUMA && policy != PolicySingleNUMANode}
	for _, list := range lists {
		var narrowest Mask
		for _, h := range list {
			if h.Affinity != 0 && (narrowest == 0 || h.Affinity.NarrowerThan(narrowest)) {
				narrowest = h.Affinity
			}
		}
		if narrowest.Count() > m.bestNonPreferred {
			m.bestNonPreferred = narrowest.Count()
		}
	}
	all := numa.all()
	var best *Hint
	combo := make([]Hint, len(lists))
	var walk func(i int)
	walk = func(i int) {
		if i == len(lists) {
			best = m.compare(best, combine(all, combo))
			return
		}
		for _, h := range lists[i] {
			combo[i] = h
			walk(i + 1)
		}
	}
	walk(0)
	out := Hint{Affinity: all}
	if best != nil {
		out = *best
	}
	switch policy {
	case PolicyBestEffort:
		return out, true
	case PolicySingleNUMANode:
		if out.Affinity == all {
			out.Affinity = 0
		}
	}
	return out, out.Preferred
}

// combine ANDs one combination of hints: preferred only when every hint is
// preferred and every hint with nodes names the same nodes.
func combine(all Mask, combo []Hint) Hint {
	out := Hint{Affinity: all, Preferred: true}
	var first Mask
	for _, h := range combo {
		if h.Affinity != 0 {
			if first == 0 {
				first = h.Affinity
			} else if h.Affinity != first {
				out.Preferred = false
			}
			out.Affinity &= h.Affinity
		}
		if !h.Preferred {
			out.Preferred = false
		}
	}
	return out
}
