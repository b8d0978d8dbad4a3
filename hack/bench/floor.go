package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// measureFloor starts each batch of the sweep straight through CRI
// (sandbox, container, start: what an agent must do at least), with no
// agent and no apiserver in the way, and records per batch size p50/p99
// per pod and when the last pod was started. It also reads the runtime's
// name and version into m.
func measureFloor(ctx context.Context, root string, p plan, m *machine) (sample, error) {
	fmt.Println(">>> floor: pods straight through CRI")
	if err := up(root, "bosun", p.maxPods()); err != nil {
		return nil, err
	}
	c, err := loadCluster(ctx, root)
	if err != nil {
		return nil, err
	}
	if pid := c.agentPid(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM) // the agent would remove sandboxes it does not know
		time.Sleep(3 * time.Second)
	}
	v, err := c.rs.Version(ctx, "")
	if err != nil {
		return nil, err
	}
	m.Runtime = v.RuntimeName + " " + v.RuntimeVersion
	s := sample{}
	for _, n := range p.sizes {
		if err := floorBatch(ctx, c, n, s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func floorBatch(ctx context.Context, c *cluster, n int, s sample) error {
	var mu sync.Mutex
	var lat []float64
	var ids []string
	var failure error
	var wg sync.WaitGroup
	begin := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t := time.Now()
			id, err := startOne(ctx, c.rs, i)
			mu.Lock()
			defer mu.Unlock()
			if id != "" {
				ids = append(ids, id)
			}
			if err != nil {
				failure = fmt.Errorf("floor pod %d of %d: %w", i, n, err)
				return
			}
			lat = append(lat, time.Since(t).Seconds())
		}(i)
	}
	wg.Wait()
	last := time.Since(begin).Seconds()
	for _, id := range ids {
		_ = c.rs.StopPodSandbox(ctx, id)
		_ = c.rs.RemovePodSandbox(ctx, id)
	}
	if failure != nil {
		return failure
	}
	sort.Float64s(lat)
	key := fmt.Sprintf("startup%d", n)
	s[key+".p50"], s[key+".p99"], s[key+".last"] = pct(lat, 50), pct(lat, 99), last
	return nil
}

func startOne(ctx context.Context, rs interface {
	RunPodSandbox(context.Context, *runtimeapi.PodSandboxConfig, string) (string, error)
	CreateContainer(context.Context, string, *runtimeapi.ContainerConfig, *runtimeapi.PodSandboxConfig) (string, error)
	StartContainer(context.Context, string) error
}, i int) (string, error) {
	uid := fmt.Sprintf("floor-%d-%d", time.Now().UnixNano(), i)
	sb := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("floor-%d", i), Namespace: "bench-floor", Uid: uid},
		Hostname:     fmt.Sprintf("floor-%d", i),
		LogDirectory: "/var/log/pods/bench-floor_" + uid,
		Labels:       map[string]string{"io.kubernetes.pod.uid": uid},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/besteffort/pod" + uid},
	}
	id, err := rs.RunPodSandbox(ctx, sb, "")
	if err != nil {
		return "", err
	}
	cid, err := rs.CreateContainer(ctx, id, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: busybox},
		Command: []string{"sleep", "3600"}, LogPath: "c/0.log",
	}, sb)
	if err != nil {
		return id, err
	}
	return id, rs.StartContainer(ctx, cid)
}
