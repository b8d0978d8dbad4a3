// Command dra-driver is test equipment, not product: a DRA driver built on
// k8s.io/dynamic-resource-allocation/kubeletplugin that publishes a few
// devices for one node and prepares a claim by writing a CDI spec whose
// device sets BOSUN_DRA=<device> in the container. Each prepare and
// unprepare is logged as one JSON line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"
)

type driver struct {
	name, cdiDir, node, healthFile string
	devices                        int
	drahealth.UnimplementedDRAResourceHealthServer
}

func main() {
	name := flag.String("name", "dra.bosun.example", "driver name")
	node := flag.String("node", "", "the node to serve")
	kubeconfig := flag.String("kubeconfig", "", "credentials to publish ResourceSlices and read claims")
	root := flag.String("root-dir", "/var/lib/kubelet", "the node agent's --root-dir")
	cdiDir := flag.String("cdi-dir", "/var/run/cdi", "where CDI specs go")
	n := flag.Int("devices", 2, "how many devices to publish")
	flag.Parse()
	if *node == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "-node and -kubeconfig are required")
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &driver{name: *name, cdiDir: *cdiDir, node: *node, devices: *n, healthFile: filepath.Join(*root, "plugins", *name, "health")}
	for _, dir := range []string{filepath.Join(*root, "plugins_registry"), filepath.Join(*root, "plugins", *name)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			fail(err)
		}
	}
	helper, err := kubeletplugin.Start(ctx, d, kubeletplugin.DriverName(*name), kubeletplugin.NodeName(*node), kubeletplugin.KubeClient(client),
		kubeletplugin.RegistrarDirectoryPath(filepath.Join(*root, "plugins_registry")),
		kubeletplugin.PluginDataDirectoryPath(filepath.Join(*root, "plugins", *name)))
	if err != nil {
		fail(err)
	}
	var devices []resourceapi.Device
	for i := range *n {
		devices = append(devices, resourceapi.Device{Name: fmt.Sprintf("dev-%d", i)})
	}
	if err := helper.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		*node: {Slices: []resourceslice.Slice{{Devices: devices}}},
	}}); err != nil {
		fail(err)
	}
	logf("started", map[string]any{"devices": *n})
	<-ctx.Done()
	helper.Stop()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func logf(call string, v any) {
	b, _ := json.Marshal(map[string]any{"call": call, "req": v})
	fmt.Println(string(b))
}

func (d *driver) specPath(uid types.UID) string {
	return filepath.Join(d.cdiDir, strings.ReplaceAll(d.name, ".", "_")+"-"+string(uid)+".json")
}

// PrepareResourceClaims writes one CDI spec per claim with a device per
// allocated result.
func (d *driver) PrepareResourceClaims(_ context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := map[types.UID]kubeletplugin.PrepareResult{}
	for _, c := range claims {
		var cdiDevices []map[string]any
		var res kubeletplugin.PrepareResult
		for _, r := range c.Status.Allocation.Devices.Results {
			if r.Driver != d.name {
				continue
			}
			cdiName := string(c.UID) + "-" + r.Device
			cdiDevices = append(cdiDevices, map[string]any{"name": cdiName, "containerEdits": map[string]any{"env": []string{"BOSUN_DRA=" + r.Device}}})
			res.Devices = append(res.Devices, kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device,
				CDIDeviceIDs: []string{d.name + "/device=" + cdiName}})
		}
		spec, _ := json.Marshal(map[string]any{"cdiVersion": "0.6.0", "kind": d.name + "/device", "devices": cdiDevices})
		if err := os.MkdirAll(d.cdiDir, 0o755); err != nil {
			res.Err = err
		} else if err := os.WriteFile(d.specPath(c.UID), spec, 0o644); err != nil {
			res.Err = err
		}
		logf("prepare", map[string]any{"claim": c.Namespace + "/" + c.Name, "uid": c.UID, "devices": len(res.Devices)})
		out[c.UID] = res
	}
	return out, nil
}

// UnprepareResourceClaims removes the claims' CDI specs.
func (d *driver) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := map[types.UID]error{}
	for _, c := range claims {
		err := os.Remove(d.specPath(c.UID))
		if os.IsNotExist(err) {
			err = nil
		}
		logf("unprepare", map[string]any{"claim": c.Namespace + "/" + c.Name, "uid": c.UID})
		out[c.UID] = err
	}
	return out, nil
}

// NodeWatchResources reports every device's health each second: healthy,
// unless <root-dir>/plugins/<name>/health has a line "<device> Unhealthy
// <message>".
func (d *driver) NodeWatchResources(_ *drahealth.NodeWatchResourcesRequest, s grpc.ServerStreamingServer[drahealth.NodeWatchResourcesResponse]) error {
	for {
		unhealthy := map[string]string{}
		data, _ := os.ReadFile(d.healthFile)
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[1] == "Unhealthy" {
				unhealthy[f[0]] = strings.Join(f[2:], " ")
			}
		}
		resp := &drahealth.NodeWatchResourcesResponse{}
		for i := range d.devices {
			dev := fmt.Sprintf("dev-%d", i)
			h := &drahealth.DeviceHealth{Device: &drahealth.DeviceIdentifier{PoolName: d.node, DeviceName: dev},
				Health: drahealth.HealthStatus_HEALTHY, LastUpdatedTime: time.Now().Unix(), HealthCheckTimeoutSeconds: 10}
			if msg, ok := unhealthy[dev]; ok {
				h.Health, h.Message = drahealth.HealthStatus_UNHEALTHY, msg
			}
			resp.Devices = append(resp.Devices, h)
		}
		if err := s.Send(resp); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (d *driver) HandleError(_ context.Context, err error, msg string) {
	logf("error", map[string]any{"msg": msg, "err": err.Error()})
}
