// Command hostpath-proxy is test equipment, not product: the proxy mode of
// csi-driver-host-path's hostpathplugin, which upstream's DRA e2e specs run
// in their driver pods as
//
//	/hostpathplugin --endpoint=<unix socket> --proxy-endpoint=tcp://:<port>
//
// so that the driver itself can run inside e2e.test: e2e.test opens
// connections to <port> through port forwarding ahead of need, and each
// connection a client (the node agent) makes to the unix socket is joined to
// the next of them, bytes copied both ways until either side closes. The
// offline image registry.k8s.io/sig-storage/hostpathplugin carries it, since
// that module is not served to this machine.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	endpoint := flag.String("endpoint", "", "the unix socket clients connect to (unix:// optional)")
	proxy := flag.String("proxy-endpoint", "", "tcp://[host]:port where the real server's connections come in")
	flag.Int("v", 0, "log verbosity (accepted for compatibility)")
	flag.Parse()
	sock := strings.TrimPrefix(*endpoint, "unix://")
	addr, ok := strings.CutPrefix(*proxy, "tcp://")
	if sock == "" || !ok {
		fmt.Fprintln(os.Stderr, "--endpoint=<unix socket> and --proxy-endpoint=tcp://[host]:port are required")
		os.Exit(2)
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(sock)
	unix, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("proxying %s to connections from %s", sock, addr)
	upstream := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				log.Fatal(err)
			}
			upstream <- c
		}
	}()
	for {
		client, err := unix.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() { join(client, <-upstream) }()
	}
}

// join copies bytes both ways until either side is done, then closes both.
func join(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	_ = a.Close()
	_ = b.Close()
}
