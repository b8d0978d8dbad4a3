package cpumanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"

	"k8s.io/utils/cpuset"
	"k8s.io/utils/dump"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// StateFile is the CPU manager's state in the root dir, upstream's name.
const StateFile = "cpu_manager_state"

// checkpoint is upstream's file (its "v2" layout, which it writes while its
// pod-level resource managers are off, as in v1.36 by default): the policy,
// the shared pool, and each container's exclusive CPUs by pod UID and
// container name.
type checkpoint struct {
	PolicyName    string                       `json:"policyName"`
	DefaultCPUSet string                       `json:"defaultCpuSet"`
	Entries       map[string]map[string]string `json:"entries,omitempty"`
	Checksum      uint64                       `json:"checksum"`
}

// sum is upstream's checksum: FNV-32a over the checkpoint (checksum 0)
// printed for hashing, under upstream's type names.
func (c checkpoint) sum() uint64 {
	c.Checksum = 0
	s := dump.ForHash(&c)
	s = strings.Replace(s, "(*cpumanager.checkpoint)", "(*state.CPUManagerCheckpoint)", 1)
	s = strings.Replace(s, "Checksum:(uint64)", "Checksum:(checksum.Checksum)", 1)
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", s)
	return uint64(h.Sum32())
}

// state is what the checkpoint holds, parsed.
type state struct {
	defaultSet  cpuset.CPUSet
	assignments map[string]map[string]cpuset.CPUSet // pod UID -> container -> CPUs
}

func (s *state) encode(policy string) ([]byte, error) {
	// Entries is never nil: upstream's is made empty, and the hash tells
	// an empty map from none.
	c := checkpoint{PolicyName: policy, DefaultCPUSet: s.defaultSet.String(), Entries: map[string]map[string]string{}}
	for uid, containers := range s.assignments {
		for name, set := range containers {
			if c.Entries[uid] == nil {
				c.Entries[uid] = map[string]string{}
			}
			c.Entries[uid][name] = set.String()
		}
	}
	c.Checksum = c.sum()
	return json.Marshal(c)
}

// errNoState is a missing state file.
var errNoState = errors.New("no CPU manager state file")

// readState reads the file for the configured policy, refusing a corrupt
// file or one another policy wrote, as upstream does.
func readState(path, policy string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoState
	}
	if err != nil {
		return nil, err
	}
	c := checkpoint{Entries: map[string]map[string]string{}} // as upstream reads it
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s is not a CPU manager state file: %w", path, err)
	}
	if c.Checksum != 0 { // upstream accepts a file without one
		if got := c.sum(); got != c.Checksum {
			return nil, fmt.Errorf("%s is corrupt: checksum %d, want %d", path, got, c.Checksum)
		}
	}
	if c.PolicyName != policy {
		return nil, fmt.Errorf("configured policy %q differs from state checkpoint policy %q", policy, c.PolicyName)
	}
	s := &state{assignments: map[string]map[string]cpuset.CPUSet{}}
	if s.defaultSet, err = cpuset.Parse(c.DefaultCPUSet); err != nil {
		return nil, fmt.Errorf("could not parse default cpu set %q: %w", c.DefaultCPUSet, err)
	}
	for uid, containers := range c.Entries {
		s.assignments[uid] = map[string]cpuset.CPUSet{}
		for name, v := range containers {
			set, err := cpuset.Parse(v)
			if err != nil {
				return nil, fmt.Errorf("could not parse cpuset %q for container %q in pod %q: %w", v, name, uid, err)
			}
			s.assignments[uid][name] = set
		}
	}
	return s, nil
}

func writeState(path, policy string, s *state) error {
	data, err := s.encode(policy)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
