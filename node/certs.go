package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// The certificate lifecycle of a node: its credentials reload without a
// restart (Reload, SIGHUP in `braid node`), the certificates the cluster
// revoked (coordinator.RevokeCert, in the replicated state) are refused at
// every handshake and cut off where connected, and a certificate close to
// its end is warned about (log, metric, GET /v1/certs, `braid status`).
//
// Revocation is enforced by the TLS transport the node builds from
// Config.TLSDir; on a transport given in Deps (in-process tests on memnet,
// which has no certificates) it is only recorded.

// ExpiryWarning is how close to its end a certificate (the node's own, or
// a CA of its bundle) makes the node warn: in its log, in GET /v1/certs
// and so in `braid status`.
const ExpiryWarning = 30 * 24 * time.Hour

// expiryCheckInterval is how often the node looks at its certificates'
// ends again while it runs.
const expiryCheckInterval = 12 * time.Hour

// certLifecycle is the node's side of its credentials.
type certLifecycle struct {
	// creds are the node's reloadable credentials; nil when the node runs
	// on a transport it did not build (Deps.Transport). Set once in New.
	creds *pki.Reloader

	mu      sync.Mutex
	applied []string // revoked serials given to creds and the transport, sorted
}

// revalidator is a transport that can re-check the peers of connections
// already up (transport/quic's Transport).
type revalidator interface {
	Revalidate() []transport.PeerID
}

// CertInfo describes one certificate.
type CertInfo struct {
	Subject  string    `json:"subject"` // CommonName: the node's name, or the CA's
	Serial   string    `json:"serial"`  // pki.Serial
	NotAfter time.Time `json:"not_after"`
	// ExpiresIn is the number of seconds left (negative once expired).
	ExpiresIn float64 `json:"expires_in_seconds"`
}

func certInfo(c *x509.Certificate, now time.Time) CertInfo {
	return CertInfo{Subject: c.Subject.CommonName, Serial: pki.Serial(c), NotAfter: c.NotAfter.UTC(),
		ExpiresIn: c.NotAfter.Sub(now).Seconds()}
}

// CertsStatus is GET /v1/certs: this node's certificate and CA bundle, the
// revoked certificates, and warnings about certificates that end within
// ExpiryWarning.
type CertsStatus struct {
	Self     string                   `json:"self"`
	Node     *CertInfo                `json:"node,omitempty"` // nil without TLS
	CAs      []CertInfo               `json:"cas,omitempty"`
	Revoked  []coordinator.Revocation `json:"revoked"`
	Warnings []string                 `json:"warnings,omitempty"`
}

// Certs returns the node's certificates as they are now.
func (n *Node) Certs() CertsStatus {
	s := CertsStatus{Self: n.cfg.Name, Revoked: n.coord.State().Revoked}
	if s.Revoked == nil {
		s.Revoked = []coordinator.Revocation{}
	}
	if n.certs.creds != nil {
		c := n.certs.creds.Current()
		now := time.Now()
		ni := certInfo(c.Cert.Leaf, now)
		s.Node = &ni
		for _, ca := range c.CAs {
			s.CAs = append(s.CAs, certInfo(ca, now))
		}
		s.Warnings = ExpiryWarnings(c, now)
	}
	return s
}

// ExpiryWarnings returns a warning for the node certificate of c and for
// each CA of its bundle that ends within ExpiryWarning of now (or has
// ended), naming it, when, and what to do.
func ExpiryWarnings(c *pki.NodeCreds, now time.Time) []string {
	var out []string
	left := func(t time.Time) string {
		d := t.Sub(now)
		if d <= 0 {
			return fmt.Sprintf("expired at %s", t.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("expires in %.1f days (%s)", d.Hours()/24, t.UTC().Format(time.RFC3339))
	}
	if leaf := c.Cert.Leaf; leaf.NotAfter.Sub(now) < ExpiryWarning {
		out = append(out, fmt.Sprintf("certificate of node %s (serial %s) %s: issue a new one with `braid ca issue --name %s` and send the node SIGHUP, or its peers will refuse it",
			leaf.Subject.CommonName, pki.Serial(leaf), left(leaf.NotAfter), leaf.Subject.CommonName))
	}
	for _, ca := range c.CAs {
		if ca.NotAfter.Sub(now) < ExpiryWarning {
			out = append(out, fmt.Sprintf("CA %q (serial %s) %s: rotate it (`braid ca rotate`, docs/SECURITY.md)",
				ca.Subject.CommonName, pki.Serial(ca), left(ca.NotAfter)))
		}
	}
	return out
}

// certSerial is the serial of the certificate this node presents ("" when
// it has none of its own).
func (n *Node) certSerial() string {
	if n.certs.creds == nil {
		return ""
	}
	return pki.Serial(n.certs.creds.Current().Cert.Leaf)
}

// ErrReload is wrapped by Reload's errors.
var ErrReload = errors.New("node: reload")

// Reload reads the node's certificate, key, CA bundle and gossip keys from
// Config.TLSDir again (what SIGHUP does to `braid node`) and uses them for
// every new handshake; connections whose peer the new CA bundle no longer
// trusts are closed. Credentials that fail their checks are not used: the
// node keeps what it had, and the error says what was wrong. Gossip keys
// are reloaded only when the node read them from TLSDir.
func (n *Node) Reload() error {
	var errs []error
	if c := n.certs.creds; c != nil {
		before := c.Current()
		now, err := c.Reload()
		if err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("reloaded TLS credentials", "serial", pki.Serial(now.Cert.Leaf), "not_after", now.Cert.Leaf.NotAfter.UTC(),
				"cas", len(now.CAs))
			n.revalidate()
			if pki.Serial(now.Cert.Leaf) != pki.Serial(before.Cert.Leaf) {
				n.gossipMeta()
			}
		}
	}
	if n.deps.GossipKey == nil && !n.deps.InsecureGossip {
		keys, err := pki.LoadGossipKeys(n.cfg.TLSDir)
		if err == nil {
			err = n.ml.SetKeys(keys)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("reloaded gossip keys", "keys", len(keys))
		}
	}
	n.warnExpiry()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return nil
}

// gossipMeta gossips this node's metadata again (its certificate changed).
func (n *Node) gossipMeta() {
	has, err := n.coord.HasState()
	if err != nil {
		n.log.Warn("gossiping new metadata", "err", err)
		return
	}
	if err := n.ml.SetMeta(n.meta(has)); err != nil {
		n.log.Warn("gossiping new metadata", "err", err)
	}
}

// revalidate closes the connections whose peer certificate the node's
// credentials no longer accept.
func (n *Node) revalidate() {
	if rv, ok := n.tr.(revalidator); ok {
		if cut := rv.Revalidate(); len(cut) > 0 {
			n.log.Warn("closed connections of peers whose certificate is no longer accepted", "peers", cut)
		}
	}
}

// warnExpiry logs a warning for each certificate that ends within
// ExpiryWarning.
func (n *Node) warnExpiry() {
	if n.certs.creds == nil {
		return
	}
	for _, w := range ExpiryWarnings(n.certs.creds.Current(), time.Now()) {
		n.log.Warn(w)
	}
}

// RevokeRequest is the body of POST /v1/certs/revoke.
type RevokeRequest struct {
	// Serial is the certificate's serial number (pki.Serial: lower-case
	// hexadecimal, no leading zeros; `braid ca revoke` reads it from the
	// certificate file).
	Serial string `json:"serial"`
	// Name is the node the certificate was issued to.
	Name string `json:"name"`
}

// RevokeCert commits the revocation of a certificate through the leader
// and returns it. Every node then refuses the certificate at the
// handshake, closes its connections, and the member that presents it is
// dropped from the cluster as if it had left.
func (n *Node) RevokeCert(ctx context.Context, req RevokeRequest) (coordinator.Revocation, error) {
	cmd := coordinator.RevokeCert{Serial: req.Serial, Name: req.Name, At: time.Now().Unix()}
	if err := n.applyAnywhere(ctx, cmd); err != nil {
		return coordinator.Revocation{}, err
	}
	r, _ := n.coord.State().RevokedCert(req.Serial)
	if r.Serial == "" { // applied on the leader, not yet here
		r = coordinator.Revocation(cmd)
	}
	return r, nil
}

// watchCerts applies every change of the revoked set as the replicated
// state moves, and warns about certificates near their end at start and
// every expiryCheckInterval.
func (n *Node) watchCerts() {
	defer n.wg.Done()
	n.warnExpiry()
	tick := time.NewTicker(expiryCheckInterval)
	defer tick.Stop()
	for {
		st, changed := n.coord.Watch()
		n.applyRevocations(st)
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-tick.C:
			n.warnExpiry()
		}
	}
}

// applyRevocations makes st's revoked set the one the handshakes check,
// closes the connections of revoked peers, and reports the members that
// present a revoked certificate as gone, so that the leader drops them
// from the members, the epoch and the Raft configuration as it does a
// member that left.
func (n *Node) applyRevocations(st coordinator.State) {
	serials := st.RevokedSerials()
	n.certs.mu.Lock()
	same := slices.Equal(serials, n.certs.applied)
	n.certs.applied = serials
	n.certs.mu.Unlock()
	if same {
		return
	}
	if n.certs.creds != nil {
		n.certs.creds.SetRevoked(serials)
		if _, ok := st.RevokedCert(n.certSerial()); ok {
			n.log.Error("this node's certificate has been revoked: its peers refuse it; issue it a new one and send SIGHUP", "serial", n.certSerial())
		}
	}
	n.revalidate()
	for _, m := range n.ml.Members() {
		if m.State != "alive" || m.Name == n.cfg.Name || m.Meta.Cert == "" {
			continue
		}
		r, ok := st.RevokedCert(m.Meta.Cert)
		if !ok {
			continue
		}
		if fm, known := st.Member(m.Name); known && fm.State != coordinator.MemberAlive {
			continue
		}
		n.log.Warn("dropping a member whose certificate was revoked", "member", m.Name, "serial", r.Serial, "revoked_at", time.Unix(r.At, 0).UTC())
		n.bootMu.Lock()
		delete(n.admitted, m.Name)
		n.bootMu.Unlock()
		n.coord.MemberLeft(m.Name)
	}
}

func (n *Node) registerCertMetrics() {
	if n.certs.creds == nil {
		return
	}
	expiry := func(which string, f func(*pki.NodeCreds) time.Time) {
		n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "braid", Name: "cert_expiry_seconds",
			Help:        "Seconds until a certificate of this node expires (negative once expired): cert=node its own, cert=ca the earliest-ending CA of its bundle.",
			ConstLabels: prometheus.Labels{"cert": which}}, func() float64 {
			return time.Until(f(n.certs.creds.Current())).Seconds()
		}))
	}
	expiry("node", func(c *pki.NodeCreds) time.Time { return c.Cert.Leaf.NotAfter })
	expiry("ca", func(c *pki.NodeCreds) time.Time {
		first := c.CAs[0].NotAfter
		for _, ca := range c.CAs[1:] {
			if ca.NotAfter.Before(first) {
				first = ca.NotAfter
			}
		}
		return first
	})
}

// certRoutes serves the certificate endpoints of the HTTP API:
//
//	GET  /v1/certs          CertsStatus
//	POST /v1/certs/revoke   RevokeRequest → the coordinator.Revocation
//	POST /v1/certs/reload   reload the credentials and gossip keys (as SIGHUP)
func (n *Node) certRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/certs", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Certs())
	})
	mux.HandleFunc("POST /v1/certs/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req RevokeRequest
		if err := readJSON(w, r, 4<<10, &req); err != nil {
			http.Error(w, "braid: revoke request: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		rev, err := n.RevokeCert(ctx, req)
		if err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, coordinator.ErrInvalidCommand) {
				code = http.StatusBadRequest
			}
			http.Error(w, "braid: "+err.Error(), code)
			return
		}
		writeJSON(w, http.StatusOK, rev)
	})
	mux.HandleFunc("POST /v1/certs/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Reload(); err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		writeJSON(w, http.StatusOK, n.Certs())
	})
}
