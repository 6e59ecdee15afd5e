package hftok_test

import "testing"

// SpecialID gives the control tokens' ids that chat templates need, and
// Encode never produces them for text that spells them.
func TestSpecialID(t *testing.T) {
	tok, _ := loadStyle(t, "llama3")
	id, ok := tok.SpecialID("<|eot_id|>")
	if !ok {
		t.Fatal("no <|eot_id|>")
	}
	if got, _ := tok.TokenID("<|eot_id|>"); got != id {
		t.Errorf("SpecialID %d, TokenID %d", id, got)
	}
	if _, ok := tok.SpecialID("hello"); ok {
		t.Error("an ordinary string is a special token")
	}
	for _, x := range tok.Encode(nil, []byte("say <|eot_id|> now")) {
		if x == id {
			t.Error("Encode produced the control token for text")
		}
	}
}
