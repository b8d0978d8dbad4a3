package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criremote "k8s.io/cri-client/pkg"
)

// measureFloor starts n pods straight through CRI (sandbox, container,
// start: what an agent must do at least), with no agent and no apiserver
// in the way, and returns p50/p99 per pod and pods/s.
func measureFloor(ctx context.Context, root string, n int) (sample, error) {
	fmt.Println(">>> floor: pods straight through CRI")
	if err := up(root, "bosun"); err != nil {
		return nil, err
	}
	c, err := loadCluster(root)
	if err != nil {
		return nil, err
	}
	if pid := c.agentPid(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM) // the agent would remove sandboxes it does not know
		time.Sleep(3 * time.Second)
	}
	rs, err := criremote.NewRemoteRuntimeService(ctx, c.env["CRI_ENDPOINT"], 2*time.Minute, nil, false)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var lat []float64
	var ids []string
	var wg sync.WaitGroup
	begin := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t := time.Now()
			id, err := startOne(ctx, rs, i)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				lat = append(lat, time.Since(t).Seconds())
				ids = append(ids, id)
			} else {
				fmt.Println("floor pod failed:", err)
			}
		}(i)
	}
	wg.Wait()
	total := time.Since(begin).Seconds()
	for _, id := range ids {
		_ = rs.StopPodSandbox(ctx, id)
		_ = rs.RemovePodSandbox(ctx, id)
	}
	if len(lat) != n {
		return nil, fmt.Errorf("only %d of %d floor pods started", len(lat), n)
	}
	sort.Float64s(lat)
	return sample{"p50": pct(lat, 50), "p99": pct(lat, 99), "podsPerSec": float64(n) / total}, nil
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
