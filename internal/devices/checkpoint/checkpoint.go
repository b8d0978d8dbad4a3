// Package checkpoint reads and writes the device allocations file,
// /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint, as the upstream
// kubelet does: the same JSON and the same checksum, so that either agent
// starts from the other's file. The checksum is FNV-32a over the data printed
// for hashing, and that print names the types with their package: this
// package's name and its types' names and fields are upstream's for that
// reason, and must not change.
package checkpoint

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	"k8s.io/utils/dump"
)

// FileName is the checkpoint's name in the device plugin folder.
const FileName = "kubelet_internal_checkpoint"

// DevicesPerNUMA is device IDs by NUMA node (-1: no topology).
type DevicesPerNUMA map[int64][]string

// PodDevicesEntry is one container's devices of one resource, and the
// plugin's Allocate answer for them (protobuf ContainerAllocateResponse).
type PodDevicesEntry struct {
	PodUID        string
	ContainerName string
	ResourceName  string
	DeviceIDs     DevicesPerNUMA
	AllocResp     []byte
}

type checkpointData struct {
	PodDeviceEntries  []PodDevicesEntry
	RegisteredDevices map[string][]string
}

type file struct {
	Data     checkpointData
	Checksum uint64
}

func checksum(d checkpointData) uint64 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(d))
	return uint64(h.Sum32())
}

// Encode is the file's content for these entries and registered devices
// (healthy device IDs by resource).
func Encode(entries []PodDevicesEntry, registered map[string][]string) ([]byte, error) {
	if entries == nil {
		entries = []PodDevicesEntry{}
	}
	if registered == nil {
		registered = map[string][]string{}
	}
	d := checkpointData{PodDeviceEntries: entries, RegisteredDevices: registered}
	return json.Marshal(file{Data: d, Checksum: checksum(d)})
}

// Decode reads a file, refusing one whose checksum does not match.
func Decode(data []byte) ([]PodDevicesEntry, map[string][]string, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, nil, fmt.Errorf("device checkpoint: %w", err)
	}
	if got := checksum(f.Data); got != f.Checksum {
		return nil, nil, fmt.Errorf("device checkpoint is corrupt: checksum %d, want %d", got, f.Checksum)
	}
	return f.Data.PodDeviceEntries, f.Data.RegisteredDevices, nil
}
