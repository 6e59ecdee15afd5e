package coordinator

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// MaxRevoked bounds the revoked certificates the FSM holds.
const MaxRevoked = 4096

// Revocation is a node certificate the cluster no longer accepts: every
// node refuses it at the TLS handshake and closes the connections that
// used it (package node enforces it; the FSM only records it).
type Revocation struct {
	// Serial is the certificate's serial number in lower-case hexadecimal
	// without leading zeros (pki.Serial).
	Serial string `json:"serial"`
	// Name is the node the certificate was issued to (its CommonName); the
	// member of that name is dropped from the cluster as if it had left.
	Name string `json:"name"`
	// At is when the revocation was asked for, in Unix seconds, as the
	// node that proposed it read its clock: for operators, not for logic.
	At int64 `json:"at"`
}

// RevokeCert records that the certificate with serial Serial, issued to
// Name, is revoked. Revoking a serial already revoked changes nothing (the
// first record stays) and is not an error. There is no command that takes
// a revocation back: issue a new certificate instead.
type RevokeCert Revocation

// TypeRevokeCert is RevokeCert's name in the envelope.
const TypeRevokeCert CommandType = "cert.revoke"

func (RevokeCert) Type() CommandType { return TypeRevokeCert }

func (c RevokeCert) validate() error {
	if err := validSerial(c.Serial); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.Serial, err)
	}
	if c.At <= 0 {
		return fmt.Errorf("%w: %s %s: time %d, want > 0 (Unix seconds)", ErrInvalidCommand, c.Type(), c.Serial, c.At)
	}
	return nil
}

func (c RevokeCert) apply(s *fsmState) error {
	if _, ok := s.revoked[c.Serial]; ok {
		return nil
	}
	if len(s.revoked) >= MaxRevoked {
		return fmt.Errorf("%w: %s %s: %d revoked certificates, limit %d", ErrLimit, c.Type(), c.Serial, len(s.revoked), MaxRevoked)
	}
	s.revoked[c.Serial] = Revocation(c)
	return nil
}

// validSerial checks a serial in pki.Serial's form: 1..40 lower-case
// hexadecimal digits (RFC 5280 bounds serials to 20 bytes), no leading
// zero.
func validSerial(s string) error {
	if len(s) < 1 || len(s) > 40 {
		return fmt.Errorf("serial of %d digits, want 1..40", len(s))
	}
	if s[0] == '0' && s != "0" {
		return fmt.Errorf("serial %q has a leading zero", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("serial %q is not lower-case hexadecimal", truncate(s, 44))
		}
	}
	return nil
}

// exportRevoked returns the revocations sorted by serial (nil for none).
func (s *fsmState) exportRevoked() []Revocation {
	if len(s.revoked) == 0 {
		return nil
	}
	out := make([]Revocation, 0, len(s.revoked))
	for _, k := range slices.Sorted(maps.Keys(s.revoked)) {
		out = append(out, s.revoked[k])
	}
	return out
}

// restoreRevoked checks a snapshot's revocations and adds them to s.
func restoreRevoked(s *fsmState, rs []Revocation) error {
	if len(rs) > MaxRevoked {
		return fmt.Errorf("%w: %d revoked certificates, limit %d", ErrInvalidSnapshot, len(rs), MaxRevoked)
	}
	for _, r := range rs {
		if err := RevokeCert(r).validate(); err != nil {
			return restoreErr(err)
		}
		if _, dup := s.revoked[r.Serial]; dup {
			return fmt.Errorf("%w: certificate %s revoked twice", ErrInvalidSnapshot, r.Serial)
		}
		s.revoked[r.Serial] = r
	}
	return nil
}

// RevokedCert reports whether the certificate with serial (pki.Serial's form)
// is revoked, and its record.
func (s State) RevokedCert(serial string) (Revocation, bool) {
	i, ok := slices.BinarySearchFunc(s.Revoked, serial, func(r Revocation, k string) int { return cmp.Compare(r.Serial, k) })
	if !ok {
		return Revocation{}, false
	}
	return s.Revoked[i], true
}

// RevokedSerials returns the serials of the revoked certificates, sorted.
func (s State) RevokedSerials() []string {
	out := make([]string, len(s.Revoked))
	for i, r := range s.Revoked {
		out[i] = r.Serial
	}
	return out
}
