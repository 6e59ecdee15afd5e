package kernels

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Gemm computes C = op(A)·op(B) when accumulate is false, or C += op(A)·op(B)
// when it is true.
//
//	op(A) is m×k: A is row-major m×k with leading dimension lda (transA false)
//	              or row-major k×m (transA true).
//	op(B) is k×n: B is row-major k×n with leading dimension ldb (transB false)
//	              or row-major n×k (transB true).
//	C is row-major m×n with leading dimension ldc.
//
// Only the m×n window of C (rows of n elements, ldc apart) is written; the
// elements between rows are left alone. C must not overlap A or B. With k = 0,
// C is zeroed (accumulate false) or left as it is (accumulate true).
//
// Gemm uses the Impl that ActiveImpl returns when it is called and spreads the
// work over Threads() goroutines with ParallelFor, so it must not be called
// from inside a Task (use GemmSerial there). It is safe to call concurrently
// from several goroutines on disjoint outputs, does not allocate once warm,
// and keeps no reference to a, b or c after it returns.
//
// The result does not depend on Threads(): every element of C is computed by
// one goroutine, summing over k in the same blocked order. It does depend on
// the Impl (each blocks the sum differently), so results agree across
// implementations only to rounding.
//
// Gemm panics with a "kernels: " message if a dimension is negative, a
// leading dimension is smaller than its row width, or a slice is too short
// for the dimensions it is given.
func Gemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm("Gemm", transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !accumulate {
			zeroMatrix(m, n, c, ldc)
		}
		return
	}
	g := gemmConfigFor(ActiveImpl())
	if Threads() == 1 || m*n*k < gemmParallelMinWork {
		g.serial(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
		return
	}
	// Split C into bands of whole micro-tiles along its longer side (in
	// tiles), one band per goroutine: each packs its own share of one
	// operand and all of the other.
	t := getGemmTask()
	*t = gemmTask{
		g: g, transA: transA, transB: transB, m: m, n: n, k: k,
		a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, accumulate: accumulate,
	}
	t.byRows = (m+g.mr-1)/g.mr >= (n+g.nr-1)/g.nr
	t.units, t.unit = (n+g.nr-1)/g.nr, g.nr
	if t.byRows {
		t.units, t.unit = (m+g.mr-1)/g.mr, g.mr
	}
	t.bands = min(Threads(), t.units)
	ParallelFor(t.bands, 1, t)
	*t = gemmTask{} // drop the references to the caller's slices
	putGemmTask(t)
}

// GemmSerial is Gemm computed on the calling goroutine only. It is safe to
// call inside a Task, which is how attention runs one small product per
// (batch, head) from a ParallelFor. Its results are identical to Gemm's for
// the same Impl.
func GemmSerial(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm("GemmSerial", transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !accumulate {
			zeroMatrix(m, n, c, ldc)
		}
		return
	}
	gemmConfigFor(ActiveImpl()).serial(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
}

// gemmParallelMinWork is the m·n·k below which Gemm runs on one goroutine:
// under it (about 36³), handing half the work to a worker (1–2 µs) costs
// more than it saves. Measured on a 2-core Zen 5 with the AVX-512 kernel.
const gemmParallelMinWork = 48 * 1024

// A gemmConfig is one implementation of the blocked algorithm: a micro-kernel
// and the block sizes tuned for it.
//
// The loops, outermost first (BLIS's order, with op(A) as the operand that
// is broadcast and op(B) as the one loaded in vectors):
//
//	ic over rows of C in steps of mc
//	  pc over k in steps of kc:        pack op(A)[ic:ic+mc, pc:pc+kc] into mr-row panels
//	    jc over columns in steps of nc: pack op(B)[pc:pc+kc, jc:jc+nc] into nr-column panels (stays in L2)
//	      ir over the block's rows in steps of mr: one A panel, reused from L1
//	        jr over the block's columns in steps of nr: micro-kernel on an mr×nr tile of C
//
// Block sizes are upper bounds: a dimension is cut into equal blocks (rounded
// up to whole tiles) rather than full blocks and a small remainder.
type gemmConfig struct {
	mr, nr int // micro-tile of C computed in registers
	mc     int // rows of op(A) packed at a time; a multiple of mr
	kc     int // depth of each packed block
	nc     int // columns of op(B) packed at a time; a multiple of nr
	kernel gemmKernelFunc

	// packTrans4Vec, if not nil, packs four rows of a transposed block in
	// vector registers (see packTrans4AVX); packTrans does the rest.
	packTrans4Vec func(d, s []float32, ld, kc, r int)
	// packCopyVec, if not nil, packs full panels (w = r, r a multiple of 4)
	// for packCopy (see packCopyAVX).
	packCopyVec func(d, s []float32, ld, kc, r int)
}

// A gemmKernelFunc computes an mr×nr tile of C from an mr×kc packed panel of
// op(A) (mr values per k step, so a[p*mr+i] is op(A)[i][p]) and a kc×nr packed
// panel of op(B) (b[p*nr+j] is op(B)[p][j]): c = a·b, or c += a·b with add.
// Row i of the tile is c[i*ldc : i*ldc+nr]. kc ≥ 1, len(a) ≥ mr·kc,
// len(b) ≥ kc·nr and len(c) ≥ (mr−1)·ldc + nr; the assembly kernels rely on
// the caller for this.
type gemmKernelFunc func(kc int, a, b, c []float32, ldc int, add bool)

// gemmConfigFor returns the configuration for impl.
func gemmConfigFor(impl Impl) *gemmConfig {
	if g := archGemmConfig(impl); g != nil {
		return g
	}
	return &gemmGeneric
}

// serial runs the blocked algorithm on the calling goroutine with packing
// buffers from the free list.
func (g *gemmConfig) serial(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	buf := getGemmBuf()
	g.run(buf, transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
	putGemmBuf(buf)
}

// run is the blocked algorithm described on gemmConfig. m, n, k ≥ 1 and the
// shapes have been checked.
func (g *gemmConfig) run(buf *gemmBuf, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	mc := blockSize(m, g.mc, g.mr)
	kc := blockSize(k, g.kc, 1)
	nc := blockSize(n, g.nc, g.nr)
	buf.reserve(roundUp(mc, g.mr)*kc, kc*roundUp(nc, g.nr), g.mr*g.nr)
	for ic := 0; ic < m; ic += mc {
		mcb := min(mc, m-ic)
		for pc := 0; pc < k; pc += kc {
			kcb := min(kc, k-pc)
			add := accumulate || pc > 0
			g.packA(buf.a, transA, a, lda, ic, pc, mcb, kcb)
			for jc := 0; jc < n; jc += nc {
				ncb := min(nc, n-jc)
				g.packB(buf.b, transB, b, ldb, pc, jc, kcb, ncb)
				g.macro(buf, mcb, ncb, kcb, c[ic*ldc+jc:], ldc, add)
			}
		}
	}
}

// macro multiplies the packed mc×kc block of op(A) by the packed kc×nc block
// of op(B) into the mc×nc block of C that starts at c[0]. Tiles that stick out
// of the block are computed into buf.tile and their valid part merged.
func (g *gemmConfig) macro(buf *gemmBuf, mc, nc, kc int, c []float32, ldc int, add bool) {
	mr, nr, kernel := g.mr, g.nr, g.kernel
	tile := buf.tile[:mr*nr]
	for ir := 0; ir < mc; ir += mr {
		ap := buf.a[ir*kc : (ir+mr)*kc]
		rows := min(mr, mc-ir)
		for jr := 0; jr < nc; jr += nr {
			bp := buf.b[jr*kc : (jr+nr)*kc]
			cols := min(nr, nc-jr)
			if rows == mr && cols == nr {
				ct := c[ir*ldc+jr:]
				if len(ct) < (mr-1)*ldc+nr {
					panic("kernels: internal error: C tile out of range")
				}
				kernel(kc, ap, bp, ct, ldc, add)
				continue
			}
			kernel(kc, ap, bp, tile, nr, false)
			for i := 0; i < rows; i++ {
				dst := c[(ir+i)*ldc+jr:][:cols]
				src := tile[i*nr:][:cols]
				if add {
					for j, v := range src {
						dst[j] += v
					}
				} else {
					copy(dst, src)
				}
			}
		}
	}
}

// packA packs op(A)[i0:i0+mc, p0:p0+kc] into dst as ⌈mc/mr⌉ panels of mr·kc
// values: panel q holds rows q·mr… in k-major order, zero-padded to mr rows.
func (g *gemmConfig) packA(dst []float32, transA bool, a []float32, lda, i0, p0, mc, kc int) {
	mr := g.mr
	for ir := 0; ir < mc; ir += mr {
		d := dst[ir*kc : (ir+mr)*kc]
		rows := min(mr, mc-ir)
		if transA { // op(A)[i][p] = a[p*lda+i]: each k step is contiguous
			g.packCopy(d, a[p0*lda+i0+ir:], lda, kc, rows, mr)
		} else { // op(A)[i][p] = a[i*lda+p]: each row is contiguous in k
			g.packTrans(d, a[(i0+ir)*lda+p0:], lda, kc, rows, mr)
		}
	}
}

// packB packs op(B)[p0:p0+kc, j0:j0+nc] into dst as ⌈nc/nr⌉ panels of kc·nr
// values: panel q holds columns q·nr… in k-major order, zero-padded to nr
// columns.
func (g *gemmConfig) packB(dst []float32, transB bool, b []float32, ldb, p0, j0, kc, nc int) {
	nr := g.nr
	for jr := 0; jr < nc; jr += nr {
		d := dst[jr*kc : (jr+nr)*kc]
		cols := min(nr, nc-jr)
		if transB { // op(B)[p][j] = b[j*ldb+p]
			g.packTrans(d, b[(j0+jr)*ldb+p0:], ldb, kc, cols, nr)
		} else { // op(B)[p][j] = b[p*ldb+j]
			g.packCopy(d, b[p0*ldb+j0+jr:], ldb, kc, cols, nr)
		}
	}
}

// packCopy packs a kc×w block whose k steps are contiguous (element (p, j) at
// s[p*ld+j]) into d as kc groups of r values, zero-padding columns w…r−1.
func (g *gemmConfig) packCopy(d, s []float32, ld, kc, w, r int) {
	d = d[:kc*r]
	if g.packCopyVec != nil && w == r && r%4 == 0 {
		if len(s) < (kc-1)*ld+r {
			panic("kernels: internal error: packCopy out of range")
		}
		g.packCopyVec(d, s, ld, kc, r)
		return
	}
	for p := 0; p < kc; p++ {
		row := d[p*r : p*r+r]
		copy(row, s[p*ld:p*ld+w])
		clear(row[w:])
	}
}

// packTrans packs a kc×w block stored transposed (element (p, j) at
// s[j*ld+p], so each of the w columns is contiguous in k) into d as kc groups
// of r values, zero-padding columns w…r−1.
func (g *gemmConfig) packTrans(d, s []float32, ld, kc, w, r int) {
	d = d[:kc*r]
	if w < r {
		clear(d)
	}
	j, done := 0, 0 // columns [0, j) are packed for k steps [0, done)
	if g.packTrans4Vec != nil && kc >= 8 {
		done = kc &^ 7
		for ; j+4 <= w; j += 4 {
			dj, sj := d[j:], s[j*ld:]
			if len(dj) < (done-1)*r+4 || len(sj) < 3*ld+done {
				panic("kernels: internal error: packTrans4 out of range")
			}
			g.packTrans4Vec(dj, sj, ld, done, r)
		}
		for jj := 0; jj < j; jj++ {
			row := s[jj*ld:][:kc]
			for p := done; p < kc; p++ {
				d[p*r+jj] = row[p]
			}
		}
	}
	for ; j+4 <= w; j += 4 {
		s0 := s[j*ld:][:kc]
		s1 := s[(j+1)*ld:][:kc]
		s2 := s[(j+2)*ld:][:kc]
		s3 := s[(j+3)*ld:][:kc]
		for p := range s0 {
			q := d[p*r+j:][:4]
			q[0], q[1], q[2], q[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; j < w; j++ {
		for p, v := range s[j*ld:][:kc] {
			d[p*r+j] = v
		}
	}
}

// zeroMatrix sets the m×n window of c with row stride ldc to zero.
func zeroMatrix(m, n int, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		clear(c[i*ldc:][:n])
	}
}

// blockSize splits total into equal blocks of at most max (rounded up to a
// multiple of unit) and returns the block length.
func blockSize(total, max, unit int) int {
	if total <= max {
		return total
	}
	blocks := (total + max - 1) / max
	return roundUp((total+blocks-1)/blocks, unit)
}

func roundUp(x, unit int) int { return (x + unit - 1) / unit * unit }

// checkGemm panics unless the arguments describe valid matrices.
func checkGemm(fn string, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels: %s: negative dimension (m=%d, n=%d, k=%d)", fn, m, n, k))
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	checkMatrix(fn, "a", ar, ac, a, lda)
	checkMatrix(fn, "b", br, bc, b, ldb)
	checkMatrix(fn, "c", m, n, c, ldc)
}

func checkMatrix(fn, name string, rows, cols int, s []float32, ld int) {
	if ld < cols {
		panic(fmt.Sprintf("kernels: %s: ld%s = %d is less than the row width %d", fn, name, ld, cols))
	}
	if rows > 0 && cols > 0 && len(s) < (rows-1)*ld+cols {
		panic(fmt.Sprintf("kernels: %s: len(%s) = %d, want at least %d for a %d×%d matrix with ld%s = %d",
			fn, name, len(s), (rows-1)*ld+cols, rows, cols, name, ld))
	}
}

// A gemmTask is one Gemm call spread over ParallelFor(bands, 1, t): Run(c,
// c+1) computes band c, a run of whole micro-tiles of rows (byRows) or
// columns of C. Tasks are recycled through gemmTasks so that Gemm does not
// allocate.
type gemmTask struct {
	g              *gemmConfig
	transA, transB bool
	m, n, k        int
	a              []float32
	lda            int
	b              []float32
	ldb            int
	c              []float32
	ldc            int
	accumulate     bool

	byRows bool
	units  int // micro-tiles along the split dimension
	unit   int // mr or nr
	bands  int // ≤ Threads(), ≤ units
}

func (t *gemmTask) Run(lo, hi int) {
	per, extra := t.units/t.bands, t.units%t.bands
	for band := lo; band < hi; band++ {
		first := (band*per + min(band, extra)) * t.unit
		end := ((band+1)*per + min(band+1, extra)) * t.unit
		a, b, c := t.a, t.b, t.c
		m, n := t.m, t.n
		if t.byRows { // rows first…end−1 of op(A) and C
			end = min(end, m)
			if t.transA {
				a = a[first:]
			} else {
				a = a[first*t.lda:]
			}
			c, m = c[first*t.ldc:], end-first
		} else { // columns first…end−1 of op(B) and C
			end = min(end, n)
			if t.transB {
				b = b[first*t.ldb:]
			} else {
				b = b[first:]
			}
			c, n = c[first:], end-first
		}
		buf, owned := getBandBuf(band)
		t.g.run(buf, t.transA, t.transB, m, n, t.k, a, t.lda, b, t.ldb, c, t.ldc, t.accumulate)
		putBandBuf(band, buf, owned)
	}
}

// A gemmBuf holds one goroutine's packing buffers. Buffers grow to the
// largest blocks they have been asked for and are then reused.
type gemmBuf struct {
	a, b, tile []float32 // 64-byte aligned
}

// reserve makes the buffers at least na, nb and nt values long.
func (buf *gemmBuf) reserve(na, nb, nt int) {
	if len(buf.a) < na {
		buf.a = alignedFloats(na)
	}
	if len(buf.b) < nb {
		buf.b = alignedFloats(nb)
	}
	if len(buf.tile) < nt {
		buf.tile = alignedFloats(nt)
	}
}

// alignedFloats returns a zeroed slice of n float32s whose first element is
// 64-byte (cache-line) aligned.
func alignedFloats(n int) []float32 {
	const align = 64 / 4
	s := make([]float32, n+align)
	off := int(uintptr(unsafe.Pointer(&s[0]))%64) / 4
	if off != 0 {
		off = align - off
	}
	return s[off : off+n : off+n]
}

// Free lists of packing buffers and tasks (freeList, not sync.Pool, so that
// a warm Gemm never allocates).
var (
	gemmBufs  freeList[gemmBuf]
	gemmTasks freeList[gemmTask]
)

// bandBufs keeps one packing buffer per band of a parallel Gemm. Band c runs
// on ParallelFor's chunk c, which the pool runs on worker c (or the calling
// goroutine for c = 0), so the same buffer keeps being used by the same
// goroutine and stays in that core's caches; buffers drawn from a shared
// free list would move between cores on every call, and the transfers cost
// more than a small product. A band whose buffer is busy (two Gemm calls at
// once) falls back to the free list.
var bandBufs [maxWorkers]struct {
	busy atomic.Bool
	buf  *gemmBuf
	_    [48]byte // keep slots on separate cache lines
}

// getBandBuf returns band's buffer, or one from the free list (owned false)
// if another Gemm is using it.
func getBandBuf(band int) (buf *gemmBuf, owned bool) {
	if band < len(bandBufs) && bandBufs[band].busy.CompareAndSwap(false, true) {
		if bandBufs[band].buf == nil {
			bandBufs[band].buf = new(gemmBuf)
		}
		return bandBufs[band].buf, true
	}
	return getGemmBuf(), false
}

func putBandBuf(band int, buf *gemmBuf, owned bool) {
	if owned {
		bandBufs[band].busy.Store(false)
		return
	}
	putGemmBuf(buf)
}

func getGemmBuf() *gemmBuf    { return gemmBufs.get() }
func putGemmBuf(buf *gemmBuf) { gemmBufs.put(buf) }
func getGemmTask() *gemmTask  { return gemmTasks.get() }
func putGemmTask(t *gemmTask) { gemmTasks.put(t) }
