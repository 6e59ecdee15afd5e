package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// gemmCase is one matrix product: shapes, transposes and the padding added to
// each leading dimension beyond its row width.
type gemmCase struct {
	m, n, k        int
	transA, transB bool
	accumulate     bool
	padA, padB     int
	padC           int
}

func (tc gemmCase) String() string {
	t := func(b bool) string {
		if b {
			return "T"
		}
		return "N"
	}
	s := fmt.Sprintf("%s%s/%dx%dx%d", t(tc.transA), t(tc.transB), tc.m, tc.n, tc.k)
	if tc.accumulate {
		s += "/acc"
	}
	if tc.padA+tc.padB+tc.padC > 0 {
		s += fmt.Sprintf("/pad%d,%d,%d", tc.padA, tc.padB, tc.padC)
	}
	return s
}

// gemmOperands holds the inputs of a gemmCase and NaiveGemm's answer.
type gemmOperands struct {
	tc            gemmCase
	a, b, c0      []float32
	lda, ldb, ldc int
	want          []float32
	tol           float64 // allowed |got − want| per element
}

// sentinel fills the padding of C between rows; no Gemm may write it.
const sentinel = float32(-7777)

func newGemmOperands(tc gemmCase, rng *rand.Rand) *gemmOperands {
	o := &gemmOperands{tc: tc}
	ar, ac := tc.m, tc.k // A is stored ar×ac
	if tc.transA {
		ar, ac = tc.k, tc.m
	}
	br, bc := tc.k, tc.n
	if tc.transB {
		br, bc = tc.n, tc.k
	}
	o.lda, o.ldb, o.ldc = ac+tc.padA, bc+tc.padB, tc.n+tc.padC
	o.a = randMatrix(rng, ar, o.lda)
	o.b = randMatrix(rng, br, o.ldb)
	o.c0 = randMatrix(rng, tc.m, o.ldc)
	for i := 0; i < tc.m; i++ {
		for j := tc.n; j < o.ldc; j++ {
			o.c0[i*o.ldc+j] = sentinel
		}
	}
	o.want = clone(o.c0)
	NaiveGemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, o.a, o.lda, o.b, o.ldb, o.want, o.ldc, tc.accumulate)
	// Both sums round each of k products and partial sums to float32; the
	// blocked one also rounds each per-block partial sum once more when it
	// is added to C. The inputs lie in [-1, 1).
	o.tol = 1e-5 * float64(tc.k+1) * maxAbs(o.a) * maxAbs(o.b)
	if tc.accumulate {
		o.tol += 1e-6 * maxAbs(o.c0)
	}
	return o
}

// run computes the case with fn and returns the largest |got − want| and the
// index of the first element outside the tolerance (−1 if none).
func (o *gemmOperands) run(t *testing.T, fn func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool)) (maxDiff float64) {
	t.Helper()
	tc := o.tc
	got := clone(o.c0)
	fn(tc.transA, tc.transB, tc.m, tc.n, tc.k, o.a, o.lda, o.b, o.ldb, got, o.ldc, tc.accumulate)
	for i := 0; i < tc.m; i++ {
		for j := 0; j < o.ldc; j++ {
			idx := i*o.ldc + j
			if j >= tc.n {
				if got[idx] != sentinel {
					t.Fatalf("%v: wrote C[%d][%d] outside the %d×%d window (ldc %d)", tc, i, j, tc.m, tc.n, o.ldc)
				}
				continue
			}
			d := math.Abs(float64(got[idx]) - float64(o.want[idx]))
			if math.IsNaN(d) || d > o.tol {
				t.Fatalf("%v: C[%d][%d] = %v, want %v (|diff| %.3g > tol %.3g)", tc, i, j, got[idx], o.want[idx], d, o.tol)
			}
			maxDiff = max(maxDiff, d)
		}
	}
	return maxDiff
}

func randMatrix(rng *rand.Rand, rows, ld int) []float32 {
	s := make([]float32, rows*ld)
	for i := range s {
		s[i] = 2*rng.Float32() - 1
	}
	return s
}

func clone(s []float32) []float32 { return append([]float32(nil), s...) }

func maxAbs(s []float32) float64 {
	var m float64
	for _, v := range s {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

// gemmVariant is one (Impl, Threads) setting the conformance tests run.
type gemmVariant struct {
	impl    Impl
	threads int
}

func (v gemmVariant) String() string { return fmt.Sprintf("%v/threads=%d", v.impl, v.threads) }

// gemmVariants lists every supported Impl with one thread and with all.
func gemmVariants() []gemmVariant {
	all := Threads()
	var vs []gemmVariant
	for _, impl := range Implementations() {
		vs = append(vs, gemmVariant{impl, 1})
		if all > 1 {
			vs = append(vs, gemmVariant{impl, all})
		}
	}
	return vs
}

// use switches the package to v and returns a function that switches back.
func (v gemmVariant) use() (restore func()) {
	prevImpl := SetImpl(v.impl)
	prevThreads := SetThreads(v.threads)
	return func() {
		SetImpl(prevImpl)
		SetThreads(prevThreads)
	}
}

// gemmShapes are the (m, n, k) the conformance test covers with every
// transpose and accumulate combination. The micro-tiles are 8×32 (AVX-512),
// 6×16 (AVX2) and 2×4 or 4×4 (generic); kc is 320 (assembly) and 256
// (generic), nc 512 and 1024, mc 960 and 256.
var gemmShapes = []struct {
	m, n, k    int
	padA, padB int
	padC       int
}{
	// Degenerate and tiny.
	{1, 1, 1, 0, 0, 0},
	{1, 1, 7, 0, 0, 0},
	{2, 3, 1, 1, 2, 3},
	{1, 37, 5, 0, 0, 0},
	{37, 1, 5, 0, 0, 0},
	// Primes, so no dimension is a multiple of any tile.
	{7, 13, 17, 0, 0, 0},
	{31, 37, 41, 3, 5, 7},
	{61, 67, 71, 0, 0, 0},
	// Straddling the micro-tiles: 5…9 rows, 15…17 and 31…33 columns.
	{7, 31, 8, 0, 0, 0},
	{8, 32, 8, 0, 0, 0},
	{9, 33, 8, 1, 1, 1},
	{6, 16, 9, 0, 0, 0},
	{5, 15, 9, 0, 0, 0},
	{17, 65, 3, 0, 0, 2},
	// Straddling kc (256, 320) and nc (512, 1024): several k and column
	// blocks, k cut into unequal-looking but equal blocks.
	{9, 33, 257, 0, 0, 0},
	{8, 32, 321, 4, 0, 0},
	{10, 34, 700, 0, 3, 0},
	{5, 513, 20, 0, 0, 0},
	{9, 1100, 9, 0, 2, 5},
	// Straddling mc (256 generic, 960 assembly).
	{257, 9, 11, 0, 0, 0},
	{961, 7, 5, 2, 0, 0},
	// Shapes like training's: a linear layer and attention's 64-row blocks.
	{96, 96, 64, 0, 0, 0},
	{64, 192, 64, 0, 0, 0},
	{64, 64, 130, 0, 0, 0},
	// Every level at once: several bands, k blocks and column blocks.
	{37, 530, 330, 1, 2, 3},
}

// TestGemmConformance runs every shape, transpose and accumulate combination
// through Gemm and GemmSerial with every Impl and thread count, and compares
// each with NaiveGemm.
func TestGemmConformance(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	variants := gemmVariants()
	maxDiff := make(map[string]float64)
	for _, s := range gemmShapes {
		for _, trans := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			for _, acc := range []bool{false, true} {
				tc := gemmCase{m: s.m, n: s.n, k: s.k, transA: trans[0], transB: trans[1], accumulate: acc,
					padA: s.padA, padB: s.padB, padC: s.padC}
				o := newGemmOperands(tc, rng)
				for _, v := range variants {
					restore := v.use()
					d := o.run(t, Gemm)
					d2 := o.run(t, GemmSerial)
					restore()
					maxDiff[v.String()] = max(maxDiff[v.String()], d, d2)
				}
			}
		}
	}
	for _, v := range variants {
		t.Logf("%-20v max |Gemm − NaiveGemm| = %.3g", v, maxDiff[v.String()])
	}
}

// TestGemmGenericTiles runs both pure-Go tiles, also the one this
// architecture does not use, against NaiveGemm.
func TestGemmGenericTiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, goarch := range []string{"amd64", "arm64"} {
		g := genericGemmConfig(goarch)
		serial := func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
			g.serial(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
		}
		var worst float64
		for _, tc := range []gemmCase{
			{m: 1, n: 1, k: 1},
			{m: 7, n: 9, k: 300, transA: true, accumulate: true},
			{m: 261, n: 1030, k: 5, transB: true, padC: 3},
			{m: 33, n: 35, k: 37, transA: true, transB: true, padA: 1, padB: 2},
		} {
			worst = max(worst, newGemmOperands(tc, rng).run(t, serial))
		}
		t.Logf("%d×%d tile (GOARCH=%s): max |diff| = %.3g", g.mr, g.nr, goarch, worst)
	}
}

// TestGemmRandomShapes is a property test: for seeded random shapes,
// transposes, paddings and accumulate flags, every Impl agrees with
// NaiveGemm.
func TestGemmRandomShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	variants := gemmVariants()
	iters := 60
	if testing.Short() {
		iters = 15
	}
	var worst float64
	for it := 0; it < iters; it++ {
		dim := func() int {
			if rng.IntN(4) == 0 {
				return 1 + rng.IntN(8)
			}
			return 1 + rng.IntN(90)
		}
		tc := gemmCase{
			m: dim(), n: dim(), k: dim(),
			transA: rng.IntN(2) == 1, transB: rng.IntN(2) == 1, accumulate: rng.IntN(2) == 1,
			padA: rng.IntN(3), padB: rng.IntN(3), padC: rng.IntN(3),
		}
		o := newGemmOperands(tc, rng)
		v := variants[rng.IntN(len(variants))]
		restore := v.use()
		worst = max(worst, o.run(t, Gemm))
		restore()
	}
	t.Logf("%d random shapes: max |Gemm − NaiveGemm| = %.3g", iters, worst)
}

// TestGemmZeroK checks the k = 0 contract: C is zeroed, or left alone when
// accumulating; nothing outside the window changes.
func TestGemmZeroK(t *testing.T) {
	for _, fn := range []struct {
		name string
		f    func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool)
	}{{"Gemm", Gemm}, {"GemmSerial", GemmSerial}, {"NaiveGemm", NaiveGemm}} {
		c := []float32{1, 2, sentinel, 3, 4, sentinel}
		fn.f(false, false, 2, 2, 0, nil, 0, nil, 2, c, 3, true)
		if want := []float32{1, 2, sentinel, 3, 4, sentinel}; !equal(c, want) {
			t.Errorf("%s accumulate with k=0: C = %v, want %v", fn.name, c, want)
		}
		fn.f(false, false, 2, 2, 0, nil, 0, nil, 2, c, 3, false)
		if want := []float32{0, 0, sentinel, 0, 0, sentinel}; !equal(c, want) {
			t.Errorf("%s with k=0: C = %v, want %v", fn.name, c, want)
		}
	}
}

// TestGemmDeterministic checks that the result does not depend on the
// number of threads, and that GemmSerial gives Gemm's bits: each element is
// summed by one goroutine in the same blocked order.
func TestGemmDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, impl := range Implementations() {
		for _, tc := range []gemmCase{
			{m: 203, n: 150, k: 700, accumulate: true},
			{m: 40, n: 530, k: 300, transA: true, transB: true},
		} {
			o := newGemmOperands(tc, rng)
			var results [][]float32
			for _, threads := range []int{1, 2, 3, 0} {
				restore := gemmVariant{impl, threads}.use()
				for _, fn := range []func(bool, bool, int, int, int, []float32, int, []float32, int, []float32, int, bool){Gemm, GemmSerial} {
					c := clone(o.c0)
					fn(tc.transA, tc.transB, tc.m, tc.n, tc.k, o.a, o.lda, o.b, o.ldb, c, o.ldc, tc.accumulate)
					results = append(results, c)
				}
				restore()
			}
			for i, r := range results[1:] {
				if !equal(r, results[0]) {
					t.Errorf("%v %v: result %d differs from the single-threaded Gemm", impl, tc, i+1)
				}
			}
		}
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestGemmPanics checks that bad shapes panic with a "kernels: " message
// before anything is written.
func TestGemmPanics(t *testing.T) {
	s := func(n int) []float32 { return make([]float32, n) }
	cases := []struct {
		name           string
		transA, transB bool
		m, n, k        int
		a              []float32
		lda            int
		b              []float32
		ldb            int
		c              []float32
		ldc            int
		want           string
	}{
		{"negative m", false, false, -1, 2, 2, s(4), 2, s(4), 2, s(4), 2, "negative dimension"},
		{"negative n", false, false, 2, -1, 2, s(4), 2, s(4), 2, s(4), 2, "negative dimension"},
		{"negative k", false, false, 2, 2, -1, s(4), 2, s(4), 2, s(4), 2, "negative dimension"},
		{"lda < k", false, false, 2, 2, 3, s(6), 2, s(6), 2, s(4), 2, "lda = 2 is less than the row width 3"},
		{"lda < m (transA)", true, false, 3, 2, 2, s(6), 2, s(4), 2, s(6), 2, "lda = 2 is less than the row width 3"},
		{"ldb < n", false, false, 2, 3, 2, s(4), 2, s(6), 2, s(6), 3, "ldb = 2 is less than the row width 3"},
		{"ldb < k (transB)", false, true, 2, 2, 3, s(6), 3, s(6), 2, s(4), 2, "ldb = 2 is less than the row width 3"},
		{"ldc < n", false, false, 2, 3, 2, s(4), 2, s(6), 3, s(6), 2, "ldc = 2 is less than the row width 3"},
		{"a too short", false, false, 2, 2, 2, s(3), 2, s(4), 2, s(4), 2, "len(a) = 3, want at least 4"},
		{"a too short for lda", false, false, 2, 2, 2, s(4), 3, s(4), 2, s(4), 2, "len(a) = 4, want at least 5"},
		{"a too short (transA)", true, false, 3, 2, 2, s(5), 3, s(4), 2, s(6), 2, "len(a) = 5, want at least 6"},
		{"b too short", false, false, 2, 2, 2, s(4), 2, s(3), 2, s(4), 2, "len(b) = 3, want at least 4"},
		{"b too short (transB)", false, true, 2, 3, 2, s(4), 2, s(5), 2, s(6), 3, "len(b) = 5, want at least 6"},
		{"c too short", false, false, 2, 2, 2, s(4), 2, s(4), 2, s(3), 2, "len(c) = 3, want at least 4"},
		{"c too short for ldc", false, false, 2, 2, 2, s(4), 2, s(4), 2, s(5), 4, "len(c) = 5, want at least 6"},
		{"nil c", false, false, 1, 1, 1, s(1), 1, s(1), 1, nil, 1, "len(c) = 0, want at least 1"},
	}
	fns := []struct {
		name string
		f    func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool)
	}{{"Gemm", Gemm}, {"GemmSerial", GemmSerial}, {"NaiveGemm", NaiveGemm}}
	for _, tc := range cases {
		for _, fn := range fns {
			msg := func() (msg string) {
				defer func() {
					if r := recover(); r != nil {
						msg = fmt.Sprint(r)
					}
				}()
				fn.f(tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.a, tc.lda, tc.b, tc.ldb, tc.c, tc.ldc, false)
				return ""
			}()
			if !strings.HasPrefix(msg, "kernels: "+fn.name+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("%s: %s panicked with %q, want a \"kernels: %s: \" message containing %q", tc.name, fn.name, msg, fn.name, tc.want)
			}
		}
	}
	// Empty products with empty slices are valid.
	Gemm(false, false, 0, 5, 5, nil, 5, s(25), 5, nil, 5, false)
	Gemm(false, false, 5, 0, 5, s(25), 5, nil, 0, nil, 0, false)
}

// TestGemmAllocs checks that warm Gemm and GemmSerial calls allocate
// nothing, for a parallel and a serial-sized product with every Impl.
func TestGemmAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, v := range gemmVariants() {
		for _, sz := range [][3]int{{200, 160, 300}, {12, 20, 30}} {
			m, n, k := sz[0], sz[1], sz[2]
			a, b, c := randMatrix(rng, m, k), randMatrix(rng, n, k), make([]float32, m*n)
			restore := v.use()
			for _, fn := range []struct {
				name string
				f    func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool)
			}{{"Gemm", Gemm}, {"GemmSerial", GemmSerial}} {
				call := func() { fn.f(false, true, m, n, k, a, k, b, k, c, n, false) }
				call()
				if allocs := allocsPerRun(20, call); allocs != 0 {
					t.Errorf("%v %s %dx%dx%d: %v allocations per call, want 0", v, fn.name, m, n, k, allocs)
				}
			}
			restore()
		}
	}
}

// TestGemmConcurrent runs GemmSerial from inside a ParallelFor, the way
// attention does, next to Gemm calls from other goroutines.
func TestGemmConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const heads, m, n, k = 8, 33, 45, 20
	a, b := randMatrix(rng, heads*m, k), randMatrix(rng, heads*k, n)
	want := make([]float32, heads*m*n)
	for h := 0; h < heads; h++ {
		NaiveGemm(false, false, m, n, k, a[h*m*k:], k, b[h*k*n:], n, want[h*m*n:], n, false)
	}
	for _, v := range gemmVariants() {
		restore := v.use()
		got := make([]float32, heads*m*n)
		done := make(chan struct{})
		go func() { // a concurrent, unrelated Gemm
			defer close(done)
			x, y := randMatrix(rand.New(rand.NewPCG(11, 12)), 100, 100), make([]float32, 100*100)
			for i := 0; i < 5; i++ {
				Gemm(false, false, 100, 100, 100, x, 100, x, 100, y, 100, false)
			}
		}()
		ParallelFor(heads, 1, TaskFunc(func(lo, hi int) {
			for h := lo; h < hi; h++ {
				GemmSerial(false, false, m, n, k, a[h*m*k:], k, b[h*k*n:], n, got[h*m*n:], n, false)
			}
		}))
		<-done
		restore()
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*k {
				t.Fatalf("%v: element %d = %v, want %v", v, i, got[i], want[i])
			}
		}
	}
}
