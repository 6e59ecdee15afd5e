package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/node"
)

// SIGTERM ends a node within 10 s whatever its API clients do: headers
// sent a byte a second, a body that never finishes, an idle keep-alive
// connection (issue 12: "a slowloris client while SIGTERM ends the node
// within 10 s").
func TestSIGTERMWithSlowClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t)
	tlsDir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "ca", "init", "--dir", tlsDir)
	mustRun(t, "ca", "issue", "--dir", tlsDir, "--name", "s1", "--host", "127.0.0.1")
	p := startNode(t, bin, tlsDir, "s1", nil, 1)
	waitStatus(t, p, "a leader", func(s node.Status) bool { return s.Leader != "" })

	addr := strings.TrimPrefix(p.api, "http://")
	stop := make(chan struct{})
	defer close(stop)
	slow := func(first, rest string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprint(c, first)
		go func() {
			for i := range len(rest) {
				if _, err := c.Write([]byte{rest[i]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
			}
		}()
	}
	host := "Host: " + addr + "\r\n"
	slow("GET /v1/status HTTP/1.1\r\n", host+"X-Slow: "+strings.Repeat("a", 60))
	slow("POST /v1/datasets HTTP/1.1\r\n"+host+"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n", strings.Repeat(" ", 1000))
	slow("GET /v1/status HTTP/1.1\r\n"+host+"\r\n", "") // then idle, kept alive
	time.Sleep(2 * time.Second)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		t.Logf("the node exited %v after SIGTERM: %v", time.Since(start), err)
	case <-time.After(10 * time.Second):
		t.Fatalf("the node still runs 10 s after SIGTERM")
	}
}
