package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Flag values that write into KubeletConfiguration fields only when the flag
// is given, so an unset flag leaves the field nil for the file or defaults.

type int32PtrValue struct{ p **int32 }

func (v int32PtrValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return err
	}
	x := int32(n)
	*v.p = &x
	return nil
}
func (v int32PtrValue) Type() string { return "int32" }
func (v int32PtrValue) String() string {
	if *v.p == nil {
		return ""
	}
	return strconv.Itoa(int(**v.p))
}

type boolPtrValue struct{ p **bool }

func (v boolPtrValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*v.p = &b
	return nil
}
func (v boolPtrValue) Type() string     { return "bool" }
func (v boolPtrValue) IsBoolFlag() bool { return true }
func (v boolPtrValue) String() string {
	if *v.p == nil {
		return ""
	}
	return strconv.FormatBool(**v.p)
}

// evictionValue reads "signal<threshold,signal<threshold" as upstream does.
type evictionValue struct{ m *map[string]string }

func (v evictionValue) Set(s string) error {
	out := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		signal, threshold, ok := strings.Cut(item, "<")
		if !ok || signal == "" || threshold == "" {
			return fmt.Errorf("%q is not of the form signal<threshold (for example memory.available<100Mi)", item)
		}
		out[strings.TrimSpace(signal)] = strings.TrimSpace(threshold)
	}
	*v.m = out
	return nil
}
func (v evictionValue) Type() string { return "mapStringString" }
func (v evictionValue) String() string {
	var parts []string
	for k, t := range *v.m {
		parts = append(parts, k+"<"+t)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// featureGatesValue reads "Gate=true,Other=false".
type featureGatesValue struct{ m *map[string]bool }

func (v featureGatesValue) Set(s string) error {
	out := map[string]bool{}
	for k, b := range *v.m {
		out[k] = b
	}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("missing bool value for feature gate %q", name)
		}
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("invalid value of feature gate %s=%s: %w", name, val, err)
		}
		out[strings.TrimSpace(name)] = b
	}
	*v.m = out
	return nil
}
func (v featureGatesValue) Type() string { return "mapStringBool" }
func (v featureGatesValue) String() string {
	var parts []string
	for k, b := range *v.m {
		parts = append(parts, fmt.Sprintf("%s=%t", k, b))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// taintsValue reads "key=value:Effect,key:Effect".
type taintsValue struct{ t *[]corev1.Taint }

func (v taintsValue) Set(s string) error {
	var out []corev1.Taint
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kv, effect, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("taint %q lacks an effect (want key=value:Effect)", item)
		}
		key, value, _ := strings.Cut(kv, "=")
		out = append(out, corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)})
	}
	*v.t = out
	return nil
}
func (v taintsValue) Type() string { return "[]Taint" }
func (v taintsValue) String() string {
	var parts []string
	for _, t := range *v.t {
		parts = append(parts, t.ToString())
	}
	return strings.Join(parts, ",")
}

var (
	_ pflag.Value = int32PtrValue{}
	_ pflag.Value = boolPtrValue{}
	_ pflag.Value = evictionValue{}
	_ pflag.Value = featureGatesValue{}
	_ pflag.Value = taintsValue{}
)

// reservedMemoryValue reads --reserved-memory as upstream: each use is one
// or more NUMA nodes' reservations, "0:memory=1Gi,hugepages-1Gi=2Gi" or
// several separated by ";", and repeated uses add up.
type reservedMemoryValue struct {
	r   *[]kubeletv1beta1.MemoryReservation
	set bool
}

func (v *reservedMemoryValue) Set(s string) error {
	if !v.set {
		*v.r = nil // the flag replaces the file's list
		v.set = true
	}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		node, limits, ok := strings.Cut(part, ":")
		if !ok {
			return fmt.Errorf("%q is not of the form numaNode:type=quantity[,type=quantity...] (for example 0:memory=1Gi)", part)
		}
		id, err := strconv.ParseInt(strings.TrimSpace(node), 10, 32)
		if err != nil {
			return fmt.Errorf("%q: the NUMA node %q is not a number", part, node)
		}
		r := kubeletv1beta1.MemoryReservation{NumaNode: int32(id), Limits: corev1.ResourceList{}}
		for _, kv := range strings.Split(limits, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return fmt.Errorf("%q: %q is not of the form type=quantity", part, kv)
			}
			q, err := resource.ParseQuantity(strings.TrimSpace(val))
			if err != nil {
				return fmt.Errorf("%q: %q is not a quantity: %w", part, val, err)
			}
			r.Limits[corev1.ResourceName(strings.TrimSpace(name))] = q
		}
		*v.r = append(*v.r, r)
	}
	return nil
}
func (v *reservedMemoryValue) Type() string { return "[]MemoryReservation" }
func (v *reservedMemoryValue) String() string {
	var parts []string
	for _, r := range *v.r {
		var limits []string
		for name, q := range r.Limits {
			limits = append(limits, string(name)+"="+q.String())
		}
		sort.Strings(limits)
		parts = append(parts, fmt.Sprintf("%d:%s", r.NumaNode, strings.Join(limits, ",")))
	}
	return strings.Join(parts, ";")
}
