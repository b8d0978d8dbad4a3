package probes

import (
	"testing"
	"time"
)

// Workers made just after the agent started wait a random part of their
// period before the first probe, as upstream's; later ones do not.
func TestRestartJitter(t *testing.T) {
	period := 10 * time.Second
	if d := restartJitter(time.Now().Add(-time.Minute), period); d != 0 {
		t.Errorf("an agent up for a minute: jitter %s", d)
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		d := restartJitter(time.Now(), period)
		if d < 0 || d >= period {
			t.Fatalf("jitter %s outside [0, %s)", d, period)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 jitters took %d values", len(seen))
	}
}
