package cpumanager

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/utils/cpuset"
)

// CPU is where one logical CPU sits.
type CPU struct {
	Core   int // the lowest logical CPU of its core (core IDs repeat across sockets)
	Socket int
	NUMA   int
}

// Topology maps the node's online logical CPUs to cores, sockets and NUMA
// nodes.
type Topology map[int]CPU

// Discover reads the topology under sysfs ("/sys" on a node).
func Discover(sysfs string) (Topology, error) {
	cpuDir := filepath.Join(sysfs, "devices", "system", "cpu")
	online, err := readSet(filepath.Join(cpuDir, "online"))
	if err != nil {
		return nil, fmt.Errorf("unable to discover CPU topology info: %w", err)
	}
	numa := map[int]int{}
	nodes, _ := filepath.Glob(filepath.Join(sysfs, "devices", "system", "node", "node[0-9]*"))
	for _, n := range nodes {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(n), "node"))
		if err != nil {
			continue
		}
		cpus, err := readSet(filepath.Join(n, "cpulist"))
		if err != nil {
			return nil, fmt.Errorf("unable to discover CPU topology info: %w", err)
		}
		for _, c := range cpus.UnsortedList() {
			numa[c] = id
		}
	}
	t := Topology{}
	for _, c := range online.List() {
		dir := filepath.Join(cpuDir, fmt.Sprintf("cpu%d", c), "topology")
		siblings, err := readSet(filepath.Join(dir, "thread_siblings_list"))
		if err != nil {
			return nil, fmt.Errorf("unable to discover CPU topology info: %w", err)
		}
		socket, err := readInt(filepath.Join(dir, "physical_package_id"))
		if err != nil {
			return nil, fmt.Errorf("unable to discover CPU topology info: %w", err)
		}
		core := c
		if online := siblings.Intersection(online); online.Size() > 0 {
			core = online.List()[0]
		}
		t[c] = CPU{Core: core, Socket: socket, NUMA: numa[c]} // no NUMA folder: node 0
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("unable to discover CPU topology info: no online CPUs in %s", cpuDir)
	}
	return t, nil
}

func readSet(path string) (cpuset.CPUSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return cpuset.New(), err
	}
	set, err := cpuset.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		return cpuset.New(), fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

func readInt(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// CPUs is every CPU.
func (t Topology) CPUs() cpuset.CPUSet {
	ids := make([]int, 0, len(t))
	for c := range t {
		ids = append(ids, c)
	}
	return cpuset.New(ids...)
}

// group is the CPUs of each core, socket or NUMA node among set.
func (t Topology) group(set cpuset.CPUSet, key func(CPU) int) map[int]cpuset.CPUSet {
	ids := map[int][]int{}
	for _, c := range set.UnsortedList() {
		k := key(t[c])
		ids[k] = append(ids[k], c)
	}
	out := make(map[int]cpuset.CPUSet, len(ids))
	for k, v := range ids {
		out[k] = cpuset.New(v...)
	}
	return out
}

func byCore(c CPU) int   { return c.Core }
func bySocket(c CPU) int { return c.Socket }
func byNUMA(c CPU) int   { return c.NUMA }

// counts is how many distinct sockets and NUMA nodes there are, and the
// CPUs per core and per socket.
func (t Topology) counts() (sockets, numas, perCore, perSocket int) {
	all := t.CPUs()
	s, n, c := t.group(all, bySocket), t.group(all, byNUMA), t.group(all, byCore)
	return len(s), len(n), all.Size() / max(len(c), 1), all.Size() / max(len(s), 1)
}

// take picks n CPUs from available as upstream's static policy does by
// default ("packed"): whole NUMA nodes and sockets first (in the order of
// the larger unit of the two), then whole cores, then single CPUs, each
// time from the units with the fewest free CPUs, lowest ID first, so that
// what stays free is as whole as possible.
func (t Topology) take(available cpuset.CPUSet, n int) (cpuset.CPUSet, error) {
	if n <= 0 {
		return cpuset.New(), nil
	}
	if n > available.Size() {
		return cpuset.New(), fmt.Errorf("not enough cpus available to satisfy request: requested=%d, available=%d", n, available.Size())
	}
	all := t.CPUs()
	sockets, numas, perCore, perSocket := t.counts()
	result := cpuset.New()
	free := available
	need := n
	grab := func(set cpuset.CPUSet) {
		result = result.Union(set)
		free = free.Difference(set)
		need -= set.Size()
	}
	// order sorts unit IDs by their free CPUs, fewest first, then by ID,
	// within the order of the enclosing units.
	order := func(groups map[int]cpuset.CPUSet, ids []int) {
		sort.SliceStable(ids, func(i, j int) bool {
			a, b := groups[ids[i]].Size(), groups[ids[j]].Size()
			if a != b {
				return a < b
			}
			return ids[i] < ids[j]
		})
	}
	sorted := func(key func(CPU) int) []int {
		groups := t.group(free, key)
		ids := make([]int, 0, len(groups))
		for id := range groups {
			ids = append(ids, id)
		}
		order(groups, ids)
		return ids
	}
	// outerKey is the larger of socket and NUMA node; cores are ordered
	// within it.
	outerKey, innerKey := byNUMA, bySocket
	if sockets < numas {
		outerKey, innerKey = bySocket, byNUMA
	}
	takeWhole := func(key func(CPU) int, size func(id int) int) {
		for _, id := range sorted(key) {
			unit := t.group(free, key)[id]
			if unit.Size() != size(id) || need < unit.Size() {
				continue
			}
			grab(unit)
		}
	}
	numaSize := func(id int) int { return t.group(all, byNUMA)[id].Size() }
	socketSize := func(int) int { return perSocket }
	first, second := func() { takeWhole(byNUMA, numaSize) }, func() { takeWhole(bySocket, socketSize) }
	if sockets < numas {
		first, second = second, first
	}
	if first(); need == 0 {
		return result, nil
	}
	if second(); need == 0 {
		return result, nil
	}
	coresInOrder := func() []int {
		var out []int
		for _, outer := range sorted(outerKey) {
			inFree := free.Intersection(t.group(free, outerKey)[outer])
			innerGroups := t.group(inFree, innerKey)
			innerIDs := make([]int, 0, len(innerGroups))
			for id := range innerGroups {
				innerIDs = append(innerIDs, id)
			}
			order(innerGroups, innerIDs)
			for _, inner := range innerIDs {
				cores := t.group(innerGroups[inner], byCore)
				ids := make([]int, 0, len(cores))
				for id := range cores {
					ids = append(ids, id)
				}
				order(cores, ids)
				out = append(out, ids...)
			}
		}
		return out
	}
	for _, core := range coresInOrder() {
		set := t.group(free, byCore)[core]
		if set.Size() == perCore && need >= perCore {
			grab(set)
		}
	}
	if need == 0 {
		return result, nil
	}
	for _, core := range coresInOrder() {
		for _, c := range t.group(free, byCore)[core].List() {
			if need == 0 {
				return result, nil
			}
			grab(cpuset.New(c))
		}
	}
	if need > 0 {
		return cpuset.New(), fmt.Errorf("failed to allocate cpus")
	}
	return result, nil
}
