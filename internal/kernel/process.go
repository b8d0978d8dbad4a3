package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ProcessSettings applies the agent's own process settings as upstream
// does at start: oomScoreAdj (the agent's oom_score_adj, so that the OOM
// killer takes pods first) and maxOpenFiles (the open files limit, soft and
// hard). Like upstream, a setting the kernel refuses (lowering the OOM score
// or raising the hard limit needs CAP_SYS_RESOURCE) is logged, not fatal.
// procSelf is /proc/self (a test seam).
func ProcessSettings(logger klog.Logger, procSelf string, oomScoreAdj int32, maxOpenFiles int64) {
	if err := writeOOMScoreAdj(procSelf, oomScoreAdj); err != nil {
		logger.Info("Failed to ApplyOOMScoreAdj", "err", err)
	}
	if maxOpenFiles > 0 {
		limit := uint64(maxOpenFiles)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
			logger.Error(err, "Failed to set rlimit on max file handles", "maxOpenFiles", maxOpenFiles)
		}
	}
}

func writeOOMScoreAdj(procSelf string, value int32) error {
	file := filepath.Join(procSelf, "oom_score_adj")
	if err := os.WriteFile(file, []byte(strconv.Itoa(int(value))), 0o644); err != nil {
		return fmt.Errorf("failed to set %s to %d: %w", file, value, err)
	}
	return nil
}
