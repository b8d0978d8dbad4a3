// Package version says which Kubernetes release Bosun stands in for.
package version

// Kubernetes is the kubelet version Bosun reports (node.status.nodeInfo.kubeletVersion)
// and implements the behaviour of.
const Kubernetes = "v1.36.3"

// Bosun is this build's own version; the Makefile may set it with -ldflags -X.
var Bosun = "v0.1.0-dev"
