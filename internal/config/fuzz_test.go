package config

import (
	"strings"
	"testing"
)

// A KubeletConfiguration file, whatever it holds, loads or fails with an
// error naming the file; it never panics.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		header + "maxPods: 110\n", header + "evictionHard:\n  memory.available: 100Mi\n",
		`{"kind":"KubeletConfiguration","apiVersion":"kubelet.config.k8s.io/v1beta1","port":10250,}`,
		header + "maxPods: [\n", "kind: Pod\napiVersion: v1\n", "", "\x00", header + "authorization: {mode: Webhook}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kc, _, err := Decode("/etc/kubernetes/kubelet-config.yaml", data)
		if err != nil {
			if !strings.Contains(err.Error(), "kubelet-config.yaml") {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		if kc == nil {
			t.Fatal("no error and no configuration")
		}
		SetDefaults(kc)
		_ = Validate(kc)
	})
}

// The flag set, whatever it is given, parses or fails with an error; it never
// panics.
func FuzzFlags(f *testing.F) {
	for _, seed := range []string{"--max-pods=3", "--v=2 --hostname-override=n", "--eviction-hard=memory.available<1Gi", "--no-such", "run", "--cgroup-root=x --allowed-unsafe-sysctls=net.*,kernel.msg*", "--allow-privileged=false"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		for _, a := range args {
			if strings.HasPrefix(a, "--config") {
				return // reads a file of the fuzzer's choosing
			}
		}
		_, _ = Load(args)
	})
}
