// Package nodestatus registers the Node, keeps its status (addresses,
// capacity, allocatable, conditions, nodeInfo, images) current and renews its
// Lease in kube-node-lease.
package nodestatus

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Machine is what the node reports about its hardware and OS.
type Machine struct {
	Cores           int                          // logical CPUs
	MemoryBytes     int64                        // MemTotal
	MachineID       string                       // /etc/machine-id
	SystemUUID      string                       // DMI product UUID ("" when unreadable)
	BootID          string                       // this boot's ID
	KernelVersion   string                       // uname -r
	OSImage         string                       // PRETTY_NAME of /etc/os-release
	OperatingSystem string                       // GOOS
	Architecture    string                       // GOARCH
	RootFSBytes     int64                        // size of the filesystem holding --root-dir
	RootFSInodes    int64                        // inodes of that filesystem
	HugePages       map[string]resource.Quantity // hugepages-<size> -> total bytes
	SwapOn          bool                         // /proc/swaps lists an active device
	SwapDescription string                       // /proc/swaps, for the failSwapOn message
	SwapBytes       int64                        // SwapTotal
	BootTime        time.Time                    // btime of /proc/stat (zero when unreadable)
}

// ReadMachine reads the machine's facts; rootDir is the agent's --root-dir.
func ReadMachine(rootDir string) (*Machine, error) {
	m := &Machine{
		Cores:           goruntime.NumCPU(),
		OperatingSystem: goruntime.GOOS,
		Architecture:    goruntime.GOARCH,
		MachineID:       firstLine("/etc/machine-id", "/var/lib/dbus/machine-id"),
		SystemUUID:      strings.ToLower(firstLine("/sys/class/dmi/id/product_uuid")),
		BootID:          firstLine("/proc/sys/kernel/random/boot_id"),
		OSImage:         osImage(),
	}
	var err error
	if m.MemoryBytes, err = meminfoBytes("MemTotal:"); err != nil {
		return nil, err
	}
	m.SwapBytes, _ = meminfoBytes("SwapTotal:")
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		m.KernelVersion = unix.ByteSliceToString(uts.Release[:])
	}
	if err := os.MkdirAll(rootDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create root dir %s: %w", rootDir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", rootDir, err)
	}
	m.RootFSBytes = int64(st.Blocks) * st.Bsize
	m.RootFSInodes = int64(st.Files)
	m.HugePages = hugePages()
	m.SwapOn, m.SwapDescription = swapState()
	m.BootTime = bootTime("/proc/stat")
	return m, nil
}

// bootTime is the btime line of /proc/stat: when the machine booted.
func bootTime(stat string) time.Time {
	data, err := os.ReadFile(stat)
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "btime" {
			if secs, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return time.Unix(secs, 0)
			}
		}
	}
	return time.Time{}
}

func firstLine(paths ...string) string {
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil {
			if s := strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]); s != "" {
				return s
			}
		}
	}
	return ""
}

func osImage() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "Unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Unknown"
}

// meminfoBytes reads one /proc/meminfo field in bytes.
func meminfoBytes(field string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == field {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", strings.TrimSuffix(field, ":"))
}

// hugePages reads /sys/kernel/mm/hugepages/hugepages-<N>kB/nr_hugepages.
func hugePages() map[string]resource.Quantity {
	out := map[string]resource.Quantity{}
	dirs, _ := filepath.Glob("/sys/kernel/mm/hugepages/hugepages-*kB")
	for _, d := range dirs {
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(d), "hugepages-"), "kB"), 10, 64)
		if err != nil {
			continue
		}
		n, _ := strconv.ParseInt(firstLine(filepath.Join(d, "nr_hugepages")), 10, 64)
		size := resource.NewQuantity(kb*1024, resource.BinarySI)
		out["hugepages-"+size.String()] = *resource.NewQuantity(n*kb*1024, resource.BinarySI)
	}
	return out
}

// swapState reports whether /proc/swaps lists any device beyond its header.
func swapState() (bool, string) {
	data, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return false, ""
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) <= 1 {
		return false, ""
	}
	var devices []string
	for _, l := range lines[1:] {
		devices = append(devices, strings.Join(strings.Fields(string(l)), " "))
	}
	return true, strings.Join(devices, "; ")
}
