package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
)

// benchAllreduceCommand starts N local rank processes (this binary's hidden
// `bench allreduce-rank`), each with its own QUIC endpoint and certificate
// from a throw-away CA, and prints nccl-tests-style rows from rank 0.
func benchAllreduceCommand() *cli.Command {
	return &cli.Command{
		Name:  "allreduce",
		Usage: "ring all-reduce across N local processes over QUIC with mutual TLS (nccl-tests style)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 4, Usage: "processes in the ring"},
			&cli.StringFlag{Name: "sizes", Value: "1MiB,16MiB,64MiB", Usage: "buffer sizes (B, KiB, MiB, GiB suffixes)"},
			&cli.StringFlag{Name: "dtype", Value: "fp32", Usage: "wire type: fp32, bf16, fp16 or int8"},
			&cli.IntFlag{Name: "iters", Value: 5, Usage: "timed iterations per size (after one warm-up)"},
			&cli.IntFlag{Name: "streams", Value: allreduce.DefaultConfig().Streams, Usage: "parallel streams (QUIC connections) to each neighbour"},
			&cli.StringFlag{Name: "chunk", Value: "1MiB", Usage: "pipelining unit, in fp32 bytes"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per row"},
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
type benchRow struct {
	Nodes  int     `json:"nodes"`
	Bytes  int     `json:"bytes"`
	Dtype  string  `json:"dtype"`
	TimeMS float64 `json:"time_ms"`
	AlgBW  float64 `json:"algbw_GBps"`
	BusBW  float64 `json:"busbw_GBps"`
	Wrong  int     `json:"wrong"`
}

func runBenchAllreduce(c *cli.Context) error {
	n := c.Int("nodes")
	if n < 1 || n > 64 {
		return fmt.Errorf("--nodes %d: want 1..64", n)
	}
	if _, err := allreduce.ParseDtype(c.String("dtype")); err != nil {
		return err
	}
	chunk, err := parseSize(c.String("chunk"))
	if err != nil {
		return fmt.Errorf("--chunk: %w", err)
	}
	probe := allreduce.DefaultConfig()
	probe.Streams, probe.ChunkBytes = c.Int("streams"), chunk
	if err := probe.Validate(); err != nil {
		return err
	}
	var sizes []string
	for _, s := range strings.Split(c.String("sizes"), ",") {
		b, err := parseSize(s)
		if err != nil {
			return err
		}
		sizes = append(sizes, strconv.Itoa(b))
	}
	dir, err := os.MkdirTemp("", "braid-bench-ar")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := pki.InitCA(dir); err != nil {
		return err
	}
	var addrs []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("r%d", i)
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			return err
		}
		p, err := freeUDPPort()
		if err != nil {
			return err
		}
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var procs []*exec.Cmd
	var out *bufio.Scanner
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, self, "bench", "allreduce-rank", "--tls-dir", dir, "--rank", strconv.Itoa(i),
			"--addrs", strings.Join(addrs, ","), "--sizes", strings.Join(sizes, ","), "--dtype", c.String("dtype"),
			"--iters", strconv.Itoa(c.Int("iters")), "--streams", strconv.Itoa(c.Int("streams")), "--chunk", strconv.Itoa(chunk))
		cmd.Stderr = os.Stderr
		if i == 0 {
			pipe, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			out = bufio.NewScanner(pipe)
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
	}
	w := c.App.Writer
	if !c.Bool("json") {
		fmt.Fprintf(w, "# braid bench allreduce: %d processes, QUIC + mutual TLS on loopback, ring with %s on the wire\n", n, c.String("dtype"))
		fmt.Fprintf(w, "# %12s %12s %6s %10s %10s %10s %7s\n", "size(B)", "count(elts)", "type", "time(ms)", "algbw(GB/s)", "busbw(GB/s)", "#wrong")
	}
	for out.Scan() {
		var r benchRow
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			continue
		}
		if c.Bool("json") {
			fmt.Fprintln(w, out.Text())
		} else {
			fmt.Fprintf(w, "  %12d %12d %6s %10.2f %10.3f %10.3f %7d\n", r.Bytes, r.Bytes/4, r.Dtype, r.TimeMS, r.AlgBW, r.BusBW, r.Wrong)
		}
	}
	var firstErr error
	for i, p := range procs {
		if err := p.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("rank r%d: %w", i, err)
		}
	}
	return firstErr
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// benchAllreduceRankCommand is one rank of `braid bench allreduce`.
func benchAllreduceRankCommand() *cli.Command {
	return &cli.Command{
		Name:   "allreduce-rank",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tls-dir"}, &cli.IntFlag{Name: "rank"}, &cli.StringFlag{Name: "addrs"},
			&cli.StringFlag{Name: "sizes"}, &cli.StringFlag{Name: "dtype"}, &cli.IntFlag{Name: "iters"},
			&cli.IntFlag{Name: "streams", Value: allreduce.DefaultConfig().Streams}, &cli.IntFlag{Name: "chunk", Value: allreduce.DefaultConfig().ChunkBytes},
		},
		Action: func(c *cli.Context) error {
			addrs := strings.Split(c.String("addrs"), ",")
			rank := c.Int("rank")
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
			name := fmt.Sprintf("r%d", rank)
			creds, err := pki.LoadNode(c.String("tls-dir"), name)
			if err != nil {
				return err
			}
			qc := quic.DefaultConfig()
			qc.ListenAddr, qc.Creds = addrs[rank], creds
			tr, err := quic.New(qc)
			if err != nil {
				return err
			}
			defer tr.Close()
			var members []allreduce.Member
			for i, a := range addrs {
				members = append(members, allreduce.Member{ID: transport.PeerID(fmt.Sprintf("r%d", i)), Addr: a})
			}
			cfg := allreduce.DefaultConfig()
			if cfg.Dtype, err = allreduce.ParseDtype(c.String("dtype")); err != nil {
				return err
			}
			cfg.HopTimeout = 60 * time.Second
			cfg.Streams, cfg.ChunkBytes = c.Int("streams"), c.Int("chunk")
			ring, err := allreduce.NewRing(cfg, tr, members)
			if err != nil {
				return err
			}
			N := len(addrs)
			for _, s := range strings.Split(c.String("sizes"), ",") {
				bytes, _ := strconv.Atoi(s)
				d, wrong, err := allreduce.Bench(c.Context, ring, bytes, c.Int("iters"))
				if err != nil {
					return err
				}
				if rank == 0 {
					algbw := float64(bytes) / d.Seconds() / 1e9
					b, _ := json.Marshal(benchRow{Nodes: N, Bytes: bytes, Dtype: cfg.Dtype.String(), TimeMS: float64(d.Microseconds()) / 1e3,
						AlgBW: algbw, BusBW: algbw * 2 * float64(N-1) / float64(N), Wrong: wrong})
					fmt.Fprintln(c.App.Writer, string(b))
				}
			}
			// A rank that finishes first must not close its QUIC connections
			// while its last frames are on their way to slower ranks: drain
			// the ring (every neighbour has read everything) first.
			ctx, cancel := context.WithTimeout(c.Context, time.Minute)
			defer cancel()
			return ring.Drain(ctx)
		},
	}
}
