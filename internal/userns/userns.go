// Package userns gives pods with hostUsers: false their own user namespace:
// a range of host IDs per pod, idsPerPod long (65536 by default), taken from
// the agent's range and never shared by two pods. The range is kept in
// upstream's <root-dir>/pods/<uid>/userns file, so that it survives the
// agent's restarts and either agent reads what the other wrote; it is freed
// once the pod has stopped for good.
//
// The agent's range is upstream's: the subordinate IDs of the "kubelet"
// user as getsubids reports them when that user exists, else every ID from
// idsPerPod up to 2^32.
package userns

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// Unit is the length every range is a multiple of.
const Unit = 65536

// fileName is upstream's mappings file in the pod's folder.
const fileName = "userns"

// mappings is upstream's file format.
type mappings struct {
	UIDMappings []idMapping `json:"uidMappings"`
	GIDMappings []idMapping `json:"gidMappings"`
}

type idMapping struct {
	HostID      uint32 `json:"hostId"`
	ContainerID uint32 `json:"containerId"`
	Length      uint32 `json:"length"`
}

// Config wires a Manager.
type Config struct {
	RootDir   string
	IDsPerPod uint32 // 0: 65536
	MaxPods   int
	// Supports tells whether the pod's runtime handler can run user
	// namespaces, and the handler's name ("" the default).
	Supports func(pod *corev1.Pod) (ok bool, handler string, err error)
	// Range is the agent's ID range (nil: upstream's lookup).
	Range func(idsPerPod uint32) (first, length uint32, err error)
}

// Manager hands out and keeps the pods' ranges.
type Manager struct {
	cfg    Config
	length uint32 // IDs per pod
	first  int    // the agent's first range, in ranges of length
	count  int    // how many ranges the agent has
	mu     sync.Mutex
	used   map[int]types.UID // range index -> pod
	byPod  map[types.UID]int
}

// New checks the agent's range as upstream does and records the ranges the
// pods on disk hold.
func New(cfg Config) (*Manager, error) {
	length := cfg.IDsPerPod
	if length == 0 {
		length = Unit
	}
	if length%Unit != 0 {
		return nil, fmt.Errorf("user namespaces: idsPerPod %d is not a multiple of %d", length, Unit)
	}
	if cfg.Range == nil {
		cfg.Range = agentRange
	}
	first, n, err := cfg.Range(length)
	if err != nil {
		return nil, fmt.Errorf("user namespaces: the agent's ID range: %w", err)
	}
	switch {
	case first%length != 0:
		return nil, fmt.Errorf("user namespaces: the agent's first ID %d is not a multiple of %d", first, length)
	case first < length:
		return nil, fmt.Errorf("user namespaces: the agent's first ID %d must be at least %d: ID 0 is never mapped", first, length)
	case n%length != 0:
		return nil, fmt.Errorf("user namespaces: the agent's %d IDs are not a multiple of %d", n, length)
	case int(n/length) < cfg.MaxPods:
		return nil, fmt.Errorf("user namespaces: the agent's %d IDs are not enough for maxPods %d pods of %d IDs", n, cfg.MaxPods, length)
	}
	m := &Manager{cfg: cfg, length: length, first: int(first / length), count: int(n / length),
		used: map[int]types.UID{}, byPod: map[types.UID]int{}}
	dirs, err := os.ReadDir(filepath.Join(cfg.RootDir, "pods"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, d := range dirs {
		uid := types.UID(d.Name())
		if _, err := m.load(uid); err != nil {
			return nil, fmt.Errorf("user namespaces: pod %s: %w", uid, err)
		}
	}
	return m, nil
}

func (m *Manager) path(uid types.UID) string {
	return filepath.Join(m.cfg.RootDir, "pods", string(uid), fileName)
}

// load reads and records a pod's file; nil when it has none.
func (m *Manager) load(uid types.UID) (*mappings, error) {
	data, err := os.ReadFile(m.path(uid))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var mp mappings
	if err := json.Unmarshal(data, &mp); err != nil {
		return nil, fmt.Errorf("invalid user namespace mappings file %s: %w", m.path(uid), err)
	}
	if len(mp.UIDMappings) != 1 || len(mp.GIDMappings) != 1 || mp.UIDMappings[0] != mp.GIDMappings[0] {
		return nil, fmt.Errorf("invalid user namespace mappings file %s: want one mapping, the same for UIDs and GIDs", m.path(uid))
	}
	u := mp.UIDMappings[0]
	if u.ContainerID != 0 {
		return nil, fmt.Errorf("invalid user namespace mappings file %s: ID 0 must be mapped", m.path(uid))
	}
	if u.Length != m.length || u.HostID%m.length != 0 {
		return nil, fmt.Errorf("invalid user namespace mappings file %s: range %d+%d is not one of %d IDs", m.path(uid), u.HostID, u.Length, m.length)
	}
	i := int(u.HostID/m.length) - m.first
	if i < 0 || i >= m.count {
		return nil, fmt.Errorf("user namespace range %d+%d of pod %s is outside the agent's", u.HostID, u.Length, uid)
	}
	if owner, taken := m.used[i]; taken && owner != uid {
		return nil, fmt.Errorf("user namespace range %d+%d of pod %s is already pod %s's", u.HostID, u.Length, uid, owner)
	}
	if prev, ok := m.byPod[uid]; ok && prev != i {
		return nil, fmt.Errorf("pod %s has two user namespace ranges", uid)
	}
	m.used[i], m.byPod[uid] = uid, i
	return &mp, nil
}

// Namespace is the pod's user namespace option for CRI: the node's unless
// it asks for hostUsers: false, then its own range, allocated and written
// the first time.
func (m *Manager) Namespace(pod *corev1.Pod) (*runtimeapi.UserNamespace, error) {
	if pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}, nil
	}
	if m == nil {
		return nil, errors.New("can't set `spec.hostUsers: false`, user namespaces are not set up on this node")
	}
	if m.cfg.Supports != nil {
		ok, handler, err := m.cfg.Supports(pod)
		if err != nil || !ok {
			msg := "can't set `spec.hostUsers: false`, runtime does not support user namespaces"
			if handler != "" {
				msg = fmt.Sprintf("can't set `spec.hostUsers: false`, RuntimeClass handler %q does not support user namespaces", handler)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", msg, err)
			}
			return nil, errors.New(msg)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mp, err := m.load(pod.UID)
	if err != nil {
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	if mp == nil {
		if mp, err = m.allocate(pod.UID); err != nil {
			return nil, fmt.Errorf("create user namespace: %w", err)
		}
	}
	u := mp.UIDMappings[0]
	ids := []*runtimeapi.IDMapping{{HostId: u.HostID, ContainerId: u.ContainerID, Length: u.Length}}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids,
		Gids: []*runtimeapi.IDMapping{{HostId: u.HostID, ContainerId: u.ContainerID, Length: u.Length}}}, nil
}

// allocate takes the first free range for uid and writes its file.
func (m *Manager) allocate(uid types.UID) (*mappings, error) {
	i := 0
	for ; i < m.count; i++ {
		if _, taken := m.used[i]; !taken {
			break
		}
	}
	if i == m.count {
		return nil, errors.New("could not find an empty slot to allocate a user namespace")
	}
	one := idMapping{HostID: uint32(m.first+i) * m.length, ContainerID: 0, Length: m.length}
	mp := &mappings{UIDMappings: []idMapping{one}, GIDMappings: []idMapping{one}}
	data, err := json.Marshal(mp)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(m.path(uid)), 0o750); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(m.path(uid), data, 0o600); err != nil {
		return nil, err
	}
	m.used[i], m.byPod[uid] = uid, i
	return mp, nil
}

// Release frees the pod's range and removes its file: the pod has stopped
// for good.
func (m *Manager) Release(uid types.UID) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.byPod[uid]
	if !ok {
		return
	}
	_ = os.Remove(m.path(uid))
	delete(m.byPod, uid)
	delete(m.used, i)
}

// agentRange is upstream's lookup: the "kubelet" user's subordinate IDs
// from getsubids (the same for UIDs and GIDs), or, without that user or
// that tool, every ID from idsPerPod up.
func agentRange(idsPerPod uint32) (uint32, uint32, error) {
	all := uint32((1 << 32) - uint64(idsPerPod))
	if _, err := user.Lookup("kubelet"); err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return idsPerPod, all, nil
		}
		return 0, 0, err
	}
	cmd, err := exec.LookPath("getsubids")
	if err != nil {
		return idsPerPod, all, nil
	}
	uids, err := exec.Command(cmd, "kubelet").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("getsubids kubelet: %w", err)
	}
	gids, err := exec.Command(cmd, "-g", "kubelet").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("getsubids -g kubelet: %w", err)
	}
	if string(uids) != string(gids) {
		return 0, 0, errors.New(`the subordinate UIDs and GIDs of user "kubelet" differ`)
	}
	return parseSubIDs(string(uids))
}

// parseSubIDs reads getsubids' one line: "0: kubelet 65536 2147483648".
func parseSubIDs(out string) (uint32, uint32, error) {
	lines := strings.Split(strings.Trim(out, "\n"), "\n")
	if len(lines) != 1 {
		return 0, 0, fmt.Errorf("getsubids gave %q: want exactly one range", out)
	}
	f := strings.Fields(lines[0])
	if len(f) != 4 {
		return 0, 0, fmt.Errorf("getsubids gave %q: want \"N: user first count\"", out)
	}
	first, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("getsubids gave %q: %w", out, err)
	}
	n, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("getsubids gave %q: %w", out, err)
	}
	return uint32(first), uint32(n), nil
}
