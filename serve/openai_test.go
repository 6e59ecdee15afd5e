package serve

import (
	"testing"
)

// TestSafeEnd: text that may begin a stop string, or ends inside a UTF-8
// character, is held back; nothing already sent is taken back.
func TestSafeEnd(t *testing.T) {
	for _, tc := range []struct {
		text  string
		sent  int
		stops []string
		want  int
	}{
		{"hello wor", 0, []string{"world"}, 6},
		{"hello", 0, []string{"xyz"}, 5},
		{"hello", 5, []string{"o!"}, 5},
		{"caf\xc3", 0, nil, 3},
		{"café", 0, nil, 5},
		{"ab\xe2\x82", 0, nil, 2},
		{"ab\xe2\x82\xac", 0, nil, 5},
	} {
		if got := safeEnd(tc.text, tc.sent, tc.stops); got != tc.want {
			t.Errorf("safeEnd(%q, %d, %q) = %d, want %d", tc.text, tc.sent, tc.stops, got, tc.want)
		}
	}
}

// FuzzParseRequests: the request decoders never panic, and what they
// accept satisfies the bounds the engine relies on.
func FuzzParseRequests(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hi","max_tokens":5,"temperature":0.5,"top_p":0.9,"stop":["a","b"],"seed":3,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","prompt":[[1,2,3]]}`,
		`{"model":"m","prompt":[1,2]}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"x"}]}],"max_completion_tokens":3}`,
		`{"model":"m","messages":[],"n":2}`,
		`{"model":"m","prompt":"x","stop":"\n","logprobs":null}`,
		`{`, `[]`, `null`, `{"model":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func([]byte) (params, *apiError){parseCompletion, parseChat} {
			p, err := parse(b)
			if err != nil {
				if err.status < 400 || err.status > 499 || err.Message == "" {
					t.Fatalf("refusal %+v", err)
				}
				continue
			}
			if p.model == "" || p.maxTokens < 0 || !(p.temperature >= 0 && p.temperature <= 2) || !(p.topP > 0 && p.topP <= 1) || len(p.stop) > maxStops {
				t.Fatalf("accepted %+v", p)
			}
			for _, s := range p.stop {
				if s == "" {
					t.Fatal("accepted an empty stop string")
				}
			}
		}
	})
}
