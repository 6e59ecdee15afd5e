package model_test

import (
	"math/rand/v2"
	"testing"

	"github.com/braidml/braid/model"
)

// BenchmarkTrainStep times forward + backward of the presets at batch 8
// (the optimizer step is benchmarked with the kernels).
func BenchmarkTrainStep(b *testing.B) {
	for _, name := range []string{"tiny", "small"} {
		b.Run(name, func(b *testing.B) {
			c, err := model.Preset(name, 256)
			if err != nil {
				b.Fatal(err)
			}
			B, T := 8, c.Context
			m, err := model.New(c, B, T)
			if err != nil {
				b.Fatal(err)
			}
			m.Init(1)
			rng := rand.New(rand.NewPCG(1, 2))
			x, y := make([]int32, B*T), make([]int32, B*T)
			for i := range x {
				x[i], y[i] = int32(rng.IntN(256)), int32(rng.IntN(256))
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.ZeroGrad()
				if _, err := m.Forward(x, y, B, T); err != nil {
					b.Fatal(err)
				}
				if err := m.Backward(1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*B*T)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
