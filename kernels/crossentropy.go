package kernels

import "math"

// SoftmaxCrossEntropyForward computes, for each of the N positions,
// probs = softmax(logits) and losses = −log probs[target].
//
//	losses  (N)     overwritten
//	probs   (N, V)  overwritten, kept for the backward pass; may alias logits
//	logits  (N, V)
//	targets (N)     each in [0, V); a target of −1 marks an ignored position
//	                (loss 0, no gradient)
//
// The softmax subtracts each row's maximum. It returns the mean loss over the
// positions that are not ignored (0 if all are).
func SoftmaxCrossEntropyForward(losses, probs, logits []float32, targets []int32, N, V int) float32 {
	need("SoftmaxCrossEntropyForward losses", losses, N)
	need("SoftmaxCrossEntropyForward probs", probs, N*V)
	need("SoftmaxCrossEntropyForward logits", logits, N*V)
	needInts("SoftmaxCrossEntropyForward targets", targets, N)
	checkTargets("SoftmaxCrossEntropyForward", targets[:N], V)
	ceFwdTasks.run(N, grainFor(4*V), ceTask{losses: losses, probs: probs, logits: logits, targets: targets, V: V})
	var sum float64
	var n int
	for i, l := range losses[:N] {
		if targets[i] >= 0 {
			sum += float64(l)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return float32(sum / float64(n))
}

// SoftmaxCrossEntropyBackward adds dloss·(probs − onehot(target)) into
// dlogits (N, V) for every position that is not ignored. For the gradient of
// the mean loss, dloss is 1/(number of counted positions).
func SoftmaxCrossEntropyBackward(dlogits, probs []float32, targets []int32, dloss float32, N, V int) {
	need("SoftmaxCrossEntropyBackward dlogits", dlogits, N*V)
	need("SoftmaxCrossEntropyBackward probs", probs, N*V)
	needInts("SoftmaxCrossEntropyBackward targets", targets, N)
	checkTargets("SoftmaxCrossEntropyBackward", targets[:N], V)
	ceBwdTasks.run(N, grainFor(2*V), ceBwdTask{losses: dlogits, probs: probs, targets: targets, V: V, dloss: dloss})
}

func checkTargets(name string, targets []int32, V int) {
	for _, t := range targets {
		if t < -1 || int(t) >= V {
			panic("kernels: " + name + ": target out of range")
		}
	}
}

type ceTask struct {
	losses, probs, logits []float32
	targets               []int32
	V                     int
	dloss                 float32
}

// ceBwdTask shares ceTask's fields; losses holds dlogits.
type ceBwdTask ceTask

var (
	ceFwdTasks taskPool[ceTask, *ceTask]
	ceBwdTasks taskPool[ceBwdTask, *ceBwdTask]
)

func (t *ceTask) Run(lo, hi int) {
	V := t.V
	for i := lo; i < hi; i++ {
		x := t.logits[i*V : (i+1)*V]
		p := t.probs[i*V : (i+1)*V]
		maxv := float32(math.Inf(-1))
		for _, v := range x {
			maxv = max(maxv, v)
		}
		sum := ExpSum(p, x, maxv, 1)
		inv := 1 / sum
		for j := range p {
			p[j] *= inv
		}
		if tg := t.targets[i]; tg >= 0 {
			// −log p[tg] = log(sum) − (x[tg] − max): exact even when p[tg] underflows.
			t.losses[i] = float32(math.Log(float64(sum))) - (x[tg] - maxv)
		} else {
			t.losses[i] = 0
		}
	}
}

func (t *ceBwdTask) Run(lo, hi int) {
	V := t.V
	for i := lo; i < hi; i++ {
		tg := t.targets[i]
		if tg < 0 {
			continue
		}
		d := t.losses[i*V : (i+1)*V]
		p := t.probs[i*V : (i+1)*V]
		for j, v := range p {
			d[j] += t.dloss * v
		}
		d[tg] -= t.dloss
	}
}
