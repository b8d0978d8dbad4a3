// Package app is Bosun's composition root: it builds every part from the
// configuration, starts them in order and stops them in reverse.
package app

import (
	"context"
	"errors"

	"github.com/bosun-dev/bosun/internal/config"
)

// Run runs the node agent until ctx ends.
func Run(ctx context.Context, cfg *config.Config) error {
	_ = ctx
	_ = cfg
	return errors.New("not implemented yet")
}
