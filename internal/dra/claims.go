package dra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/klog/v2"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// claimState is one claim in upstream's checkpoint (field names as its
// JSON has them).
type claimState struct {
	ClaimUID    types.UID
	ClaimName   string
	Namespace   string
	PodUIDs     map[string]struct{}    // the pods on this node that use the claim
	DriverState map[string]driverState // every driver with results in the allocation
}

type driverState struct {
	Devices []device
}

// device is a device a driver prepared for a claim.
type device struct {
	PoolName     string
	DeviceName   string
	ShareID      *types.UID
	RequestNames []string
	CDIDeviceIDs []string
}

type checkpointData struct {
	Kind               string       `json:"kind,omitempty"`
	APIVersion         string       `json:"apiVersion,omitempty"`
	ClaimInfoStateList []claimState `json:"ClaimInfoStateList"`
}

type checkpoint struct {
	Data     string
	Checksum uint32
}

func (m *Manager) checkpointPath() string { return filepath.Join(m.cfg.RootDir, "dra_manager_state") }

func loadCheckpoint(path string) (map[string]*claimState, error) {
	out := map[string]*claimState{}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	var cp checkpoint
	if err := json.Unmarshal(raw, &cp); err != nil {
		return nil, fmt.Errorf("the DRA checkpoint %s is not valid JSON: %w (drain the node and remove it)", path, err)
	}
	if sum := crc32.ChecksumIEEE([]byte(cp.Data)); sum != cp.Checksum {
		return nil, fmt.Errorf("the DRA checkpoint %s is corrupt: checksum %d, computed %d (drain the node and remove it)", path, cp.Checksum, sum)
	}
	var data checkpointData
	if err := json.Unmarshal([]byte(cp.Data), &data); err != nil {
		return nil, fmt.Errorf("the DRA checkpoint %s has data that does not parse: %w", path, err)
	}
	for i := range data.ClaimInfoStateList {
		c := &data.ClaimInfoStateList[i]
		if c.PodUIDs == nil {
			c.PodUIDs = map[string]struct{}{}
		}
		out[c.Namespace+"/"+c.ClaimName] = c
	}
	return out, nil
}

// save writes the checkpoint atomically; the caller holds claimsMu.
func (m *Manager) save() error {
	list := make([]claimState, 0, len(m.claims))
	for _, c := range m.claims {
		list = append(list, *c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ClaimUID < list[j].ClaimUID })
	data, err := json.Marshal(checkpointData{Kind: "DRACheckpoint", APIVersion: "checkpoint.dra.kubelet.k8s.io/v1", ClaimInfoStateList: list})
	if err != nil {
		return err
	}
	blob, err := json.Marshal(checkpoint{Data: string(data), Checksum: crc32.ChecksumIEEE(data)})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(m.checkpointPath(), blob, 0o600); err != nil {
		return fmt.Errorf("checkpoint ResourceClaim state: %w", err)
	}
	return nil
}

// Prepare has the drivers prepare every ResourceClaim of the pod that is not
// prepared yet. Claims must exist, be reserved for the pod and allocated.
func (m *Manager) Prepare(ctx context.Context, pod *corev1.Pod) error {
	type pending struct {
		claim   *resourceapi.ResourceClaim
		drivers []string
	}
	var todo []pending
	add := func(name string, mustCheckOwner bool) error {
		claim, err := m.cfg.Client.ResourceV1().ResourceClaims(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("fetch ResourceClaim %s: %w", name, err)
		}
		if mustCheckOwner {
			if err := resourceclaim.IsForPod(pod, claim, false); err != nil {
				return err
			}
		}
		if !resourceclaim.IsReservedForPod(pod, claim, false) {
			return fmt.Errorf("pod %s (%s) is not allowed to use ResourceClaim %s (%s)", pod.Name, pod.UID, name, claim.UID)
		}
		if claim.Status.Allocation == nil {
			return fmt.Errorf("ResourceClaim %s: unallocated ResourceClaim", claim.Name)
		}
		var drivers []string
		for _, r := range claim.Status.Allocation.Devices.Results {
			if !slices.Contains(drivers, r.Driver) {
				drivers = append(drivers, r.Driver)
			}
		}
		for _, d := range drivers {
			if _, err := m.driver(d); err != nil {
				return err
			}
		}
		todo = append(todo, pending{claim: claim, drivers: drivers})
		return nil
	}
	for i := range pod.Spec.ResourceClaims {
		name, mustCheckOwner, err := resourceclaim.Name(pod, &pod.Spec.ResourceClaims[i])
		if err != nil {
			return err
		}
		if name == nil {
			continue // no claim needed
		}
		if err := add(*name, mustCheckOwner); err != nil {
			return err
		}
	}
	if name := m.extendedClaim(pod); name != "" {
		if err := add(name, false); err != nil {
			return err
		}
	}
	if len(todo) == 0 {
		return nil
	}
	m.claimsMu.Lock()
	defer m.claimsMu.Unlock()
	batches := map[string][]*drapb.Claim{}
	byUID := map[string]*claimState{}
	for _, p := range todo {
		key := p.claim.Namespace + "/" + p.claim.Name
		st := m.claims[key]
		if st == nil {
			st = &claimState{ClaimUID: p.claim.UID, ClaimName: p.claim.Name, Namespace: p.claim.Namespace,
				PodUIDs: map[string]struct{}{}, DriverState: map[string]driverState{}}
			for _, d := range p.drivers {
				st.DriverState[d] = driverState{}
			}
			m.claims[key] = st
		} else if st.ClaimUID != p.claim.UID {
			return fmt.Errorf("old ResourceClaim with same name %s and different UID %s still exists (previous pod force-deleted?!)", p.claim.Name, st.ClaimUID)
		}
		st.PodUIDs[string(pod.UID)] = struct{}{}
		if m.prepared[string(st.ClaimUID)] {
			continue
		}
		byUID[string(st.ClaimUID)] = st
		for d := range st.DriverState {
			batches[d] = append(batches[d], &drapb.Claim{Namespace: st.Namespace, Uid: string(st.ClaimUID), Name: st.ClaimName})
		}
	}
	if err := m.save(); err != nil { // the pod's references are on disk before any driver acts
		return err
	}
	for name, claims := range batches {
		if err := m.prepareBatch(ctx, name, claims, byUID); err != nil {
			return err
		}
	}
	for uid := range byUID {
		m.prepared[uid] = true
	}
	return m.save()
}

func (m *Manager) prepareBatch(ctx context.Context, name string, claims []*drapb.Claim, byUID map[string]*claimState) error {
	d, err := m.driver(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	resp, err := d.node.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: claims})
	if err != nil {
		return fmt.Errorf("NodePrepareResources: %w", err)
	}
	for uid, res := range resp.GetClaims() {
		st := byUID[uid]
		if st == nil {
			return fmt.Errorf("NodePrepareResources returned result for unknown claim UID %s", uid)
		}
		if res.GetError() != "" {
			return fmt.Errorf("NodePrepareResources failed for ResourceClaim %s: %s", st.ClaimName, res.GetError())
		}
		var devs []device
		for _, dv := range res.GetDevices() {
			devs = append(devs, device{PoolName: dv.GetPoolName(), DeviceName: dv.GetDeviceName(), ShareID: (*types.UID)(dv.ShareId),
				RequestNames: dv.GetRequestNames(), CDIDeviceIDs: dv.GetCdiDeviceIds()})
		}
		st.DriverState[name] = driverState{Devices: devs}
	}
	if n := len(claims) - len(resp.GetClaims()); n != 0 {
		return fmt.Errorf("NodePrepareResources skipped %d ResourceClaims", n)
	}
	return nil
}

// CDIDevices lists the CDI device IDs a container gets from the claims it
// names in resources.claims (all of a claim's devices, or a request's).
func (m *Manager) CDIDevices(pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	var extended []string
	if m.extendedClaim(pod) != "" {
		extended = extendedRequests(pod, c)
	}
	if len(c.Resources.Claims) == 0 && len(extended) == 0 {
		return nil, nil
	}
	m.claimsMu.Lock()
	defer m.claimsMu.Unlock()
	var out []string
	add := func(ids []string) {
		for _, id := range ids {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	for _, rc := range c.Resources.Claims {
		for i := range pod.Spec.ResourceClaims {
			pc := &pod.Spec.ResourceClaims[i]
			if pc.Name != rc.Name {
				continue
			}
			name, _, err := resourceclaim.Name(pod, pc)
			if err != nil {
				return nil, err
			}
			if name == nil {
				continue
			}
			st := m.claims[pod.Namespace+"/"+*name]
			if st == nil {
				return nil, fmt.Errorf("unable to get claim info for claim %s in namespace %s", *name, pod.Namespace)
			}
			for _, ds := range st.DriverState {
				for _, dv := range ds.Devices {
					if rc.Request == "" || len(dv.RequestNames) == 0 || slices.ContainsFunc(dv.RequestNames, func(r string) bool {
						return resourceclaim.BaseRequestRef(r) == rc.Request || r == rc.Request
					}) {
						add(dv.CDIDeviceIDs)
					}
				}
			}
		}
	}
	// The devices of the extended resource claim's requests that serve
	// this container's extended resources.
	if len(extended) > 0 {
		name := m.extendedClaim(pod)
		st := m.claims[pod.Namespace+"/"+name]
		if st == nil {
			return nil, fmt.Errorf("unable to get claim info for claim %s in namespace %s", name, pod.Namespace)
		}
		for _, ds := range st.DriverState {
			for _, dv := range ds.Devices {
				if slices.ContainsFunc(dv.RequestNames, func(r string) bool { return slices.Contains(extended, r) }) {
					add(dv.CDIDeviceIDs)
				}
			}
		}
	}
	return out, nil
}

// extendedClaim is the pod's extended resource claim when the node serves
// them, else "".
func (m *Manager) extendedClaim(pod *corev1.Pod) string {
	if !m.cfg.ExtendedResources {
		return ""
	}
	return ExtendedClaimName(pod)
}

// Unprepare drops the pod from the claims it used and has the drivers
// unprepare those no other pod on the node uses. A claim that fails stays
// for the next try.
func (m *Manager) Unprepare(ctx context.Context, uid types.UID) error {
	m.claimsMu.Lock()
	defer m.claimsMu.Unlock()
	batches := map[string][]*drapb.Claim{}
	last := map[string]string{} // claim UID -> key, for claims this pod was the last user of
	changed := false
	for key, st := range m.claims {
		if _, ok := st.PodUIDs[string(uid)]; !ok {
			continue
		}
		if len(st.PodUIDs) > 1 {
			delete(st.PodUIDs, string(uid))
			changed = true
			continue
		}
		last[string(st.ClaimUID)] = key
		for d := range st.DriverState {
			batches[d] = append(batches[d], &drapb.Claim{Namespace: st.Namespace, Uid: string(st.ClaimUID), Name: st.ClaimName})
		}
		if len(st.DriverState) == 0 {
			delete(m.claims, key)
			changed = true
		}
	}
	var errs []error
	for name, claims := range batches {
		if err := m.unprepareBatch(ctx, name, claims); err != nil {
			errs = append(errs, err)
			for _, c := range claims {
				delete(last, c.Uid) // kept: unprepared on the next try
			}
		}
	}
	for uid, key := range last {
		delete(m.claims, key)
		delete(m.prepared, uid)
		changed = true
	}
	if changed {
		if err := m.save(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(last) > 0 {
		klog.FromContext(ctx).V(2).Info("Unprepared the pod's ResourceClaims", "podUID", uid, "claims", len(last))
	}
	return nil
}

func (m *Manager) unprepareBatch(ctx context.Context, name string, claims []*drapb.Claim) error {
	d, err := m.driver(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	resp, err := d.node.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: claims})
	if err != nil {
		return fmt.Errorf("NodeUnprepareResources: %w", err)
	}
	var errs []error
	for _, c := range claims {
		res, ok := resp.GetClaims()[c.Uid]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("NodeUnprepareResources skipped ResourceClaim %s", c.Name))
		case res.GetError() != "":
			errs = append(errs, fmt.Errorf("NodeUnprepareResources failed for ResourceClaim %s: %s", c.Name, res.GetError()))
		}
	}
	return errors.Join(errs...)
}

// ContainerClaims is what the pod resources API reports for a container:
// each claim it names, with the devices its drivers prepared.
func (m *Manager) ContainerClaims(pod *corev1.Pod, c *corev1.Container) []*podresourcesv1.DynamicResource {
	m.claimsMu.Lock()
	defer m.claimsMu.Unlock()
	var out []*podresourcesv1.DynamicResource
	var names []string
	for i := range pod.Spec.ResourceClaims {
		pc := &pod.Spec.ResourceClaims[i]
		if !slices.ContainsFunc(c.Resources.Claims, func(rc corev1.ResourceClaim) bool { return rc.Name == pc.Name }) {
			continue
		}
		name, _, err := resourceclaim.Name(pod, pc)
		if err != nil || name == nil {
			continue
		}
		names = append(names, *name)
	}
	// The extended resource claim, for a container with a request mapped
	// to it (upstream reports the whole claim).
	if name := m.extendedClaim(pod); name != "" && slices.ContainsFunc(pod.Status.ExtendedResourceClaimStatus.RequestMappings,
		func(rm corev1.ContainerExtendedResourceRequest) bool { return rm.ContainerName == c.Name }) {
		names = append(names, name)
	}
	for _, name := range names {
		st := m.claims[pod.Namespace+"/"+name]
		if st == nil {
			continue
		}
		dr := &podresourcesv1.DynamicResource{ClaimName: st.ClaimName, ClaimNamespace: st.Namespace}
		drivers := make([]string, 0, len(st.DriverState))
		for d := range st.DriverState {
			drivers = append(drivers, d)
		}
		sort.Strings(drivers)
		for _, d := range drivers {
			for _, dv := range st.DriverState[d].Devices {
				cr := &podresourcesv1.ClaimResource{DriverName: d, PoolName: dv.PoolName, DeviceName: dv.DeviceName, ShareId: (*string)(dv.ShareID)}
				for _, id := range dv.CDIDeviceIDs {
					cr.CdiDevices = append(cr.CdiDevices, &podresourcesv1.CDIDevice{Name: id})
				}
				dr.ClaimResources = append(dr.ClaimResources, cr)
			}
		}
		out = append(out, dr)
	}
	return out
}
