package nodefeatures

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func allOn(string) bool { return true }

func TestDeclaresWhatBosunHas(t *testing.T) {
	d, err := New("v1.36.3", allOn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ExtendWebSocketsToKubelet", "InPlacePodVerticalScalingInitContainers"}
	if got := d.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("declared %v, want %v", got, want)
	}
	off, err := New("v1.36.3", func(g string) bool { return g != "ExtendWebSocketsToKubelet" })
	if err != nil {
		t.Fatal(err)
	}
	if got := off.Names(); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("with ExtendWebSocketsToKubelet off: declared %v", got)
	}
	none, err := New("v1.36.3", func(g string) bool { return g != Gate })
	if err != nil {
		t.Fatal(err)
	}
	if got := none.Names(); len(got) != 0 {
		t.Errorf("with %s off: declared %v", Gate, got)
	}
	if _, err := New("not a version", allOn); err == nil {
		t.Error("a bad version was accepted")
	}
}

// A pod that needs a feature Bosun lacks is refused with upstream's reason
// and message; updates name what they would need.
func TestRefusesPodsNeedingMissingFeatures(t *testing.T) {
	d, err := New("v1.36.3", allOn)
	if err != nil {
		t.Fatal(err)
	}
	plain := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	if ok, _, msg := d.Admit(plain); !ok {
		t.Fatalf("a plain pod refused: %s", msg)
	}
	restartAll := plain.DeepCopy()
	restartAll.Spec.Containers[0].RestartPolicyRules = []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestartAllContainers,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
	ok, reason, msg := d.Admit(restartAll)
	if ok || reason != "PodFeatureUnsupported" || msg != "Pod requires node features that are not available: RestartAllContainersOnContainerExits" {
		t.Errorf("a pod restarting all containers on exit: %v %q %q", ok, reason, msg)
	}
	none, _ := New("v1.36.3", func(g string) bool { return g != Gate })
	if ok, _, _ := none.Admit(restartAll); !ok {
		t.Error("refused with the gate off")
	}

	withPodResources := plain.DeepCopy()
	withPodResources.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
	resized := withPodResources.DeepCopy()
	resized.Spec.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("2")
	if got := d.MissingForUpdate(withPodResources, resized); got != "InPlacePodLevelResourcesVerticalScaling" {
		t.Errorf("a pod-level resize needs %q, want InPlacePodLevelResourcesVerticalScaling", got)
	}
	withInit := plain.DeepCopy()
	withInit.Spec.InitContainers = []corev1.Container{{Name: "i", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}}}
	initResized := withInit.DeepCopy()
	initResized.Spec.InitContainers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
	if got := d.MissingForUpdate(withInit, initResized); got != "" {
		t.Errorf("an init container resize needs %q, which Bosun declares", got)
	}
}
