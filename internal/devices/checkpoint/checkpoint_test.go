package checkpoint

import (
	"strings"
	"testing"
)

// These files were written by the upstream kubelet v1.36.3's own checkpoint
// code (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/checkpoint).
const (
	upstreamFile  = `{"Data":{"PodDeviceEntries":[{"PodUID":"uid-1","ContainerName":"c","ResourceName":"example.com/dev","DeviceIDs":{"-1":["dev-0","dev-1"],"0":["dev-2"]},"AllocResp":"CgMBAgM="}],"RegisteredDevices":{"example.com/dev":["dev-0","dev-1","dev-2"]}},"Checksum":1221749011}`
	upstreamEmpty = `{"Data":{"PodDeviceEntries":null,"RegisteredDevices":null},"Checksum":1944006890}`
)

func TestReadsAndWritesUpstreamsFile(t *testing.T) {
	entries, registered, err := Decode([]byte(upstreamFile))
	if err != nil {
		t.Fatalf("upstream's file: %v", err)
	}
	if len(entries) != 1 || entries[0].DeviceIDs[-1][1] != "dev-1" || string(entries[0].AllocResp) != "\n\x03\x01\x02\x03" || len(registered["example.com/dev"]) != 3 {
		t.Fatalf("decoded %+v %v", entries, registered)
	}
	out, err := Encode(entries, registered)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != upstreamFile {
		t.Errorf("Bosun writes\n%s\nupstream wrote\n%s", out, upstreamFile)
	}
	if _, _, err := Decode([]byte(upstreamEmpty)); err != nil {
		t.Errorf("upstream's empty file: %v", err)
	}
	// What Bosun writes for no devices reads back.
	empty, err := Encode(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Decode(empty); err != nil {
		t.Errorf("Bosun's empty file: %v", err)
	}
}

func TestCorruptFileIsRefused(t *testing.T) {
	tampered := strings.Replace(upstreamFile, `"dev-2"]}}`, `"dev-3"]}}`, 1)
	if _, _, err := Decode([]byte(tampered)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("tampered file: %v", err)
	}
	if _, _, err := Decode([]byte(`{"Data":`)); err == nil {
		t.Error("truncated file accepted")
	}
}
