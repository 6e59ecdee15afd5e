package main

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/braidml/braid/node/client"
)

// Every command that talks to a node says what to do when it cannot: an
// --api without a scheme gets it spelt out before any request, and a node
// that does not answer gets the question whether it runs there, in each
// command's error (explainNodeErrors reaches subcommands too).
func TestCLINodeErrorHints(t *testing.T) {
	ownRuntimeDir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	for _, c := range []struct{ cmd, args []string }{
		{[]string{"status"}, nil}, {[]string{"job", "list"}, nil}, {[]string{"job", "status"}, []string{"j1"}},
		{[]string{"data", "ls"}, nil}, {[]string{"data", "status"}, []string{"docs"}},
	} {
		call := func(api string) error {
			_, err := run(t, append(append(c.cmd[:len(c.cmd):len(c.cmd)], "--api", api), c.args...)...)
			return err
		}
		if err := call(strings.TrimPrefix(down, "http://")); !errors.Is(err, client.ErrURL) || !strings.Contains(err.Error(), "--api") ||
			!strings.Contains(err.Error(), "write "+down) {
			t.Errorf("%v with an --api without a scheme: %v", c.cmd, err)
		}
		if err := call(down); !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), "is `braid node` running there? set --api or BRAID_API") {
			t.Errorf("%v with no node at %s: %v", c.cmd, down, err)
		}
	}
}
