package coordinator

import (
	"maps"
	"slices"
)

// MemberState is what the cluster last agreed about a member.
type MemberState string

// The member states.
const (
	MemberAlive  MemberState = "alive"  // joined and not since left or failed
	MemberLeft   MemberState = "left"   // left gracefully
	MemberFailed MemberState = "failed" // declared dead
)

func (s MemberState) valid() bool {
	return s == MemberAlive || s == MemberLeft || s == MemberFailed
}

// Member is a node as the cluster knows it. Name is its transport.PeerID
// and Addr the address peers dial it at.
type Member struct {
	Name  string            `json:"name"`
	Addr  string            `json:"addr"`
	Meta  map[string]string `json:"meta,omitempty"`
	State MemberState       `json:"state"`
}

// Clone returns a deep copy of m.
func (m Member) Clone() Member {
	m.Meta = maps.Clone(m.Meta)
	return m
}

// Epoch is a committed membership epoch: the ordered list of live members
// (the ring) and the job step at which it starts. IDs count up from 1; the
// zero Epoch means no epoch has been committed yet.
type Epoch struct {
	ID        uint64   `json:"id"`
	Members   []string `json:"members"`
	StartStep uint64   `json:"start_step"`
}

// Clone returns a deep copy of e.
func (e Epoch) Clone() Epoch {
	e.Members = slices.Clone(e.Members)
	return e
}

// Has reports whether name is in the epoch's ring.
func (e Epoch) Has(name string) bool { return slices.Contains(e.Members, name) }

// State is a copy of the replicated state: every server that has applied
// the same log holds the same State. The caller owns the copy.
type State struct {
	// Members sorted by name, in every state (alive, left, failed).
	Members []Member `json:"members"`
	// Epoch is the current epoch (zero before the first).
	Epoch Epoch `json:"epoch"`
	// Settings are the cluster settings.
	Settings map[string]string `json:"settings"`
	// Datasets are the registered datasets, sorted by name.
	Datasets []Dataset `json:"datasets"`
	// Jobs are the submitted jobs, in submission order; JobSeq counts them.
	Jobs   []Job  `json:"jobs"`
	JobSeq uint64 `json:"job_seq"`
	// Revoked are the revoked certificates, sorted by serial (omitted
	// from snapshots while there are none).
	Revoked []Revocation `json:"revoked,omitempty"`
}

// Member returns the member called name.
func (s State) Member(name string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(s.Members, name, func(m Member, n string) int {
		switch {
		case m.Name < n:
			return -1
		case m.Name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return Member{}, false
	}
	return s.Members[i], true
}

// Alive returns the names of the alive members, sorted.
func (s State) Alive() []string {
	var out []string
	for _, m := range s.Members {
		if m.State == MemberAlive {
			out = append(out, m.Name)
		}
	}
	return out
}
