// Package cgroups keeps the pod cgroups of the cgroupfs driver: the QoS
// folders (kubepods, kubepods/burstable, kubepods/besteffort) and one folder
// per pod under its class, with the pod's cpu, memory and pids limits, made
// before the runtime puts the pod's containers inside and removed after.
// Both cgroup v1 (one hierarchy per controller) and v2 (one unified tree).
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
)

// Limits are a pod cgroup's settings; zero values leave a setting alone.
type Limits struct {
	CPUShares   uint64 // cpu.shares (v1) or the matching cpu.weight (v2)
	CPUQuotaUS  int64  // CFS quota per period, -1 or 0: none
	CPUPeriodUS uint64 // CFS period
	MemoryBytes int64  // memory limit, 0: none
	Pids        int64  // pids.max, 0: none
}

// Manager writes cgroups under Root (/sys/fs/cgroup).
type Manager struct {
	Root string
	v2   bool
}

// controllers are the v1 hierarchies a pod cgroup is made in.
var controllers = []string{"cpu", "cpuacct", "memory", "pids"}

// New detects the cgroup version under root.
func New(root string) *Manager {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return &Manager{Root: root, v2: err == nil}
}

// V2 reports whether the unified hierarchy is in use.
func (m *Manager) V2() bool { return m.v2 }

// SwapController reports whether the kernel accounts swap per cgroup, as
// upstream checks it: memory.memsw.limit_in_bytes on v1, memory.swap.max
// in the agent's own cgroup on v2 (the root has none).
func (m *Manager) SwapController() bool {
	p := filepath.Join(m.Root, "memory", "memory.memsw.limit_in_bytes")
	if m.v2 {
		data, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return false
		}
		self := ""
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				self = rest
			}
		}
		p = filepath.Join(m.Root, self, "memory.swap.max")
	}
	_, err := os.Stat(p)
	return err == nil
}

// dirs are the folders of cgroup path name, one per hierarchy.
func (m *Manager) dirs(name string) map[string]string {
	name = filepath.Clean("/" + name)
	if m.v2 {
		return map[string]string{"": filepath.Join(m.Root, name)}
	}
	out := map[string]string{}
	for _, c := range controllers {
		if _, err := os.Stat(filepath.Join(m.Root, c)); err == nil {
			out[c] = filepath.Join(m.Root, c, name)
		}
	}
	return out
}

// Ensure makes cgroup name (e.g. /kubepods/burstable/pod<uid>) with limits.
func (m *Manager) Ensure(name string, l Limits) error {
	if m.v2 {
		if err := m.enableControllers(name); err != nil {
			return err
		}
	}
	defer cgroupstats.LimitsChangedOf(name) // the statistics read the new limits
	for ctrl, dir := range m.dirs(name) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for file, value := range m.settings(ctrl, l) {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
				return fmt.Errorf("cgroup %s: set %s to %s: %w", dir, file, value, err)
			}
		}
	}
	return nil
}

// Update sets limits on cgroup name, which something else made (a
// systemd slice for the system's or the node agent's reserved resources):
// one missing in a hierarchy is an error, never made here.
func (m *Manager) Update(name string, l Limits) error {
	dirs := m.dirs(name)
	var missing []string
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			missing = append(missing, dir)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("cgroup %q has some missing paths: %v", name, strings.Join(missing, ", "))
	}
	defer cgroupstats.LimitsChangedOf(name)
	for ctrl, dir := range dirs {
		for file, value := range m.settings(ctrl, l) {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
				return fmt.Errorf("cgroup %s: set %s to %s: %w", dir, file, value, err)
			}
		}
	}
	return nil
}

// MemoryUsage reads cgroup name's memory usage in bytes (memory.current on
// v2, memory.usage_in_bytes on v1).
func (m *Manager) MemoryUsage(name string) (int64, error) {
	dir, file := m.dirs(name)[""], "memory.current"
	if !m.v2 {
		dir, file = m.dirs(name)["memory"], "memory.usage_in_bytes"
	}
	if dir == "" {
		return 0, fmt.Errorf("cgroup %s: no memory controller", name)
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", name, err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// settings are the files to write for one hierarchy ("" on v2).
func (m *Manager) settings(ctrl string, l Limits) map[string]string {
	s := map[string]string{}
	if m.v2 {
		if l.CPUShares > 0 {
			s["cpu.weight"] = strconv.FormatUint(SharesToWeight(l.CPUShares), 10)
		}
		if l.CPUPeriodUS > 0 {
			quota := "max"
			if l.CPUQuotaUS > 0 {
				quota = strconv.FormatInt(l.CPUQuotaUS, 10)
			}
			s["cpu.max"] = quota + " " + strconv.FormatUint(l.CPUPeriodUS, 10)
		}
		if l.MemoryBytes > 0 {
			s["memory.max"] = strconv.FormatInt(l.MemoryBytes, 10)
		}
		if l.Pids > 0 {
			s["pids.max"] = strconv.FormatInt(l.Pids, 10)
		}
		return s
	}
	switch ctrl {
	case "cpu":
		if l.CPUShares > 0 {
			s["cpu.shares"] = strconv.FormatUint(l.CPUShares, 10)
		}
		if l.CPUPeriodUS > 0 {
			s["cpu.cfs_period_us"] = strconv.FormatUint(l.CPUPeriodUS, 10)
			quota := int64(-1)
			if l.CPUQuotaUS > 0 {
				quota = l.CPUQuotaUS
			}
			s["cpu.cfs_quota_us"] = strconv.FormatInt(quota, 10)
		}
	case "memory":
		if l.MemoryBytes > 0 {
			s["memory.limit_in_bytes"] = strconv.FormatInt(l.MemoryBytes, 10)
		}
	case "pids":
		if l.Pids > 0 {
			s["pids.max"] = strconv.FormatInt(l.Pids, 10)
		}
	}
	return s
}

// enableControllers turns on cpu, memory and pids for the children of every
// ancestor of name (v2 delegates controllers level by level).
func (m *Manager) enableControllers(name string) error {
	avail, err := os.ReadFile(filepath.Join(m.Root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	var want []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if strings.Contains(" "+strings.TrimSpace(string(avail))+" ", " "+c+" ") {
			want = append(want, "+"+c)
		}
	}
	dir := m.Root
	for _, part := range strings.Split(strings.Trim(filepath.Clean("/"+name), "/"), "/") {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0o644); err != nil {
			return fmt.Errorf("cgroup %s: enable %v: %w", dir, want, err)
		}
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes cgroup name and the empty folders its runtime left inside
// (a container's cgroup, once its processes are gone). A cgroup that still
// has processes stays, and the error says so.
func (m *Manager) Remove(name string) error {
	var errs []error
	for _, dir := range m.dirs(name) {
		if err := removeTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// Missing lists the hierarchies ("" on v2) in which cgroup name does not
// exist; on v1 every hierarchy a pod cgroup is made in is checked.
func (m *Manager) Missing(name string) []string {
	var missing []string
	for ctrl, dir := range m.dirs(name) {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			missing = append(missing, filepath.Join(m.Root, ctrl))
		}
	}
	slices.Sort(missing)
	return missing
}

// Children lists the pod cgroups (pod<uid>) under a QoS cgroup.
func (m *Manager) Children(name string) []string {
	var dir string
	for _, d := range m.dirs(name) {
		dir = d
		break
	}
	if !m.v2 {
		dir = filepath.Join(m.Root, "memory", filepath.Clean("/"+name))
	}
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "pod") {
			out = append(out, e.Name())
		}
	}
	return out
}

// SharesToWeight maps cpu.shares [2, 262144] onto cpu.weight [1, 10000] as
// the OCI runtimes do.
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	return 1 + ((shares-2)*9999)/262142
}
