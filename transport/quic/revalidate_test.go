package quic

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// reloader issues name's credentials into a directory of its own and
// loads them as a *pki.Reloader.
func (c *cluster) reloader(name string) *pki.Reloader {
	c.t.Helper()
	if err := pki.Issue(c.dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
		c.t.Fatal(err)
	}
	dir := filepath.Join(c.t.TempDir(), name)
	os.MkdirAll(dir, 0o700)
	for _, f := range []string{pki.CAFile, pki.CertFile(name), pki.KeyFile(name)} {
		b, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	r, err := pki.NewReloader(dir, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// Revoking b's certificate on a and revalidating cuts b off: a stream b
// had open to a fails on b's side, and b's next dials are refused at the
// handshake, while a and c still talk.
func TestRevalidateCutsOffRevokedPeer(t *testing.T) {
	cl := newCluster(t)
	ra, rb, rc := cl.reloader("a"), cl.reloader("b"), cl.reloader("c")
	a, _ := start(t, ra)
	b, _ := start(t, rb)
	cNode, _ := start(t, rc)
	la := listen(t, a, transport.ProtoRing)
	got := accept(la, 10*time.Second)
	s, err := b.Dial(ctxT(t, 10*time.Second), "a", a.Addr(), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r == nil {
		t.Fatal("no stream accepted")
	}
	defer r.Close()

	if cut := a.Revalidate(); len(cut) != 0 {
		t.Fatalf("nothing revoked yet, cut %v", cut)
	}
	ra.SetRevoked([]string{pki.Serial(rb.Current().Cert.Leaf)})
	start := time.Now()
	cut := a.Revalidate()
	if len(cut) != 1 || cut[0] != "b" {
		t.Fatalf("cut %v, want [b]", cut)
	}
	// b's stream ends with an error as soon as the close reaches it.
	if _, err := io.ReadAll(s); err == nil {
		t.Fatal("b's stream to a still reads")
	}
	t.Logf("b's stream failed %v after the revocation", time.Since(start).Round(time.Millisecond))
	// b cannot reach a again (in TLS 1.3 the client may finish its
	// handshake before the server refuses its certificate: then the
	// stream exchange fails).
	if _, err := b.Dial(ctxT(t, 5*time.Second), "a", a.Addr(), transport.ProtoRing, transport.DialOptions{Lane: 1}); err == nil {
		t.Fatal("b dialled a after its certificate was revoked")
	}
	// a refuses to dial b too.
	listen(t, b, transport.ProtoControl)
	if _, err := a.Dial(ctxT(t, 5*time.Second), "b", b.Addr(), transport.ProtoControl, transport.DialOptions{}); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("a dialling b: %v", err)
	}
	// c is untouched.
	listen(t, cNode, transport.ProtoControl)
	cs, err := a.Dial(ctxT(t, 5*time.Second), "c", cNode.Addr(), transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatalf("a dialling c: %v", err)
	}
	cs.Close()
}
