package memorymanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/dump"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// StateFile is the memory manager's state in the root dir, upstream's name.
const StateFile = "memory_manager_state"

// The types below carry upstream's names and fields (its state package):
// the checksum is computed over their printed form, names included.

// MemoryTable is one kind of memory (memory, hugepages-<size>) on one NUMA
// node, in bytes.
type MemoryTable struct {
	TotalMemSize   uint64 `json:"total"`
	SystemReserved uint64 `json:"systemReserved"`
	Allocatable    uint64 `json:"allocatable"`
	Reserved       uint64 `json:"reserved"`
	Free           uint64 `json:"free"`
}

// NUMANodeState is one NUMA node: its memory by kind, how many blocks use
// it, and the group of nodes it is allocated with (itself alone when free).
type NUMANodeState struct {
	NumberOfAssignments int                                  `json:"numberOfAssignments"`
	MemoryMap           map[corev1.ResourceName]*MemoryTable `json:"memoryMap"`
	Cells               []int                                `json:"cells"`
}

// NUMANodeMap is the machine state: every NUMA node by ID.
type NUMANodeMap map[int]*NUMANodeState

// Block is memory of one kind given to a container from a group of nodes.
type Block struct {
	NUMAAffinity []int               `json:"numaAffinity"`
	Type         corev1.ResourceName `json:"type"`
	Size         uint64              `json:"size"`
}

// ContainerMemoryAssignments is the blocks by pod UID and container name.
type ContainerMemoryAssignments map[string]map[string][]Block

// MemoryManagerCheckpoint is upstream's file in the layout it writes while
// its pod-level resource managers are off (the default in v1.36).
type MemoryManagerCheckpoint struct {
	PolicyName   string                     `json:"policyName"`
	MachineState NUMANodeMap                `json:"machineState"`
	Entries      ContainerMemoryAssignments `json:"entries,omitempty"`
	Checksum     uint64                     `json:"checksum"`
}

// sum is upstream's checksum: FNV-32a over the checkpoint (checksum 0)
// printed for hashing, under upstream's type names.
func (c MemoryManagerCheckpoint) sum() uint64 {
	c.Checksum = 0
	s := dump.ForHash(&c)
	s = strings.ReplaceAll(s, "memorymanager.", "state.")
	s = strings.Replace(s, "Checksum:(uint64)", "Checksum:(checksum.Checksum)", 1)
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", s)
	return uint64(h.Sum32())
}

func (m NUMANodeMap) clone() NUMANodeMap {
	out := NUMANodeMap{}
	for id, n := range m {
		c := &NUMANodeState{NumberOfAssignments: n.NumberOfAssignments, Cells: slices.Clone(n.Cells),
			MemoryMap: map[corev1.ResourceName]*MemoryTable{}}
		for name, t := range n.MemoryMap {
			table := *t
			c.MemoryMap[name] = &table
		}
		out[id] = c
	}
	return out
}

func (a ContainerMemoryAssignments) clone() ContainerMemoryAssignments {
	out := ContainerMemoryAssignments{}
	for uid, containers := range a {
		out[uid] = map[string][]Block{}
		for name, blocks := range containers {
			out[uid][name] = cloneBlocks(blocks)
		}
	}
	return out
}

func cloneBlocks(blocks []Block) []Block {
	out := make([]Block, len(blocks))
	for i, b := range blocks {
		out[i] = Block{NUMAAffinity: slices.Clone(b.NUMAAffinity), Type: b.Type, Size: b.Size}
	}
	return out
}

var errNoState = errors.New("no state file")

// readState reads the file; a file for another policy, or whose checksum
// does not match, is an error with upstream's words.
func readState(path, policy string) (*MemoryManagerCheckpoint, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoState
	}
	if err != nil {
		return nil, err
	}
	// As upstream's: the maps exist before the file is read into them, so
	// an omitted "entries" hashes as an empty map.
	c := &MemoryManagerCheckpoint{MachineState: NUMANodeMap{}, Entries: ContainerMemoryAssignments{}}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("checkpoint is corrupted: %w", err)
	}
	if want := c.sum(); c.Checksum != want {
		return nil, fmt.Errorf("checkpoint is corrupted: checksum %d, want %d", c.Checksum, want)
	}
	if c.PolicyName != policy {
		return nil, fmt.Errorf("[memorymanager] configured policy %q differs from state checkpoint policy %q", policy, c.PolicyName)
	}
	if c.MachineState == nil { // "machineState": null
		c.MachineState = NUMANodeMap{}
	}
	if c.Entries == nil {
		c.Entries = ContainerMemoryAssignments{}
	}
	return c, nil
}

// writeState writes the file atomically, its checksum computed as upstream
// computes it.
func writeState(path, policy string, machine NUMANodeMap, entries ContainerMemoryAssignments) error {
	c := MemoryManagerCheckpoint{PolicyName: policy, MachineState: machine.clone(), Entries: entries.clone()}
	c.Checksum = c.sum()
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
