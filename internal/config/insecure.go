package config

import (
	"crypto/tls"
	"fmt"
	"os"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Insecure lists, one line each, the settings of cfg that weaken the node
// and how to fix each: what Bosun warns of at start. Nothing is refused: the
// upstream kubelet accepts them too.
func Insecure(cfg *Config) []string {
	kc := cfg.Kubelet
	var out []string
	if a := kc.Authentication.Anonymous.Enabled; a != nil && *a {
		out = append(out, "authentication.anonymous.enabled (--anonymous-auth) is true: any client reaching the node API is system:anonymous; set it to false")
	}
	if kc.Authorization.Mode == kubeletv1beta1.KubeletAuthorizationModeAlwaysAllow {
		out = append(out, "authorization.mode (--authorization-mode) is AlwaysAllow: every authenticated client may exec into pods; set it to Webhook")
	}
	if kc.ReadOnlyPort > 0 {
		out = append(out, fmt.Sprintf("readOnlyPort (--read-only-port) %d serves pods and node stats without authentication; set it to 0", kc.ReadOnlyPort))
	}
	if kc.Authentication.X509.ClientCAFile == "" {
		out = append(out, "authentication.x509.clientCAFile (--client-ca-file) is empty: client certificates are not verified, so the apiserver cannot authenticate to the node by certificate; set it to the cluster CA")
	}
	weak := map[string]bool{}
	for _, c := range tls.InsecureCipherSuites() {
		weak[c.Name] = true
	}
	for _, name := range kc.TLSCipherSuites {
		if weak[name] {
			out = append(out, fmt.Sprintf("tlsCipherSuites (--tls-cipher-suites) names %s, a cipher suite with known weaknesses; remove it", name))
		}
	}
	if kc.TLSMinVersion == "VersionTLS10" || kc.TLSMinVersion == "VersionTLS11" {
		out = append(out, fmt.Sprintf("tlsMinVersion (--tls-min-version) %s admits deprecated TLS versions; use VersionTLS12 or VersionTLS13", kc.TLSMinVersion))
	}
	for _, f := range []struct{ what, path string }{
		{"the --config file", cfg.ConfigFile}, {"the --kubeconfig file", cfg.Kubeconfig},
		{"the --bootstrap-kubeconfig file", cfg.BootstrapKubeconfig}, {"tlsPrivateKeyFile", kc.TLSPrivateKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err == nil && st.Mode().Perm()&0o077 != 0 {
			out = append(out, fmt.Sprintf("%s %s has mode %04o: other users may read it; chmod 600 %s", f.what, f.path, st.Mode().Perm(), f.path))
		}
	}
	return out
}
