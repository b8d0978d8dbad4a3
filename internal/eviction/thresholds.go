package eviction

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Value is an amount of a signal: a quantity, or a percentage of its
// capacity.
type Value struct {
	Quantity *resource.Quantity
	Percent  float64 // 0..100
}

// of is the value's absolute amount for capacity.
func (v Value) of(capacity int64) int64 {
	if v.Quantity != nil {
		return v.Quantity.Value()
	}
	return int64(float64(capacity) * v.Percent / 100)
}

func (v Value) String() string {
	if v.Quantity != nil {
		return v.Quantity.String()
	}
	return strconv.FormatFloat(v.Percent, 'f', -1, 64) + "%"
}

// Threshold is one eviction threshold: its signal is met when less than
// Value is available.
type Threshold struct {
	Signal string
	Value
	// GracePeriod is how long a soft threshold must be met before pods are
	// evicted for it (0: a hard threshold, at once).
	GracePeriod time.Duration
	// MinReclaim, once the threshold is met, is what must be available
	// above it before it stops counting (evictionMinimumReclaim).
	MinReclaim *Value
}

// Hard reports whether the threshold evicts at once.
func (t Threshold) Hard() bool { return t.GracePeriod == 0 }

// limit is the threshold's absolute value for capacity.
func (t Threshold) limit(capacity int64) int64 { return t.of(capacity) }

func (t Threshold) String() string {
	kind := "hard"
	if !t.Hard() {
		kind = "soft, grace period " + t.GracePeriod.String()
	}
	return fmt.Sprintf("%s<%s (%s)", t.Signal, t.Value, kind)
}

// signalResource is the resource each signal's pressure reclaims, as
// upstream names it in its eviction messages.
var signalResource = map[string]corev1.ResourceName{
	"memory.available":            corev1.ResourceMemory,
	"allocatableMemory.available": corev1.ResourceMemory,
	"nodefs.available":            corev1.ResourceEphemeralStorage,
	"imagefs.available":           corev1.ResourceEphemeralStorage,
	"containerfs.available":       corev1.ResourceEphemeralStorage,
	"nodefs.inodesFree":           resourceInodes,
	"imagefs.inodesFree":          resourceInodes,
	"containerfs.inodesFree":      resourceInodes,
	"pid.available":               resourcePIDs,
}

const (
	resourceInodes corev1.ResourceName = "inodes"
	resourcePIDs   corev1.ResourceName = "pids"
)

// ParseThresholds reads evictionHard alone.
func ParseThresholds(hard map[string]string) ([]Threshold, error) {
	return ParseConfig(hard, nil, nil, nil)
}

// ParseConfig reads evictionHard, evictionSoft with evictionSoftGracePeriod,
// and evictionMinimumReclaim, with upstream's rules: every soft threshold
// needs its grace period, "0%" and "100%" turn a threshold off, and a
// quantity threshold must be positive.
func ParseConfig(hard, soft, softGrace, minReclaim map[string]string) ([]Threshold, error) {
	var out []Threshold
	for _, part := range []struct {
		field      string
		statements map[string]string
	}{{"evictionHard", hard}, {"evictionSoft", soft}} {
		for _, signal := range sortedKeys(part.statements) {
			if _, ok := signalResource[signal]; !ok {
				return nil, fmt.Errorf("%s: unsupported eviction signal %s", part.field, signal)
			}
			v := part.statements[signal]
			if v == "0%" || v == "100%" {
				continue
			}
			val, err := parseValue(v)
			if err != nil {
				return nil, fmt.Errorf("%s[%s]: %w", part.field, signal, err)
			}
			if val.Quantity != nil && val.Quantity.Sign() <= 0 {
				return nil, fmt.Errorf("%s[%s]: eviction threshold %s must be positive: %s", part.field, signal, signal, val.Quantity)
			}
			t := Threshold{Signal: signal, Value: val}
			if part.field == "evictionSoft" {
				g, ok := softGrace[signal]
				if !ok {
					return nil, fmt.Errorf("evictionSoftGracePeriod: grace period must be specified for the soft eviction threshold %s", signal)
				}
				d, err := time.ParseDuration(g)
				if err != nil || d < 0 {
					return nil, fmt.Errorf("evictionSoftGracePeriod[%s]: invalid eviction grace period %q, must be a positive duration", signal, g)
				}
				t.GracePeriod = d
			}
			out = append(out, t)
		}
	}
	for _, signal := range sortedKeys(softGrace) {
		if _, ok := signalResource[signal]; !ok {
			return nil, fmt.Errorf("evictionSoftGracePeriod: unsupported eviction signal %s", signal)
		}
	}
	for _, signal := range sortedKeys(minReclaim) {
		if _, ok := signalResource[signal]; !ok {
			return nil, fmt.Errorf("evictionMinimumReclaim: unsupported eviction signal %s", signal)
		}
		val, err := parseValue(minReclaim[signal])
		if err != nil {
			return nil, fmt.Errorf("evictionMinimumReclaim[%s]: %w", signal, err)
		}
		if val.Quantity != nil && val.Quantity.Sign() < 0 || val.Quantity == nil && val.Percent <= 0 {
			return nil, fmt.Errorf("evictionMinimumReclaim[%s]: must be positive: %s", signal, minReclaim[signal])
		}
		for i := range out {
			if out[i].Signal == signal {
				out[i].MinReclaim = &val
			}
		}
	}
	return out, nil
}

func parseValue(v string) (Value, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return Value{}, fmt.Errorf("bad percentage %q: %w", v, err)
		}
		if f < 0 || f > 100 {
			return Value{}, fmt.Errorf("percentage %q must be between 0%% and 100%%", v)
		}
		return Value{Percent: f}, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return Value{}, fmt.Errorf("bad quantity %q: %w", v, err)
	}
	return Value{Quantity: &q}, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// observed is what the signals say of one threshold's signal: available and
// capacity (available -1 when the signal is not observed).
func observed(signal string, s Signals) (avail, capacity int64) {
	switch signal {
	case "memory.available":
		return s.MemoryAvailable, s.MemoryCapacity
	case "nodefs.available", "imagefs.available", "containerfs.available":
		return s.NodeFsAvailable, s.NodeFsCapacity
	case "nodefs.inodesFree", "imagefs.inodesFree", "containerfs.inodesFree":
		return s.NodeFsInodesFree, s.NodeFsInodes
	case "pid.available":
		return s.PIDAvailable, s.PIDCapacity
	}
	return -1, 0
}

// met reports whether the signals are under the threshold; with
// minReclaim, under the threshold raised by its minimum reclaim.
func (t Threshold) met(s Signals, minReclaim bool) bool {
	avail, capacity := observed(t.Signal, s)
	if avail < 0 || capacity == 0 {
		return false
	}
	limit := t.limit(capacity)
	if minReclaim && t.MinReclaim != nil {
		limit += t.MinReclaim.of(capacity)
	}
	return avail < limit
}

// Crossed returns the thresholds the signals are under.
func Crossed(ts []Threshold, s Signals) []Threshold {
	var out []Threshold
	for _, t := range ts {
		if t.met(s, false) {
			out = append(out, t)
		}
	}
	return out
}

// isMemory: the signal's pressure is MemoryPressure (else DiskPressure).
func isMemory(signal string) bool { return signalResource[signal] == corev1.ResourceMemory }
