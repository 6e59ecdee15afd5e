package model

import (
	"fmt"
	"testing"
)

// naiveTranspose is the row-by-row loop transposeInto tiles.
func naiveTranspose(out, w []float32, rows, cols int) {
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = w[r*cols+c]
		}
	}
}

func TestTransposeMatchesNaive(t *testing.T) {
	for _, s := range [][2]int{{1, 1}, {1, 70}, {70, 1}, {3, 70}, {32, 32}, {33, 65}, {64, 96}, {100, 31}} {
		rows, cols := s[0], s[1]
		w := make([]float32, rows*cols)
		for i := range w {
			w[i] = float32(i)
		}
		got, want := make([]float32, len(w)), make([]float32, len(w))
		transposeInto(got, w, rows, cols)
		naiveTranspose(want, w, rows, cols)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("(%d, %d): element %d = %v, want %v", rows, cols, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkTranspose: GPT-2 124M's c_fc.weight (3072, 768) and a 1B
// model's (8192, 2048), tiled and naive.
func BenchmarkTranspose(b *testing.B) {
	for _, s := range [][2]int{{3072, 768}, {8192, 2048}} {
		rows, cols := s[0], s[1]
		w, out := make([]float32, rows*cols), make([]float32, rows*cols)
		b.Run(fmt.Sprintf("tiled/%dx%d", rows, cols), func(b *testing.B) {
			b.SetBytes(int64(8 * rows * cols))
			for b.Loop() {
				transposeInto(out, w, rows, cols)
			}
		})
		b.Run(fmt.Sprintf("naive/%dx%d", rows, cols), func(b *testing.B) {
			b.SetBytes(int64(8 * rows * cols))
			for b.Loop() {
				naiveTranspose(out, w, rows, cols)
			}
		})
	}
}
