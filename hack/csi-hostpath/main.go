// Command csi-hostpath is test equipment, not product: a small CSI driver
// that keeps each volume in a folder on the host, with its own registration
// side (what node-driver-registrar does for real drivers). It stages a
// volume by bind-mounting its folder on the staging path and publishes by
// bind-mounting that on the pod's target path, read-only when asked. Every
// call is logged as one JSON line, and the volume context of each publish is
// kept in <data>/publish/<volume>.json, so tests can check what the node
// agent sent.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/bosun-dev/bosun/internal/mounts"
)

// TopologyKey is the node label the driver reports its node under.
const TopologyKey = "topology.bosun.example/node"

type driver struct {
	name, node, data string
	maxVolumes       int64
	stage            bool
	mu               sync.Mutex
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedNodeServer
}

func main() {
	name := flag.String("name", "bosun.csi.example", "driver name")
	endpoint := flag.String("endpoint", "", "the driver's CSI socket")
	registry := flag.String("registry", "", "the node agent's plugins_registry folder")
	data := flag.String("data", "", "where volumes live")
	node := flag.String("node", "", "the node ID to report")
	maxVolumes := flag.Int64("max-volumes", 0, "max_volumes_per_node to report")
	stage := flag.Bool("stage", true, "offer STAGE_UNSTAGE_VOLUME")
	kubeconfig := flag.String("kubeconfig", "", "with a kubeconfig, also provision volumes for the claims of the driver's storage classes")
	flag.Parse()
	if *endpoint == "" || *registry == "" || *data == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "-endpoint, -registry, -data and -node are required")
		os.Exit(2)
	}
	d := &driver{name: *name, node: *node, data: *data, maxVolumes: *maxVolumes, stage: *stage}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	csiSrv, err := serve(*endpoint, func(s *grpc.Server) {
		csipb.RegisterIdentityServer(s, d)
		csipb.RegisterNodeServer(s, d)
	})
	if err != nil {
		fail(err)
	}
	regPath := filepath.Join(*registry, *name+"-reg.sock")
	regSrv, err := serve(regPath, func(s *grpc.Server) {
		registerapi.RegisterRegistrationServer(s, &registration{name: *name, endpoint: *endpoint})
	})
	if err != nil {
		fail(err)
	}
	if *kubeconfig != "" {
		if err := runProvisioner(ctx, d, *kubeconfig); err != nil {
			fail(err)
		}
	}
	logf("started", map[string]any{"endpoint": *endpoint, "registration": regPath})
	<-ctx.Done()
	regSrv.Stop()
	csiSrv.Stop()
	_ = os.Remove(regPath)
	_ = os.Remove(*endpoint)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func serve(path string, register func(*grpc.Server)) (*grpc.Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(ln) }()
	return s, nil
}

func logf(call string, v any) {
	b, _ := json.Marshal(map[string]any{"call": call, "req": v})
	fmt.Println(string(b))
}

type registration struct {
	name, endpoint string
	registerapi.UnimplementedRegistrationServer
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: r.name, Endpoint: r.endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	logf("NotifyRegistrationStatus", s)
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (d *driver) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: d.name, VendorVersion: "0.1.0"}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	return &csipb.GetPluginCapabilitiesResponse{}, nil
}

func (d *driver) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	return &csipb.ProbeResponse{}, nil
}

func (d *driver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	logf("NodeGetInfo", nil)
	return &csipb.NodeGetInfoResponse{NodeId: d.node, MaxVolumesPerNode: d.maxVolumes,
		AccessibleTopology: &csipb.Topology{Segments: map[string]string{TopologyKey: d.node}}}, nil
}

func (d *driver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	rpc := func(t csipb.NodeServiceCapability_RPC_Type) *csipb.NodeServiceCapability {
		return &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}}}
	}
	caps := []*csipb.NodeServiceCapability{rpc(csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS), rpc(csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)}
	if d.stage {
		caps = append(caps, rpc(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME))
	}
	return &csipb.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// volumeDir is a volume's folder; a volume ID never names a path outside it.
func (d *driver) volumeDir(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return "", status.Errorf(codes.InvalidArgument, "bad volume ID %q", id)
	}
	dir := filepath.Join(d.data, "volumes", id)
	return dir, os.MkdirAll(dir, 0o777)
}

func (d *driver) NodeStageVolume(_ context.Context, req *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	logf("NodeStageVolume", map[string]any{"volume": req.VolumeId, "staging": req.StagingTargetPath, "context": req.VolumeContext})
	d.mu.Lock()
	defer d.mu.Unlock()
	src, err := d.volumeDir(req.VolumeId)
	if err != nil {
		return nil, err
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return &csipb.NodeStageVolumeResponse{}, nil // the device is made at publish
	}
	if err := bind(src, req.StagingTargetPath, false); err != nil {
		return nil, err
	}
	return &csipb.NodeStageVolumeResponse{}, nil
}

func (d *driver) NodeUnstageVolume(_ context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	logf("NodeUnstageVolume", map[string]any{"volume": req.VolumeId, "staging": req.StagingTargetPath})
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := unbind(req.StagingTargetPath, false); err != nil {
		return nil, err
	}
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (d *driver) NodePublishVolume(_ context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	logf("NodePublishVolume", map[string]any{"volume": req.VolumeId, "target": req.TargetPath, "staging": req.StagingTargetPath, "readonly": req.Readonly})
	d.mu.Lock()
	defer d.mu.Unlock()
	src := req.StagingTargetPath
	if src == "" {
		var err error
		if src, err = d.volumeDir(req.VolumeId); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(d.data, "publish"), 0o755); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	record, _ := json.Marshal(map[string]any{"context": req.VolumeContext, "readonly": req.Readonly, "target": req.TargetPath})
	if err := os.WriteFile(filepath.Join(d.data, "publish", req.VolumeId+".json"), record, 0o644); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		size := int64(blockSize)
		if v, err := strconv.ParseInt(req.VolumeContext[sizeKey], 10, 64); err == nil && v > 0 {
			size = v
		}
		return &csipb.NodePublishVolumeResponse{}, d.publishBlock(req.VolumeId, req.TargetPath, size)
	}
	if err := bind(src, req.TargetPath, req.Readonly); err != nil {
		return nil, err
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

// blockSize is the size of a block volume's backing file when the volume
// context does not give one (a provisioned volume's does).
const blockSize = 16 << 20

// publishBlock publishes a raw block volume: a loop device over the
// volume's backing file (made on first use), bind-mounted on the target
// file, as a real block driver publishes its device node.
func (d *driver) publishBlock(id, target string, size int64) error {
	dir, err := d.volumeDir(id)
	if err != nil {
		return err
	}
	if mounts.At(target) {
		return nil
	}
	img := filepath.Join(dir, "block.img")
	if _, err := os.Stat(img); os.IsNotExist(err) {
		f, err := os.Create(img)
		if err == nil {
			err = f.Truncate(size)
			f.Close()
		}
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	}
	// One loop device per volume, shared by every pod that publishes it (as
	// a real block device is), and a record per publish target so that the
	// last unpublish detaches it.
	dev := loopOf(img)
	if dev == "" {
		out, err := exec.Command("losetup", "-f", "--show", img).Output()
		if err != nil {
			return status.Errorf(codes.Internal, "losetup %s: %v", img, err)
		}
		dev = strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := os.WriteFile(filepath.Join(dir, "targets", targetKey(target)), []byte(target), 0o644); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
		f.Close()
	}
	if err := unix.Mount(dev, target, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(filepath.Join(dir, "targets", targetKey(target)))
		if left, _ := os.ReadDir(filepath.Join(dir, "targets")); len(left) == 0 {
			_ = exec.Command("losetup", "-d", dev).Run()
		}
		return status.Errorf(codes.Internal, "bind %s on %s: %v", dev, target, err)
	}
	return nil
}

// loopOf is the loop device over img, or "".
func loopOf(img string) string {
	if devs := loopsOf(img); len(devs) > 0 {
		return devs[0]
	}
	return ""
}

// loopsOf lists the loop devices over img.
func loopsOf(img string) []string {
	out, _ := exec.Command("losetup", "-j", img).Output()
	var devs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok {
			devs = append(devs, dev)
		}
	}
	return devs
}

func targetKey(target string) string {
	sum := sha256.Sum256([]byte(target))
	return hex.EncodeToString(sum[:8])
}

// unpublishBlock undoes publishBlock: the target unmounted and removed, and
// once no other target publishes the volume, the loop devices over its file
// detached.
func (d *driver) unpublishBlock(id, target string) error {
	if err := unbind(target, true); err != nil {
		return err
	}
	dir, err := d.volumeDir(id)
	if err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, "targets", targetKey(target)))
	if left, _ := os.ReadDir(filepath.Join(dir, "targets")); len(left) > 0 {
		return nil
	}
	for _, dev := range loopsOf(filepath.Join(dir, "block.img")) {
		_ = exec.Command("losetup", "-d", dev).Run()
	}
	return nil
}

// growBlock grows a block volume's backing file to size and has its loop
// devices take the new size.
func (d *driver) growBlock(id string, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, err := d.volumeDir(id)
	if err != nil {
		return err
	}
	img := filepath.Join(dir, "block.img")
	if fi, err := os.Stat(img); err != nil {
		return status.Error(codes.NotFound, err.Error())
	} else if fi.Size() < size {
		if err := os.Truncate(img, size); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	}
	for _, dev := range loopsOf(img) {
		if out, err := exec.Command("losetup", "-c", dev).CombinedOutput(); err != nil {
			return status.Errorf(codes.Internal, "losetup -c %s: %v: %s", dev, err, out)
		}
	}
	return nil
}

func (d *driver) NodeUnpublishVolume(_ context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	logf("NodeUnpublishVolume", map[string]any{"volume": req.VolumeId, "target": req.TargetPath})
	d.mu.Lock()
	defer d.mu.Unlock()
	if fi, err := os.Stat(req.TargetPath); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return &csipb.NodeUnpublishVolumeResponse{}, d.unpublishBlock(req.VolumeId, req.TargetPath)
	}
	if err := unbind(req.TargetPath, true); err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.VolumeId, "csi-") { // an inline volume lives as long as its pod
		_ = os.RemoveAll(filepath.Join(d.data, "volumes", req.VolumeId))
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

// NodeExpandVolume has nothing to grow for a folder: it checks that the
// volume is published where the agent says. A raw block volume's backing
// file grows, and its loop devices with it.
func (d *driver) NodeExpandVolume(_ context.Context, req *csipb.NodeExpandVolumeRequest) (*csipb.NodeExpandVolumeResponse, error) {
	logf("NodeExpandVolume", req)
	if _, err := d.volumeDir(req.VolumeId); err != nil {
		return nil, err
	}
	if !mounts.At(req.VolumePath) {
		return nil, status.Errorf(codes.NotFound, "volume path %s is not published", req.VolumePath)
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return &csipb.NodeExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes()},
			d.growBlock(req.VolumeId, req.GetCapacityRange().GetRequiredBytes())
	}
	if req.StagingTargetPath != "" && !mounts.At(req.StagingTargetPath) {
		return nil, status.Errorf(codes.FailedPrecondition, "staging path %s is not staged", req.StagingTargetPath)
	}
	return &csipb.NodeExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes()}, nil
}

func (d *driver) NodeGetVolumeStats(_ context.Context, req *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(req.VolumePath, &st); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume path %s: %v", req.VolumePath, err)
	}
	bs := st.Bsize
	return &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{
		{Unit: csipb.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs, Used: int64(st.Blocks-st.Bfree) * bs},
		{Unit: csipb.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files - st.Ffree)},
	}}, nil
}

// bind mounts src on target (made if missing), once.
func bind(src, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if mounts.At(target) {
		return nil
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return status.Errorf(codes.Internal, "bind %s on %s: %v", src, target, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	return nil
}

// unbind unmounts target and, for a publish target, removes it (the CSI
// spec leaves that to the driver).
func unbind(target string, remove bool) error {
	for mounts.At(target) {
		if err := unix.Unmount(target, 0); err != nil {
			return status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	if remove {
		if err := os.Remove(target); err != nil && !os.IsNotExist(err) {
			return status.Error(codes.Internal, err.Error())
		}
	}
	return nil
}
