package runtime

import (
	"context"
	"errors"
	"testing"

	"k8s.io/component-base/metrics/testutil"
	critest "k8s.io/cri-api/pkg/apis/testing"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

func TestCallsAreCountedTimedAndTheirErrorsCounted(t *testing.T) {
	bmetrics.Register("node-1")
	fake := critest.NewFakeRuntimeService()
	r := instrumentedRuntime{fake}
	ctx := context.Background()
	before, _ := testutil.GetCounterMetricValue(bmetrics.RuntimeOperations.WithLabelValues("list_containers"))
	beforeErr, _ := testutil.GetCounterMetricValue(bmetrics.RuntimeOperationsErrors.WithLabelValues("stop_container"))
	if _, err := r.ListContainers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	fake.InjectError("StopContainer", errors.New("boom"))
	if err := r.StopContainer(ctx, "gone", 1); err == nil {
		t.Fatal("the injected error was lost")
	}
	after, _ := testutil.GetCounterMetricValue(bmetrics.RuntimeOperations.WithLabelValues("list_containers"))
	afterErr, _ := testutil.GetCounterMetricValue(bmetrics.RuntimeOperationsErrors.WithLabelValues("stop_container"))
	if after != before+1 || afterErr != beforeErr+1 {
		t.Errorf("list_containers counted %v -> %v, stop_container errors %v -> %v", before, after, beforeErr, afterErr)
	}
	n, err := testutil.GetHistogramMetricCount(bmetrics.RuntimeOperationsDuration.WithLabelValues("list_containers"))
	if err != nil || n < 1 {
		t.Errorf("list_containers durations observed %d (%v)", n, err)
	}
}
