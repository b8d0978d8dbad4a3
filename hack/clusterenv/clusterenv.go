// Package clusterenv reads _output/local/env, the file the local cluster's
// harness writes (export NAME="value" lines), for the tools and tests that
// drive the cluster.
package clusterenv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Load reads the env file at path into a map.
func Load(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("no local cluster (%v): run make up first", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		env[k] = v
	}
	return env, sc.Err()
}
