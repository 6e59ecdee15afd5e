// Package node is the composition root of a braid server: it runs
// memberlist gossip (discovery, failure detection, node metadata), the QUIC
// transport, the Raft coordinator, and the HTTP API (status, metrics), and
// turns membership events into coordinator calls.
//
// What it does not do: consensus (package coordinator), stream transport
// (package transport), or training (package train). node/nodetest runs
// whole clusters of nodes in one process on transport/memnet and
// memberlist's in-memory network.
//
// A job's path through the package, from submission to a training step and
// back, is in docs/JOBS.md: start there before touching the job runner.
package node
