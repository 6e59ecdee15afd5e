package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
	"github.com/braidml/braid/transport/tlstcp"
)

// benchAllreduceCommand measures the ring all-reduce in one of three ways:
//
//   - by default it starts --nodes local processes (this binary, each running
//     one rank as below) with QUIC and mutual TLS on loopback, certificates
//     from a throw-away CA;
//   - with --rank and --ring it runs one rank of a ring whose other ranks run
//     elsewhere (other hosts, network namespaces), with certificates from
//     --tls-dir: the way to measure real links;
//   - with --api it asks a live cluster's node to run it across the cluster's
//     members (see benchAllreduceAPI).
//
// Rank 0 prints nccl-tests-style rows (or JSON lines with --json).
func benchAllreduceCommand() *cli.Command {
	def := allreduce.DefaultConfig()
	return &cli.Command{
		Name:  "allreduce",
		Usage: "ring all-reduce over QUIC with mutual TLS, reported like nccl-tests",
		Description: "Without --rank or --api: N local processes on loopback.\n" +
			"With --rank R --ring NAME@HOST:PORT,... --tls-dir DIR: one rank of a ring spread over hosts\n" +
			"(start every rank the same way; DIR holds ca.pem and NAME.pem/NAME-key.pem for this rank's NAME).\n" +
			"With --api URL: across the members of a live cluster.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 4, Usage: "processes in the ring (local mode)"},
			&cli.StringFlag{Name: "sizes", Value: "1MiB,16MiB,64MiB", Usage: "buffer sizes (B, KiB, MiB, GiB suffixes)"},
			&cli.StringFlag{Name: "dtype", Value: "fp32", Usage: "wire type: fp32, bf16, fp16 or int8"},
			&cli.IntFlag{Name: "iters", Value: 5, Usage: "timed iterations per size (after one warm-up)"},
			&cli.IntFlag{Name: "streams", Value: def.Streams, Usage: "parallel streams (connections) to each neighbour"},
			&cli.StringFlag{Name: "transport", Value: node.BulkTLSTCP, Usage: "local mode: what carries the ring, tls-tcp (TLS 1.3 over TCP, what nodes use by default) or quic; a cluster (--api) uses its nodes' --bulk-transport"},
			&cli.StringFlag{Name: "chunk", Value: "1MiB", Usage: "pipelining unit, in fp32 bytes"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per row"},
			&cli.IntFlag{Name: "rank", Value: -1, Usage: "run only this rank of --ring"},
			&cli.StringFlag{Name: "ring", Usage: "the ring in rank order: NAME@HOST:PORT,... (with --rank)"},
			&cli.StringFlag{Name: "tls-dir", Usage: "PKI directory with ca.pem and this rank's certificate (with --rank)"},
			&cli.DurationFlag{Name: "hop-timeout", Value: time.Minute, Usage: "per-hop deadline"},
			&cli.StringFlag{Name: "api", EnvVars: []string{"BRAID_API"}, Usage: "run across the members of the cluster behind this node API URL"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"BRAID_TOKEN"}, Usage: "bearer token for --api (default: the node's, if it runs on this machine as this user)"},
			&cli.StringFlag{Name: "token-file", EnvVars: []string{"BRAID_TOKEN_FILE"}, Usage: "read the bearer token for --api from `FILE`"},
			&cli.StringFlag{Name: "ca", EnvVars: []string{"BRAID_CA"}, Usage: "for an https --api: the cluster CA certificate `FILE` (ca.pem) to verify the node with (default: the CA of the node behind --api, if it runs on this machine as this user)"},
		},
		Action: runBenchAllreduce,
	}
}

func parseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	for _, u := range []struct {
		suffix string
		m      int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n*mult < 4 || n > 1<<40/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes ≥ 4 with an optional B/KiB/MiB/GiB suffix", s)
	}
	return n * mult, nil
}

// benchRow is one measurement, as rank 0 prints it.
type benchRow = allreduce.BenchRow

// benchPlan is what every mode needs: sizes in bytes and the ring's config.
type benchPlan struct {
	sizes []int
	cfg   allreduce.Config
	iters int
}

func parseBenchPlan(c *cli.Context) (benchPlan, error) {
	p := benchPlan{cfg: allreduce.DefaultConfig(), iters: c.Int("iters")}
	var err error
	if p.cfg.Dtype, err = allreduce.ParseDtype(c.String("dtype")); err != nil {
		return p, err
	}
	if p.cfg.ChunkBytes, err = parseSize(c.String("chunk")); err != nil {
		return p, fmt.Errorf("--chunk: %w", err)
	}
	p.cfg.Streams, p.cfg.HopTimeout = c.Int("streams"), c.Duration("hop-timeout")
	if err := p.cfg.Validate(); err != nil {
		return p, err
	}
	if p.iters < 1 {
		return p, fmt.Errorf("--iters %d: want at least 1", p.iters)
	}
	for _, s := range strings.Split(c.String("sizes"), ",") {
		b, err := parseSize(s)
		if err != nil {
			return p, err
		}
		p.sizes = append(p.sizes, b)
	}
	return p, nil
}

func runBenchAllreduce(c *cli.Context) error {
	plan, err := parseBenchPlan(c)
	if err != nil {
		return err
	}
	switch {
	case c.Int("rank") >= 0:
		return benchAllreduceRank(c, plan)
	case c.String("api") != "":
		return benchAllreduceAPI(c, plan)
	}
	n := c.Int("nodes")
	if n < 1 || n > 64 {
		return fmt.Errorf("--nodes %d: want 1..64", n)
	}
	dir, err := os.MkdirTemp("", "braid-bench-ar")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := pki.InitCA(dir); err != nil {
		return err
	}
	var ring []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("r%d", i)
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			return err
		}
		p, err := freePort()
		if err != nil {
			return err
		}
		ring = append(ring, fmt.Sprintf("%s@127.0.0.1:%d", name, p))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var procs []*exec.Cmd
	var out io.Reader
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, self, "bench", "allreduce", "--json", "--rank", strconv.Itoa(i),
			"--ring", strings.Join(ring, ","), "--tls-dir", dir, "--sizes", c.String("sizes"),
			"--dtype", c.String("dtype"), "--iters", strconv.Itoa(plan.iters), "--streams", strconv.Itoa(plan.cfg.Streams),
			"--chunk", c.String("chunk"), "--hop-timeout", plan.cfg.HopTimeout.String(), "--transport", c.String("transport"))
		cmd.Stderr = os.Stderr
		if i == 0 {
			pipe, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			out = pipe
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
	}
	p := newRowPrinter(c, fmt.Sprintf("%d processes, QUIC + mutual TLS on loopback", n), plan)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var r benchRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		p.row(r)
	}
	var firstErr error
	for i, p := range procs {
		if err := p.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("rank r%d: %w", i, err)
		}
	}
	return firstErr
}

// rowPrinter prints benchRows as a table or as JSON lines.
type rowPrinter struct {
	w      io.Writer
	asJSON bool
}

func newRowPrinter(c *cli.Context, where string, plan benchPlan) *rowPrinter {
	p := &rowPrinter{w: c.App.Writer, asJSON: c.Bool("json")}
	if !p.asJSON {
		fmt.Fprintf(p.w, "# braid bench allreduce: %s, ring with %s on the wire, %d streams per neighbour\n", where, plan.cfg.Dtype, plan.cfg.Streams)
		fmt.Fprintf(p.w, "# %12s %12s %6s %10s %10s %10s %7s\n", "size(B)", "count(elts)", "type", "time(ms)", "algbw(GB/s)", "busbw(GB/s)", "#wrong")
	}
	return p
}

func (p *rowPrinter) row(r benchRow) {
	if p.asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintln(p.w, string(b))
		return
	}
	fmt.Fprintf(p.w, "  %12d %12d %6s %10.2f %10.3f %10.3f %7d\n", r.Bytes, r.Bytes/4, r.Dtype, r.TimeMS, r.AlgBW, r.BusBW, r.Wrong)
}

// freePort returns a loopback port free for both TCP and UDP (the ring
// may run on either).
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no loopback port free for both TCP and UDP")
}

// parseRing parses NAME@HOST:PORT,... into members in ring order.
func parseRing(s string) ([]allreduce.Member, error) {
	var ms []allreduce.Member
	for _, e := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(e), "@")
		if !ok || !pki.ValidName(name) {
			return nil, fmt.Errorf("--ring entry %q: want NAME@HOST:PORT with NAME a certificate name", e)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--ring entry %q: %v", e, err)
		}
		ms = append(ms, allreduce.Member{ID: transport.PeerID(name), Addr: addr})
	}
	return ms, nil
}

// benchAllreduceRank runs one rank of a ring given by --ring; rank 0 prints.
func benchAllreduceRank(c *cli.Context, plan benchPlan) error {
	members, err := parseRing(c.String("ring"))
	if err != nil {
		return err
	}
	rank := c.Int("rank")
	if rank >= len(members) {
		return fmt.Errorf("--rank %d: the ring has %d members", rank, len(members))
	}
	// BRAID_CPUPROFILE=PREFIX writes each rank's CPU profile to
	// PREFIX.rankN, for `go tool pprof`.
	if prefix := os.Getenv("BRAID_CPUPROFILE"); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s.rank%d", prefix, rank))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	self := members[rank]
	creds, err := pki.LoadNode(c.String("tls-dir"), string(self.ID))
	if err != nil {
		return err
	}
	var tr transport.Transport
	switch c.String("transport") {
	case node.BulkQUIC:
		qc := quic.DefaultConfig()
		qc.ListenAddr, qc.Creds = self.Addr, creds
		qc.Lanes = min(max(qc.Lanes, plan.cfg.Streams), quic.MaxLanes)
		tr, err = quic.New(qc)
	case node.BulkTLSTCP:
		tc := tlstcp.DefaultConfig()
		tc.ListenAddr, tc.Creds = self.Addr, creds
		tr, err = tlstcp.New(tc)
	default:
		err = fmt.Errorf("--transport %q: want %s or %s", c.String("transport"), node.BulkTLSTCP, node.BulkQUIC)
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	ring, err := allreduce.NewRing(plan.cfg, tr, members)
	if err != nil {
		return err
	}
	var p *rowPrinter
	if rank == 0 {
		p = newRowPrinter(c, fmt.Sprintf("%d ranks (this is %s at %s)", len(members), self.ID, self.Addr), plan)
	}
	for _, size := range plan.sizes {
		r, err := allreduce.BenchSize(c.Context, ring, size, plan.iters)
		if err != nil {
			ring.Close()
			return err
		}
		if p != nil {
			p.row(r)
		}
	}
	// A rank that finishes first must not close its QUIC connections while
	// its last frames are on their way to slower ranks: drain the ring
	// (every neighbour has read everything) first.
	ctx, cancel := context.WithTimeout(c.Context, time.Minute)
	defer cancel()
	return ring.Drain(ctx)
}

// benchAllreduceAPI asks the node behind --api to run the benchmark across
// the members of its cluster's committed epoch (that node is rank 0) and
// prints the rows it streams back.
func benchAllreduceAPI(c *cli.Context, plan benchPlan) error {
	cl, err := nodeClient(c)
	if err != nil {
		return err
	}
	// The header once the node has accepted the plan, with its first row.
	var p *rowPrinter
	return cl.BenchAllReduce(c.Context, node.BenchPlan{Sizes: plan.sizes, Dtype: plan.cfg.Dtype.String(), Iters: plan.iters,
		Streams: plan.cfg.Streams, ChunkBytes: plan.cfg.ChunkBytes, HopTimeout: plan.cfg.HopTimeout}, func(r allreduce.BenchRow) {
		if p == nil {
			p = newRowPrinter(c, "the cluster behind "+c.String("api"), plan)
		}
		p.row(r)
	})
}
