package quic

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// Revoking b's certificate on a and revalidating cuts b off: a stream b
// had open to a fails on b's side, and b's next dials are refused at the
// handshake, while a and c still talk.
func TestRevalidateCutsOffRevokedPeer(t *testing.T) {
	cl := newCluster(t)
	ra, rb, rc := cl.Reloader("a"), cl.Reloader("b"), cl.Reloader("c")
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
