// Package coordinator is braid's replicated cluster state: hashicorp/raft
// running over transport streams (protocol transport.ProtoRaft), with a
// durable bbolt log and stable store, file snapshots, and a finite state
// machine (FSM) that holds the cluster's members, the current epoch of
// membership (the committed, ordered ring of live members and the job step
// at which it starts) and cluster settings.
//
// The node layer (package node) owns memberlist and composes a Coordinator
// with coordinator.New(cfg, deps). It reports what gossip sees through
// MemberJoined, MemberLeft and MemberFailed on every node; the leader turns
// those reports into committed FSM commands and Raft configuration changes:
// it adds servers (voters up to Config.MaxVoters, non-voters beyond),
// promotes non-voters when a voter goes, removes servers that left or died,
// and commits a new epoch whenever the set of live members changes. While a
// job runs, an epoch holds only the live members that compute on the job's
// device (see State.EpochCandidates): a job runs on one device kind. When a
// new leader is elected it reconciles again from its own reports, so a
// report that reached the cluster while it had no leader is not lost.
//
// Bootstrap follows the bootstrap-expect pattern: the node layer waits until
// gossip shows the expected number of servers and none of them has Raft
// state (HasState), then every one of them calls Bootstrap with the same
// server list. A node that joins an existing cluster never bootstraps; it
// runs New and waits for the leader to add it.
//
// Raft is admitted by identity: a server hands raft a stream only from a
// peer whose verified certificate name was admitted to the cluster (a
// server of its latest Raft configuration, a member of its committed state
// that has not left, or a member gossip reports alive), and only RPCs whose
// header ID is that name and whose header address is a ServerAddress of
// it. A certificate of the CA alone does not make a Raft peer. Refusals are
// logged and counted (RefusedRaftStreams). See StreamLayer and RaftPeers.
//
// Commands are versioned JSON envelopes (see EncodeCommand, DecodeCommand).
// The decoder bounds sizes and validates every field; a malformed or
// inapplicable command makes Apply return an error value, never panic, and
// applying the same log always yields the same state (and the same snapshot
// bytes) on every server.
//
// What this package does not do: gossip or failure detection (package node
// decides who joined, left or died), forwarding of commands to the leader
// (Apply on a follower returns a *NotLeaderError naming the leader), and
// anything that is not small, rare and agreed: gradients, weights, shards
// and per-step progress never go through Raft.
package coordinator
