package shard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// corporaDir holds the shared corpora, beside the repository (see
// ../shared/corpora/README.md).
var corporaDir = filepath.Join("..", "..", "shared", "corpora")

// BenchmarkPrepare measures Prepare end to end (walk, read, tokenise, pack,
// compress, write, fsync) on the shared corpora with each tokenizer:
// MB/s is of input text, tokens/s of tokens produced. Run:
//
//	go test ./shard -run '^$' -bench Prepare -benchtime 3x
//
// GPT-2's BPE cache is cold only in the first iteration; a real, single
// run is between the first and the steady state. Go source is the
// standard library under GOROOT/src (about 150 MB of .go and test data).
func BenchmarkPrepare(b *testing.B) {
	inputs := map[string]string{
		"legal":   filepath.Join(corporaDir, "legal"),
		"english": filepath.Join(corporaDir, "english"),
		"gosrc":   filepath.Join(runtime.GOROOT(), "src"),
	}
	for _, corpus := range []string{"legal", "english", "gosrc"} {
		in := inputs[corpus]
		if _, err := os.Stat(in); err != nil {
			b.Logf("skipping %s: %v", corpus, err)
			continue
		}
		for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
			b.Run(fmt.Sprintf("%s/%s", corpus, tok.Name()), func(b *testing.B) {
				if corpus == "gosrc" && testing.Short() {
					b.Skip("the Go tree is large")
				}
				var m *shard.Manifest
				i := 0
				for b.Loop() {
					c := shard.DefaultConfig()
					c.Inputs, c.Out, c.Tokenizer, c.SkipBad = []string{in}, filepath.Join(b.TempDir(), fmt.Sprint(i)), tok, true
					res, err := shard.Prepare(context.Background(), c)
					if err != nil {
						b.Fatal(err)
					}
					m = res.Manifest
					os.RemoveAll(res.Dir)
					i++
				}
				b.SetBytes(m.Source.Bytes)
				b.ReportMetric(float64(m.Source.Tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
				b.ReportMetric(float64(m.Source.Bytes)/1e6, "MB-input")
			})
		}
	}
}
