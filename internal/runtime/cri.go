// Package runtime connects Bosun to the CRI runtime (containerd) through
// k8s.io/cri-client and hands narrow views of it to the other parts.
package runtime

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criremote "k8s.io/cri-client/pkg"
)

// Runtime is the CRI runtime and image services at one endpoint.
type Runtime struct {
	internalapi.RuntimeService                                 // sandboxes, containers, exec, status
	Images                     internalapi.ImageManagerService // pulls, lists, removes images
	Endpoint                   string                          // e.g. unix:///run/containerd/containerd.sock
}

// Connect dials the runtime and image services at endpoint. Requests other
// than long-running ones are bounded by timeout (runtimeRequestTimeout).
func Connect(ctx context.Context, endpoint, imageEndpoint string, timeout time.Duration) (*Runtime, error) {
	if imageEndpoint == "" {
		imageEndpoint = endpoint
	}
	rs, err := criremote.NewRemoteRuntimeService(ctx, endpoint, timeout, nil, false)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to the CRI runtime at %s: %w", endpoint, err)
	}
	is, err := criremote.NewRemoteImageService(ctx, imageEndpoint, timeout, nil, false)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to the CRI image service at %s: %w", imageEndpoint, err)
	}
	return &Runtime{RuntimeService: instrumentedRuntime{rs}, Images: instrumentedImages{is}, Endpoint: endpoint}, nil
}

// VersionString is "<runtime name>://<runtime version>", as node status shows
// it: the version reduced to its numeric part, as upstream does ("1.6.20~ds1"
// is shown as "1.6.20").
func (r *Runtime) VersionString(ctx context.Context) (string, error) {
	v, err := r.Version(ctx, "v1")
	if err != nil {
		return "", fmt.Errorf("failed to get the CRI runtime version: %w", err)
	}
	return v.RuntimeName + "://" + GenericVersion(v.RuntimeVersion), nil
}

// genericVersion matches a leading "1.2.3" (with an optional "v").
var genericVersion = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)*)`)

// GenericVersion returns the numeric part of a version, or v itself when it
// has none.
func GenericVersion(v string) string {
	if m := genericVersion.FindStringSubmatch(strings.TrimSpace(v)); m != nil {
		return m[1]
	}
	return v
}

// Health says whether the runtime and its network are ready, and if not why.
type Health struct {
	RuntimeReady bool   // the RuntimeReady condition
	NetworkReady bool   // the NetworkReady condition (CNI configured)
	Message      string // why not, in upstream's words; "" when ready
	// Features and Handlers are what the runtime says it supports (nil
	// from runtimes that predate them, containerd 1.6 among them).
	Features *runtimeapi.RuntimeFeatures
	Handlers []*runtimeapi.RuntimeHandler
}

// CheckHealth asks the runtime's Status.
func (r *Runtime) CheckHealth(ctx context.Context) Health {
	st, err := r.Status(ctx, false)
	if err != nil {
		return Health{Message: fmt.Sprintf("container runtime is down: %v", err)}
	}
	h := HealthFromStatus(st.GetStatus())
	h.Features, h.Handlers = st.GetFeatures(), st.GetRuntimeHandlers()
	return h
}

// HealthFromStatus reads the two required conditions of a CRI status.
func HealthFromStatus(st *runtimeapi.RuntimeStatus) Health {
	h := Health{}
	runtimeMsg, networkMsg := "container runtime status check may not have completed yet", "container runtime network not ready"
	for _, c := range st.GetConditions() {
		switch c.Type {
		case runtimeapi.RuntimeReady:
			h.RuntimeReady = c.Status
			runtimeMsg = fmt.Sprintf("container runtime not ready: RuntimeReady=false reason:%s message:%s", c.Reason, c.Message)
		case runtimeapi.NetworkReady:
			h.NetworkReady = c.Status
			networkMsg = fmt.Sprintf("container runtime network not ready: NetworkReady=false reason:%s message:%s", c.Reason, c.Message)
		}
	}
	switch {
	case !h.RuntimeReady:
		h.Message = runtimeMsg
	case !h.NetworkReady:
		h.Message = networkMsg
	}
	return h
}

// RecursiveReadOnly tells whether the runtime's handler ("" the default) can
// make a read-only mount recursively read-only, as its status reports.
func (r *Runtime) RecursiveReadOnly(ctx context.Context, handler string) bool {
	st, err := r.Status(ctx, false)
	if err != nil {
		return false
	}
	return HandlerSupportsRRO(st.GetRuntimeHandlers(), handler)
}

// UserNamespaces tells whether a runtime handler ("" the default) can run
// pods in their own user namespace.
func (r *Runtime) UserNamespaces(ctx context.Context, handler string) (bool, error) {
	st, err := r.Status(ctx, false)
	if err != nil {
		return false, err
	}
	for _, h := range st.GetRuntimeHandlers() {
		if h.GetName() == handler {
			return h.GetFeatures().GetUserNamespaces(), nil
		}
	}
	return false, nil
}

// HandlerSupportsRRO reads a handler's recursive read-only feature; the
// default handler is the one named "".
func HandlerSupportsRRO(handlers []*runtimeapi.RuntimeHandler, handler string) bool {
	for _, h := range handlers {
		if h.GetName() == handler {
			return h.GetFeatures().GetRecursiveReadOnlyMounts()
		}
	}
	return false
}

// CgroupDriver is the cgroup driver the runtime reports ("systemd" or
// "cgroupfs"), or "" when it does not report one (containerd 1.6 has no
// RuntimeConfig).
func (r *Runtime) CgroupDriver(ctx context.Context) (string, error) {
	rc, err := r.RuntimeConfig(ctx)
	if status.Code(err) == codes.Unimplemented {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("failed to get the CRI runtime's configuration: %w", err)
	}
	return CgroupDriverName(rc), nil
}

// CgroupDriverName is the driver a RuntimeConfig answer names, or "".
func CgroupDriverName(rc *runtimeapi.RuntimeConfigResponse) string {
	if rc.GetLinux() == nil {
		return ""
	}
	switch rc.GetLinux().GetCgroupDriver() {
	case runtimeapi.CgroupDriver_SYSTEMD:
		return "systemd"
	case runtimeapi.CgroupDriver_CGROUPFS:
		return "cgroupfs"
	}
	return ""
}
