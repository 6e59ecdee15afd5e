package coordinator

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestRevokeCertValidate(t *testing.T) {
	for _, c := range []RevokeCert{
		{Serial: "", Name: "n1", At: 1},
		{Serial: "0a", Name: "n1", At: 1},  // leading zero
		{Serial: "AB", Name: "n1", At: 1},  // upper case
		{Serial: "xyz", Name: "n1", At: 1}, // not hex
		{Serial: strings.Repeat("f", 41), Name: "n1", At: 1},
		{Serial: "ab", Name: "", At: 1},
		{Serial: "ab", Name: "n 1", At: 1},
		{Serial: "ab", Name: "n1", At: 0},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%+v: %v, want ErrInvalidCommand", c, err)
		}
	}
	if _, err := EncodeCommand(RevokeCert{Serial: strings.Repeat("f", 40), Name: "n1", At: 1}); err != nil {
		t.Errorf("a 20-byte serial: %v", err)
	}
}

// Revoking records the certificate once (the first record stays), keeps
// the list sorted for lookups, survives a snapshot, and stops at
// MaxRevoked.
func TestRevokeCertApply(t *testing.T) {
	f := newFSM()
	for _, c := range []RevokeCert{
		{Serial: "b2", Name: "n2", At: 10},
		{Serial: "a1", Name: "n1", At: 20},
		{Serial: "b2", Name: "n9", At: 30}, // again: no change
	} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	st := f.state()
	want := []Revocation{{Serial: "a1", Name: "n1", At: 20}, {Serial: "b2", Name: "n2", At: 10}}
	if !reflect.DeepEqual(st.Revoked, want) {
		t.Fatalf("revoked %+v, want %+v", st.Revoked, want)
	}
	if r, ok := st.RevokedCert("b2"); !ok || r.Name != "n2" {
		t.Errorf("RevokedCert(b2) = %+v, %v", r, ok)
	}
	if _, ok := st.RevokedCert("c3"); ok {
		t.Error("c3 reported revoked")
	}
	if got := st.RevokedSerials(); !slices.Equal(got, []string{"a1", "b2"}) {
		t.Errorf("serials %v", got)
	}
	b := stateBytes(t, f)
	s, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.export().Revoked, want) {
		t.Errorf("after a snapshot: %+v", s.export().Revoked)
	}
	// A snapshot with a revocation listed twice is refused.
	dup := strings.Replace(string(b), `{"serial":"b2"`, `{"serial":"a1"`, 1)
	if _, err := decodeState([]byte(dup)); !errors.Is(err, ErrInvalidSnapshot) {
		t.Errorf("duplicate revocation restored: %v", err)
	}

	g := newFSM()
	for i := range MaxRevoked {
		if err := applyCmd(t, g, RevokeCert{Serial: fmt.Sprintf("%x", i+1), Name: "n", At: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, g, RevokeCert{Serial: "fffff", Name: "n", At: 1}); !errors.Is(err, ErrLimit) {
		t.Errorf("past MaxRevoked: %v", err)
	}
	if err := applyCmd(t, g, RevokeCert{Serial: "1", Name: "n", At: 1}); err != nil {
		t.Errorf("a serial already revoked, at the limit: %v", err)
	}
}
