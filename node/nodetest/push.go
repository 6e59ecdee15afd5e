package nodetest

import (
	"context"
	"fmt"
	"io"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/push"
)

// WithAPI makes every node serve its HTTP API on a loopback port of its
// own (Node.APIAddr; the token in Node.APITokenFile).
func WithAPI() Option { return func(c *Cluster) { c.api = true } }

// WithMaxUploadBytes sets every node's node.Config.MaxUploadBytes.
func WithMaxUploadBytes(n int64) Option { return func(c *Cluster) { c.upload = n } }

// Target is the push.Target of a node in this process: the node's own
// upload path (Node.HasObject, Node.ReceiveObject: hashed, capped,
// installed only when the bytes match their name) without the HTTP around
// it, which node's API tests and cmd/braid's process tests cover.
func Target(n *node.Node) push.Target { return nodeTarget{n} }

type nodeTarget struct{ n *node.Node }

func (t nodeTarget) Has(_ context.Context, hash string) (bool, error) {
	return t.n.HasObject(hash), nil
}

func (t nodeTarget) Put(_ context.Context, hash string, size int64, r io.Reader, private bool) error {
	got, err := t.n.ReceiveObject(hash, private, r)
	if err == nil && got != size {
		err = fmt.Errorf("nodetest: %.12s: %d bytes stored, %d sent", hash, got, size)
	}
	return err
}

// PushDataset pushes the dataset prepared in dir to name's node as `braid
// data push` (or, with opt.Local, `braid data register --local`) does —
// node/push reads dir on the client's side and sends each file to the
// node, which reads no path of the client's — and registers it there.
func (c *Cluster) PushDataset(name, dir string, opt node.DatasetOptions) (coordinator.Dataset, error) {
	n := c.Node(name)
	if n == nil {
		return coordinator.Dataset{}, fmt.Errorf("nodetest: %s is not running", name)
	}
	r, err := push.Dataset(context.Background(), Target(n), dir, opt.Local)
	if err != nil {
		return coordinator.Dataset{}, err
	}
	return n.AddDataset(context.Background(), r.Manifest, opt)
}

// PushModel pushes the model directory dir to name's node as `braid job
// submit --base` does and returns the node.JobRequest's Base.
func (c *Cluster) PushModel(name, dir string) (coordinator.ModelRef, error) {
	n := c.Node(name)
	if n == nil {
		return coordinator.ModelRef{}, fmt.Errorf("nodetest: %s is not running", name)
	}
	ref, _, err := push.Model(context.Background(), Target(n), dir)
	return ref, err
}
