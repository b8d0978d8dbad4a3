package stats

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func fakeRuntime(cpu uint64) *critest.FakeRuntimeService {
	rt := critest.NewFakeRuntimeService()
	labels := map[string]string{"io.kubernetes.pod.uid": "uid-1", "io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "ns"}
	rt.SetFakeSandboxes([]*critest.FakePodSandbox{{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id: "sb1", State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: time.Unix(100, 0).UnixNano(), Labels: labels,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "uid-1"}}}})
	ctrLabels := map[string]string{"io.kubernetes.container.name": "app"}
	for k, v := range labels {
		ctrLabels[k] = v
	}
	rt.SetFakeContainers([]*critest.FakeContainer{{SandboxID: "sb1", ContainerStatus: runtimeapi.ContainerStatus{
		Id: "c1", State: runtimeapi.ContainerState_CONTAINER_RUNNING, CreatedAt: time.Unix(200, 0).UnixNano(), Labels: ctrLabels,
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}}}})
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{
		Attributes:    &runtimeapi.ContainerAttributes{Id: "c1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"}},
		Cpu:           &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpu}},
		Memory:        &runtimeapi.MemoryUsage{WorkingSetBytes: &runtimeapi.UInt64Value{Value: 4 << 20}, UsageBytes: &runtimeapi.UInt64Value{Value: 6 << 20}},
		WritableLayer: &runtimeapi.FilesystemUsage{UsedBytes: &runtimeapi.UInt64Value{Value: 4096}},
	}})
	return rt
}

func TestSummaryAndMetrics(t *testing.T) {
	rt := fakeRuntime(2e9)
	p := &Provider{Runtime: rt, NodeName: "node-1", RootDir: t.TempDir(), LogDir: t.TempDir()}
	ctx := context.Background()
	sum, err := p.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Node.NodeName != "node-1" || sum.Node.CPU == nil || *sum.Node.Memory.WorkingSetBytes == 0 || *sum.Node.Fs.CapacityBytes == 0 {
		t.Errorf("node stats %+v", sum.Node)
	}
	if len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "web" || len(sum.Pods[0].Containers) != 1 {
		t.Fatalf("pods %+v", sum.Pods)
	}
	c := sum.Pods[0].Containers[0]
	if c.Name != "app" || *c.CPU.UsageCoreNanoSeconds != 2e9 || *c.Memory.WorkingSetBytes != 4<<20 || *c.Rootfs.UsedBytes != 4096 || c.CPU.UsageNanoCores != nil {
		t.Errorf("container stats %+v", c)
	}
	// A second reading gives a rate.
	time.Sleep(100 * time.Millisecond)
	rt.SetFakeContainerStats([]*runtimeapi.ContainerStats{{Attributes: &runtimeapi.ContainerAttributes{Id: "c1"},
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: 2e9 + 5e7}}}})
	sum, _ = p.Summary(ctx)
	if nc := sum.Pods[0].Containers[0].CPU.UsageNanoCores; nc == nil || *nc == 0 || *nc > 1e9 {
		t.Errorf("nano cores %v", nc)
	}
	var res, cad bytes.Buffer
	if err := p.WriteResourceMetrics(ctx, &res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`container_cpu_usage_seconds_total{container="app",namespace="ns",pod="web"} 2.05 `,
		"# TYPE node_memory_working_set_bytes gauge", `pod_cpu_usage_seconds_total{namespace="ns",pod="web"} 2.05`, "resource_scrape_error 0"} {
		if !strings.Contains(res.String(), want) {
			t.Errorf("resource metrics lack %q:\n%s", want, res.String())
		}
	}
	if err := p.WriteCadvisorMetrics(ctx, &cad); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cad.String(), `container_cpu_usage_seconds_total{container="app",id="/c1",image="busybox",name="c1",namespace="ns",pod="web",cpu="total"}`) {
		t.Errorf("cadvisor metrics:\n%s", cad.String())
	}
}
