package eviction

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// meminfo reads /proc/meminfo in bytes.
func meminfo() (map[string]int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			out[strings.TrimSuffix(f[0], ":")] = v * 1024
		}
	}
	return out, nil
}

// workingSet is the memory the machine uses less what it may drop at once:
// the root memory cgroup's usage less its inactive file pages where cgroup
// v1 gives them (as cAdvisor reads them for upstream's memory.available),
// else MemTotal less MemFree less Inactive(file).
func workingSet(mem map[string]int64) int64 {
	usage, inactive := readInt("/sys/fs/cgroup/memory/memory.usage_in_bytes"), int64(-1)
	if usage >= 0 {
		inactive = statValue("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")
	}
	if usage < 0 || inactive < 0 {
		usage, inactive = mem["MemTotal"]-mem["MemFree"], mem["Inactive(file)"]
	}
	return max(usage-inactive, 0)
}

// pids is the machine's process ID limit (the lower of pid_max and
// threads-max) and how many of them are free.
func pids() (capacity, available int64) {
	capacity = readInt("/proc/sys/kernel/pid_max")
	if tm := readInt("/proc/sys/kernel/threads-max"); tm > 0 && (capacity < 0 || tm < capacity) {
		capacity = tm
	}
	var info unix.Sysinfo_t
	if capacity <= 0 || unix.Sysinfo(&info) != nil {
		return 0, -1
	}
	return capacity, capacity - int64(info.Procs)
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func statValue(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
