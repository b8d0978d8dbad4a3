package runtime

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestGenericVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.6.20~ds1": "1.6.20", "v1.7.0": "1.7.0", "2.0.0-rc.1": "2.0.0", "1.31": "1.31", "weird": "weird",
	} {
		if got := GenericVersion(in); got != want {
			t.Errorf("GenericVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHealthFromStatus(t *testing.T) {
	cond := func(typ string, ok bool, reason string) *runtimeapi.RuntimeCondition {
		return &runtimeapi.RuntimeCondition{Type: typ, Status: ok, Reason: reason, Message: reason + " message"}
	}
	cases := []struct {
		name       string
		conds      []*runtimeapi.RuntimeCondition
		ready      bool
		msgContain string
	}{
		{"both ready", []*runtimeapi.RuntimeCondition{cond(runtimeapi.RuntimeReady, true, ""), cond(runtimeapi.NetworkReady, true, "")}, true, ""},
		{"network down", []*runtimeapi.RuntimeCondition{cond(runtimeapi.RuntimeReady, true, ""), cond(runtimeapi.NetworkReady, false, "NetworkPluginNotReady")},
			false, "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"},
		{"runtime down", []*runtimeapi.RuntimeCondition{cond(runtimeapi.RuntimeReady, false, "Broken"), cond(runtimeapi.NetworkReady, true, "")},
			false, "container runtime not ready: RuntimeReady=false reason:Broken"},
		{"no conditions", nil, false, "may not have completed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := HealthFromStatus(&runtimeapi.RuntimeStatus{Conditions: tc.conds})
			if (h.RuntimeReady && h.NetworkReady) != tc.ready || !strings.Contains(h.Message, tc.msgContain) || (tc.ready && h.Message != "") {
				t.Fatalf("got %+v", h)
			}
		})
	}
}

func TestCgroupDriverName(t *testing.T) {
	linux := func(d runtimeapi.CgroupDriver) *runtimeapi.RuntimeConfigResponse {
		return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: d}}
	}
	for _, c := range []struct {
		in   *runtimeapi.RuntimeConfigResponse
		want string
	}{
		{linux(runtimeapi.CgroupDriver_SYSTEMD), "systemd"},
		{linux(runtimeapi.CgroupDriver_CGROUPFS), "cgroupfs"},
		{&runtimeapi.RuntimeConfigResponse{}, ""},
		{nil, ""},
	} {
		if got := CgroupDriverName(c.in); got != c.want {
			t.Errorf("CgroupDriverName(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
