package allocation

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/dump"
)

// FileName is the allocation checkpoint's name in the root dir, upstream's.
const FileName = "allocated_pods_state"

// PodResources is what was allocated to one pod: each container's requests
// and limits by name (init containers included), and the pod-level ones.
// The field names are upstream's, as they appear in its file.
type PodResources struct {
	ContainerResources map[string]corev1.ResourceRequirements
	PodLevelResources  *corev1.ResourceRequirements
}

type checkpointData struct {
	Entries map[types.UID]PodResources `json:"entries,omitempty"`
}

// checkpointFile is upstream's layout: the entries serialized to a string,
// and a checksum of that string (FNV-32a over its print for hashing).
type checkpointFile struct {
	Data     string `json:"data"`
	Checksum uint64 `json:"checksum"`
}

func checksum(data string) uint64 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(data))
	return uint64(h.Sum32())
}

// encode is the file's content for these allocations.
func encode(entries map[types.UID]PodResources) ([]byte, error) {
	data, err := json.Marshal(checkpointData{Entries: entries})
	if err != nil {
		return nil, err
	}
	return json.Marshal(checkpointFile{Data: string(data), Checksum: checksum(string(data))})
}

// decode reads a file, refusing one whose checksum does not match.
func decode(b []byte) (map[types.UID]PodResources, error) {
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("allocation checkpoint: %w", err)
	}
	if got := checksum(f.Data); got != f.Checksum {
		return nil, fmt.Errorf("allocation checkpoint is corrupt: checksum %d, want %d", got, f.Checksum)
	}
	var d checkpointData
	if err := json.Unmarshal([]byte(f.Data), &d); err != nil {
		return nil, fmt.Errorf("allocation checkpoint: %w", err)
	}
	if d.Entries == nil {
		d.Entries = map[types.UID]PodResources{}
	}
	return d.Entries, nil
}
