package node

import (
	"errors"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{Version: MetaVersion, QUICAddr: "10.0.0.7:7947", Cores: 64, GPUs: 8, MemoryBytes: 512 << 30, Build: "v0.1.0", RaftState: true}
	b, err := m.Encode(512)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := m.Encode(10); !errors.Is(err, ErrBadMeta) {
		t.Errorf("over the limit: %v", err)
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"not JSON":     "{",
		"old version":  `{"v":0,"quic":"a:1"}`,
		"no address":   `{"v":1}`,
		"space":        `{"v":1,"quic":"10.0.0.1 :7"}`,
		"at sign":      `{"v":1,"quic":"a@b:7"}`,
		"negative mem": `{"v":1,"quic":"a:1","mem":-1}`,
		"absurd cores": `{"v":1,"quic":"a:1","cores":100000000}`,
		"wrong type":   `{"v":1,"quic":7947}`,
	} {
		if _, err := DecodeMeta([]byte(raw)); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: %v, want ErrBadMeta", name, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"v":1,"quic":"10.0.0.7:7947","cores":2,"mem":1024,"build":"dev"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		enc, err := m.Encode(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := DecodeMeta(enc); err != nil || again != m {
			t.Fatalf("re-decode: %+v %v", again, err)
		}
	})
}
