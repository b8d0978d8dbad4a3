// Package topology is the topology manager: at admission it asks each
// resource manager (devices, CPUs) on which NUMA nodes a container's
// resources could come from, merges their answers under the configured
// policy (none, best-effort, restricted, single-numa-node) and scope
// (container or pod), refuses the pod when the policy says so, and keeps the
// chosen NUMA affinity for the managers' allocation, as upstream's topology
// manager does.
package topology

import (
	"math/bits"
	"strconv"
	"strings"
)

// Mask is a set of NUMA node IDs (0..63), one bit per node. The zero Mask
// stands for "no NUMA preference".
type Mask uint64

// NewMask is the mask of the given nodes.
func NewMask(nodes ...int) Mask {
	var m Mask
	for _, n := range nodes {
		if n >= 0 && n < 64 {
			m |= 1 << uint(n)
		}
	}
	return m
}

// Count is how many nodes the mask holds.
func (m Mask) Count() int { return bits.OnesCount64(uint64(m)) }

// Has says whether node n is in the mask.
func (m Mask) Has(n int) bool { return n >= 0 && n < 64 && m&(1<<uint(n)) != 0 }

// HasAny says whether any of nodes is in the mask.
func (m Mask) HasAny(nodes []int) bool {
	for _, n := range nodes {
		if m.Has(n) {
			return true
		}
	}
	return false
}

// Nodes lists the mask's nodes in increasing order.
func (m Mask) Nodes() []int {
	var out []int
	for n := range 64 {
		if m.Has(n) {
			out = append(out, n)
		}
	}
	return out
}

// NarrowerThan orders masks as upstream does: fewer nodes first, and among
// masks of one size the one with lower-numbered nodes.
func (m Mask) NarrowerThan(o Mask) bool {
	if m.Count() == o.Count() {
		return m < o
	}
	return m.Count() < o.Count()
}

// String lists the nodes, as "0,1" ("" for no preference).
func (m Mask) String() string {
	var parts []string
	for _, n := range m.Nodes() {
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, ",")
}

// EachMask calls fn with every non-empty subset of nodes, smallest first
// (all single nodes, then all pairs, ...), the order upstream's hint
// providers generate their hints in.
func EachMask(nodes []int, fn func(Mask)) {
	var walk func(rest []int, acc Mask, size int)
	walk = func(rest []int, acc Mask, size int) {
		if acc.Count() == size {
			fn(acc)
			return
		}
		for i, n := range rest {
			walk(rest[i+1:], acc|NewMask(n), size)
		}
	}
	for size := 1; size <= len(nodes); size++ {
		walk(nodes, 0, size)
	}
}

// Hint is one possible NUMA placement of a resource request: the nodes it
// would come from (zero: any, no preference) and whether that placement is
// a preferred one (as narrow as the request allows).
type Hint struct {
	Affinity  Mask
	Preferred bool
}

// Hints is what a resource manager answers for one container or pod:
// hints per resource. A resource mapped to nil has no NUMA preference; one
// mapped to an empty, non-nil list cannot be placed at all.
type Hints map[string][]Hint

// Generate builds the hints for a request of n units (CPUs, devices) over
// nodes: one hint per mask whose free units (free's count; free says false
// for a mask that cannot be used at all) hold the request, preferred when
// the mask is as narrow as the narrowest one whose units, free or not
// (total), could hold it. It is upstream's hint generation for CPUs and
// devices, with the counting left to the caller.
func Generate(nodes []int, n int, total func(Mask) int, free func(Mask) (count int, ok bool)) []Hint {
	minSize := len(nodes)
	hints := []Hint{}
	EachMask(nodes, func(m Mask) {
		if total(m) >= n && m.Count() < minSize {
			minSize = m.Count()
		}
		if have, ok := free(m); !ok || have < n {
			return
		}
		hints = append(hints, Hint{Affinity: m})
	})
	for i := range hints {
		hints[i].Preferred = hints[i].Affinity.Count() == minSize
	}
	return hints
}
