package transportbench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestThroughput(t *testing.T) {
	for _, kind := range Kinds {
		for _, lanes := range []int{1, 3} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			gbps, err := Throughput(ctx, kind, lanes, 8<<20+1)
			cancel()
			if err != nil || gbps <= 0 {
				t.Fatalf("%s, %d lanes: %v Gbit/s, %v", kind, lanes, gbps, err)
			}
			t.Logf("%s, %d lanes: %.2f Gbit/s (8 MiB; not a measurement)", kind, lanes, gbps)
		}
	}
	if _, err := Throughput(context.Background(), "carrier-pigeon", 1, 1<<20); err == nil {
		t.Error("an unknown transport was measured")
	}
}

// BenchmarkThroughput reports loopback throughput of each transport with 1
// and 4 lanes:
//
//	go test -run '^$' -bench Throughput ./transport/transportbench/
func BenchmarkThroughput(b *testing.B) {
	const size = 256 << 20
	for _, kind := range Kinds {
		for _, lanes := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/lanes=%d", kind, lanes), func(b *testing.B) {
				var sum float64
				for b.Loop() {
					g, err := Throughput(context.Background(), kind, lanes, size)
					if err != nil {
						b.Fatal(err)
					}
					sum += g
				}
				b.ReportMetric(sum/float64(b.N), "Gbit/s")
				b.SetBytes(size)
			})
		}
	}
}
