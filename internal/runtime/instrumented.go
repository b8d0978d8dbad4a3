package runtime

import (
	"context"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// Every CRI call is counted and timed by operation, with its errors, under
// upstream's names (kubelet_runtime_operations_total,
// kubelet_runtime_operations_duration_seconds,
// kubelet_runtime_operations_errors_total) and operation types.

func record(op string, start time.Time, err error) {
	bmetrics.RuntimeOperations.WithLabelValues(op).Inc()
	bmetrics.RuntimeOperationsDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		bmetrics.RuntimeOperationsErrors.WithLabelValues(op).Inc()
	}
}

func call[T any](op string, f func() (T, error)) (T, error) {
	start := time.Now()
	out, err := f()
	record(op, start, err)
	return out, err
}

func callErr(op string, f func() error) error {
	start := time.Now()
	err := f()
	record(op, start, err)
	return err
}

// instrumentedRuntime is a RuntimeService that records each call.
type instrumentedRuntime struct{ s internalapi.RuntimeService }

var _ internalapi.RuntimeService = instrumentedRuntime{}

func (i instrumentedRuntime) Version(ctx context.Context, v string) (*runtimeapi.VersionResponse, error) {
	return call("version", func() (*runtimeapi.VersionResponse, error) { return i.s.Version(ctx, v) })
}

func (i instrumentedRuntime) CreateContainer(ctx context.Context, sb string, c *runtimeapi.ContainerConfig, sc *runtimeapi.PodSandboxConfig) (string, error) {
	return call("create_container", func() (string, error) { return i.s.CreateContainer(ctx, sb, c, sc) })
}

func (i instrumentedRuntime) StartContainer(ctx context.Context, id string) error {
	return callErr("start_container", func() error { return i.s.StartContainer(ctx, id) })
}

func (i instrumentedRuntime) StopContainer(ctx context.Context, id string, timeout int64) error {
	return callErr("stop_container", func() error { return i.s.StopContainer(ctx, id, timeout) })
}

func (i instrumentedRuntime) RemoveContainer(ctx context.Context, id string) error {
	return callErr("remove_container", func() error { return i.s.RemoveContainer(ctx, id) })
}

func (i instrumentedRuntime) ListContainers(ctx context.Context, f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	return call("list_containers", func() ([]*runtimeapi.Container, error) { return i.s.ListContainers(ctx, f) })
}

func (i instrumentedRuntime) ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error) {
	return call("container_status", func() (*runtimeapi.ContainerStatusResponse, error) { return i.s.ContainerStatus(ctx, id, verbose) })
}

// UpdateContainerResources and UpdatePodSandboxResources set cgroup
// limits: the statistics read them again (cgroupstats keeps them).
func (i instrumentedRuntime) UpdateContainerResources(ctx context.Context, id string, r *runtimeapi.ContainerResources) error {
	defer cgroupstats.LimitsChanged()
	return callErr("update_container", func() error { return i.s.UpdateContainerResources(ctx, id, r) })
}

func (i instrumentedRuntime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, error) {
	start := time.Now()
	stdout, stderr, err := i.s.ExecSync(ctx, id, cmd, timeout)
	record("exec_sync", start, err)
	return stdout, stderr, err
}

func (i instrumentedRuntime) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return call("exec", func() (*runtimeapi.ExecResponse, error) { return i.s.Exec(ctx, r) })
}

func (i instrumentedRuntime) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return call("attach", func() (*runtimeapi.AttachResponse, error) { return i.s.Attach(ctx, r) })
}

func (i instrumentedRuntime) ReopenContainerLog(ctx context.Context, id string) error {
	return callErr("reopen_container_log", func() error { return i.s.ReopenContainerLog(ctx, id) })
}

func (i instrumentedRuntime) CheckpointContainer(ctx context.Context, o *runtimeapi.CheckpointContainerRequest) error {
	return callErr("checkpoint_container", func() error { return i.s.CheckpointContainer(ctx, o) })
}

func (i instrumentedRuntime) GetContainerEvents(ctx context.Context, ch chan *runtimeapi.ContainerEventResponse, cb func(runtimeapi.RuntimeService_GetContainerEventsClient)) error {
	return callErr("get_container_events", func() error { return i.s.GetContainerEvents(ctx, ch, cb) })
}

func (i instrumentedRuntime) RunPodSandbox(ctx context.Context, c *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	defer bmetrics.RunPodSandboxDuration.ObserveSince(time.Now(), handler)()
	return call("run_podsandbox", func() (string, error) { return i.s.RunPodSandbox(ctx, c, handler) })
}

func (i instrumentedRuntime) StopPodSandbox(ctx context.Context, id string) error {
	return callErr("stop_podsandbox", func() error { return i.s.StopPodSandbox(ctx, id) })
}

func (i instrumentedRuntime) RemovePodSandbox(ctx context.Context, id string) error {
	return callErr("remove_podsandbox", func() error { return i.s.RemovePodSandbox(ctx, id) })
}

func (i instrumentedRuntime) PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	return call("podsandbox_status", func() (*runtimeapi.PodSandboxStatusResponse, error) { return i.s.PodSandboxStatus(ctx, id, verbose) })
}

func (i instrumentedRuntime) ListPodSandbox(ctx context.Context, f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	return call("list_podsandbox", func() ([]*runtimeapi.PodSandbox, error) { return i.s.ListPodSandbox(ctx, f) })
}

func (i instrumentedRuntime) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return call("port_forward", func() (*runtimeapi.PortForwardResponse, error) { return i.s.PortForward(ctx, r) })
}

func (i instrumentedRuntime) UpdatePodSandboxResources(ctx context.Context, r *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	defer cgroupstats.LimitsChanged()
	return call("update_podsandbox_resources", func() (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
		return i.s.UpdatePodSandboxResources(ctx, r)
	})
}

func (i instrumentedRuntime) ContainerStats(ctx context.Context, id string) (*runtimeapi.ContainerStats, error) {
	return call("container_stats", func() (*runtimeapi.ContainerStats, error) { return i.s.ContainerStats(ctx, id) })
}

func (i instrumentedRuntime) ListContainerStats(ctx context.Context, f *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	return call("list_container_stats", func() ([]*runtimeapi.ContainerStats, error) { return i.s.ListContainerStats(ctx, f) })
}

func (i instrumentedRuntime) PodSandboxStats(ctx context.Context, id string) (*runtimeapi.PodSandboxStats, error) {
	return call("podsandbox_stats", func() (*runtimeapi.PodSandboxStats, error) { return i.s.PodSandboxStats(ctx, id) })
}

func (i instrumentedRuntime) ListPodSandboxStats(ctx context.Context, f *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	return call("list_podsandbox_stats", func() ([]*runtimeapi.PodSandboxStats, error) { return i.s.ListPodSandboxStats(ctx, f) })
}

func (i instrumentedRuntime) ListMetricDescriptors(ctx context.Context) ([]*runtimeapi.MetricDescriptor, error) {
	return call("list_metric_descriptors", func() ([]*runtimeapi.MetricDescriptor, error) { return i.s.ListMetricDescriptors(ctx) })
}

func (i instrumentedRuntime) ListPodSandboxMetrics(ctx context.Context) ([]*runtimeapi.PodSandboxMetrics, error) {
	return call("list_podsandbox_metrics", func() ([]*runtimeapi.PodSandboxMetrics, error) { return i.s.ListPodSandboxMetrics(ctx) })
}

func (i instrumentedRuntime) UpdateRuntimeConfig(ctx context.Context, c *runtimeapi.RuntimeConfig) error {
	return callErr("update_runtime_config", func() error { return i.s.UpdateRuntimeConfig(ctx, c) })
}

func (i instrumentedRuntime) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	return call("status", func() (*runtimeapi.StatusResponse, error) { return i.s.Status(ctx, verbose) })
}

func (i instrumentedRuntime) RuntimeConfig(ctx context.Context) (*runtimeapi.RuntimeConfigResponse, error) {
	return call("runtime_config", func() (*runtimeapi.RuntimeConfigResponse, error) { return i.s.RuntimeConfig(ctx) })
}

func (i instrumentedRuntime) Close(ctx context.Context) error {
	return callErr("close", func() error { return i.s.Close(ctx) })
}

// instrumentedImages is an ImageManagerService that records each call.
type instrumentedImages struct {
	s internalapi.ImageManagerService
}

var _ internalapi.ImageManagerService = instrumentedImages{}

func (i instrumentedImages) ListImages(ctx context.Context, f *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	return call("list_images", func() ([]*runtimeapi.Image, error) { return i.s.ListImages(ctx, f) })
}

func (i instrumentedImages) ImageStatus(ctx context.Context, img *runtimeapi.ImageSpec, verbose bool) (*runtimeapi.ImageStatusResponse, error) {
	return call("image_status", func() (*runtimeapi.ImageStatusResponse, error) { return i.s.ImageStatus(ctx, img, verbose) })
}

func (i instrumentedImages) PullImage(ctx context.Context, img *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sc *runtimeapi.PodSandboxConfig) (string, error) {
	return call("pull_image", func() (string, error) { return i.s.PullImage(ctx, img, auth, sc) })
}

func (i instrumentedImages) RemoveImage(ctx context.Context, img *runtimeapi.ImageSpec) error {
	return callErr("remove_image", func() error { return i.s.RemoveImage(ctx, img) })
}

func (i instrumentedImages) ImageFsInfo(ctx context.Context) (*runtimeapi.ImageFsInfoResponse, error) {
	return call("image_fs_info", func() (*runtimeapi.ImageFsInfoResponse, error) { return i.s.ImageFsInfo(ctx) })
}

func (i instrumentedImages) Close(ctx context.Context) error {
	return callErr("close", func() error { return i.s.Close(ctx) })
}
