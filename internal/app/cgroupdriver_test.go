package app

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/bosun-dev/bosun/internal/runtime"
)

// The runtime's cgroup driver wins over the configuration's, as the
// kubelet's since v1.34; a runtime that does not say leaves the config's.
func TestCgroupDriverFromRuntime(t *testing.T) {
	ctx := context.Background()
	withDriver := func(d runtimeapi.CgroupDriver) *runtime.Runtime {
		f := critest.NewFakeRuntimeService()
		f.FakeLinuxConfiguration = &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: d}
		return &runtime.Runtime{RuntimeService: f}
	}
	kc := &kubeletv1beta1.KubeletConfiguration{CgroupDriver: "cgroupfs"}
	if err := cgroupDriverFromRuntime(ctx, withDriver(runtimeapi.CgroupDriver_SYSTEMD), kc); err != nil || kc.CgroupDriver != "systemd" {
		t.Errorf("runtime systemd, config cgroupfs: %q, %v", kc.CgroupDriver, err)
	}
	kc = &kubeletv1beta1.KubeletConfiguration{CgroupDriver: "systemd"}
	if err := cgroupDriverFromRuntime(ctx, withDriver(runtimeapi.CgroupDriver_CGROUPFS), kc); err != nil || kc.CgroupDriver != "cgroupfs" {
		t.Errorf("runtime cgroupfs, config systemd: %q, %v", kc.CgroupDriver, err)
	}
	old := critest.NewFakeRuntimeService()
	old.InjectError("RuntimeConfig", status.Error(codes.Unimplemented, "unknown method RuntimeConfig"))
	kc = &kubeletv1beta1.KubeletConfiguration{CgroupDriver: "systemd"}
	if err := cgroupDriverFromRuntime(ctx, &runtime.Runtime{RuntimeService: old}, kc); err != nil || kc.CgroupDriver != "systemd" {
		t.Errorf("a runtime without RuntimeConfig: %q, %v", kc.CgroupDriver, err)
	}
	kc = &kubeletv1beta1.KubeletConfiguration{CgroupDriver: "cgroupfs", CgroupRoot: "/custom"}
	if err := cgroupDriverFromRuntime(ctx, withDriver(runtimeapi.CgroupDriver_SYSTEMD), kc); err == nil || !strings.Contains(err.Error(), "cgroupRoot") {
		t.Errorf("systemd from the runtime with a cgroupRoot: %v", err)
	}
}
