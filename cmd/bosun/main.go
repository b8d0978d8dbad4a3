// Command bosun is a Kubernetes node agent: a drop-in for the kubelet, started
// with the kubelet's flags and KubeletConfiguration file.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/app"
	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "join" || os.Args[1] == "preflight") {
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		run := runJoin
		if os.Args[1] == "preflight" {
			run = runPreflight
		}
		rc := run(ctx, os.Args[2:])
		cancel()
		os.Exit(rc)
	}
	cfg, err := config.Load(os.Args[1:])
	switch {
	case errors.Is(err, config.ErrHelp):
		fmt.Print(config.Usage())
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "bosun: %v\n", err)
		os.Exit(1)
	case cfg.ShowVersion:
		fmt.Printf("Kubernetes %s (Bosun %s)\n", version.Kubernetes, version.Bosun)
		return
	}
	// logging.format (text or json), verbosity, vmodule and flush frequency,
	// validated by config.Load.
	if err := logsapi.ValidateAndApply(&cfg.Kubelet.Logging, nil); err != nil {
		fmt.Fprintf(os.Stderr, "bosun: logging: %v\n", err)
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logger := klog.Background()
	for _, w := range cfg.Warnings {
		logger.Info("WARNING: " + w)
	}
	for _, w := range config.Insecure(cfg) {
		logger.Info("WARNING: insecure setting: " + w)
	}
	if err := app.Run(klog.NewContext(ctx, logger), cfg); err != nil {
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}
