package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on commands and on the replicated state. They are constants, not
// settings, because every server must validate the same log the same way.
const (
	// CommandVersion is the newest command envelope version this package
	// writes and understands. Decoders accept versions 1..CommandVersion.
	CommandVersion = 1
	// MaxCommandSize bounds an encoded command in bytes.
	MaxCommandSize = 1 << 20
	// MaxMembers bounds the members the FSM holds (alive, left and failed)
	// and so the length of an epoch.
	MaxMembers = 1024
	// MaxNameLen bounds a member name (a transport.PeerID) in bytes.
	MaxNameLen = 128
	// MaxAddrLen bounds a member's transport address in bytes.
	MaxAddrLen = 256
	// MaxMetaEntries bounds the metadata entries of one member.
	MaxMetaEntries = 32
	// MaxKeyLen bounds a metadata or setting key in bytes.
	MaxKeyLen = 128
	// MaxMetaValueLen bounds a metadata value in bytes.
	MaxMetaValueLen = 512
	// MaxSettings bounds the number of cluster settings.
	MaxSettings = 256
	// MaxSettingValueLen bounds a setting value in bytes.
	MaxSettingValueLen = 4096
)

// CommandType names a command in its envelope.
type CommandType string

// The command types.
const (
	TypeJoinMember    CommandType = "member.join"
	TypeLeaveMember   CommandType = "member.leave"
	TypeFailMember    CommandType = "member.fail"
	TypeCommitEpoch   CommandType = "epoch.commit"
	TypeSetSetting    CommandType = "setting.set"
	TypeDeleteSetting CommandType = "setting.delete"

	TypeRegisterDataset CommandType = "dataset.register"
	TypePlaceDataset    CommandType = "dataset.place"
	TypeDeleteDataset   CommandType = "dataset.delete"

	TypeSubmitJob        CommandType = "job.submit"
	TypeSetJobState      CommandType = "job.state"
	TypeRecordCheckpoint CommandType = "job.checkpoint"
	TypeRecordJobEpoch   CommandType = "job.epoch"
)

// Command is one change to the replicated state. The concrete types are the
// ones in this file (JoinMember, LeaveMember, FailMember, CommitEpoch,
// SetSetting, DeleteSetting), in dataset.go (RegisterDataset,
// PlaceDataset, DeleteDataset), in job.go (SubmitJob, SetJobState,
// RecordCheckpoint), in job_epoch.go (RecordJobEpoch), in revoke.go
// (RevokeCert) and in lifecycle.go (DeleteJob, ResumeJob, RemoveMember);
// the interface is sealed so that every command
// has a decoder, a validator and a deterministic apply.
type Command interface {
	// Type is the command's name in the envelope.
	Type() CommandType
	// validate checks the command on its own (no state): names, lengths,
	// bounds. It is run before encoding and after decoding.
	validate() error
	// apply changes s, or returns an error and leaves s untouched. It must
	// be deterministic.
	apply(s *fsmState) error
}

// JoinMember records that a member is alive, with its transport address and
// metadata. It adds the member or replaces the address and metadata of a
// known one (which may have left or failed before).
type JoinMember struct {
	Name string            `json:"name"`
	Addr string            `json:"addr"`
	Meta map[string]string `json:"meta,omitempty"`
}

// LeaveMember records that a known member left the cluster gracefully.
type LeaveMember struct {
	Name string `json:"name"`
}

// FailMember records that a known member was declared dead.
type FailMember struct {
	Name string `json:"name"`
}

// CommitEpoch commits a new epoch: ID must be the current epoch's ID + 1,
// StartStep at least the current epoch's StartStep, and Members a non-empty
// list of distinct, known, alive members in ring order.
type CommitEpoch struct {
	ID        uint64   `json:"id"`
	Members   []string `json:"members"`
	StartStep uint64   `json:"start_step"`
}

// SetSetting sets a cluster setting.
type SetSetting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// DeleteSetting removes a cluster setting; removing an absent one is not an
// error.
type DeleteSetting struct {
	Key string `json:"key"`
}

func (JoinMember) Type() CommandType    { return TypeJoinMember }
func (LeaveMember) Type() CommandType   { return TypeLeaveMember }
func (FailMember) Type() CommandType    { return TypeFailMember }
func (CommitEpoch) Type() CommandType   { return TypeCommitEpoch }
func (SetSetting) Type() CommandType    { return TypeSetSetting }
func (DeleteSetting) Type() CommandType { return TypeDeleteSetting }

// decoders maps each type to a function that decodes its payload.
var decoders = map[CommandType]func([]byte) (Command, error){
	TypeJoinMember:    decodePayload[JoinMember],
	TypeLeaveMember:   decodePayload[LeaveMember],
	TypeFailMember:    decodePayload[FailMember],
	TypeCommitEpoch:   decodePayload[CommitEpoch],
	TypeSetSetting:    decodePayload[SetSetting],
	TypeDeleteSetting: decodePayload[DeleteSetting],

	TypeRegisterDataset: decodePayload[RegisterDataset],
	TypePlaceDataset:    decodePayload[PlaceDataset],
	TypeDeleteDataset:   decodePayload[DeleteDataset],

	TypeSubmitJob:        decodePayload[SubmitJob],
	TypeSetJobState:      decodePayload[SetJobState],
	TypeRecordCheckpoint: decodePayload[RecordCheckpoint],
	TypeRecordJobEpoch:   decodePayload[RecordJobEpoch],

	TypeRevokeCert: decodePayload[RevokeCert],

	TypeDeleteJob:    decodePayload[DeleteJob],
	TypeResumeJob:    decodePayload[ResumeJob],
	TypeRemoveMember: decodePayload[RemoveMember],
}

// envelope is the wire form of a command.
type envelope struct {
	Version int             `json:"v"`
	Type    CommandType     `json:"t"`
	Payload json.RawMessage `json:"p"`
}

// EncodeCommand validates cmd and encodes it in a version-CommandVersion
// envelope: {"v":1,"t":"<type>","p":{...}}. Errors wrap ErrInvalidCommand.
func EncodeCommand(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalidCommand)
	}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	p, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidCommand, cmd.Type(), err)
	}
	b, err := json.Marshal(envelope{Version: CommandVersion, Type: cmd.Type(), Payload: p})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidCommand, cmd.Type(), err)
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %s: %d bytes encoded, limit %d", ErrInvalidCommand, cmd.Type(), len(b), MaxCommandSize)
	}
	return b, nil
}

// DecodeCommand decodes and validates one envelope. It accepts exactly what
// EncodeCommand could produce for some valid command (modulo JSON
// whitespace, key order and escaping): at most MaxCommandSize bytes, one
// JSON object with no unknown fields, a version in 1..CommandVersion, a
// known type and a payload that passes the type's validation. Any other
// input yields an error wrapping ErrInvalidCommand; it never panics.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidCommand, len(b), MaxCommandSize)
	}
	var env envelope
	if err := strictUnmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrInvalidCommand, err)
	}
	if env.Version < 1 || env.Version > CommandVersion {
		return nil, fmt.Errorf("%w: version %d, want 1..%d", ErrInvalidCommand, env.Version, CommandVersion)
	}
	dec, ok := decoders[env.Type]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalidCommand, truncate(string(env.Type), 40))
	}
	if len(env.Payload) == 0 || bytes.Equal(env.Payload, []byte("null")) {
		return nil, fmt.Errorf("%w: %s: missing payload", ErrInvalidCommand, env.Type)
	}
	cmd, err := dec(env.Payload)
	if err != nil {
		return nil, err
	}
	if err := cmd.validate(); err != nil {
		return nil, err
	}
	if j, ok := cmd.(JoinMember); ok && len(j.Meta) == 0 {
		j.Meta = nil // "meta":{} and no meta are the same command
		cmd = j
	}
	return cmd, nil
}

func decodePayload[T Command](p []byte) (Command, error) {
	var c T
	if err := strictUnmarshal(p, &c); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrInvalidCommand, c.Type(), err)
	}
	return c, nil
}

// strictUnmarshal decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// --- validation ---

func (c JoinMember) validate() error {
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if err := validAddr(c.Addr); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrInvalidCommand, c.Type(), c.Name, err)
	}
	if err := validMeta(c.Meta); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrInvalidCommand, c.Type(), c.Name, err)
	}
	return nil
}

func (c LeaveMember) validate() error {
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c FailMember) validate() error {
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c CommitEpoch) validate() error {
	if c.ID == 0 {
		return fmt.Errorf("%w: %s: id 0, epochs are numbered from 1", ErrInvalidCommand, c.Type())
	}
	if len(c.Members) == 0 || len(c.Members) > MaxMembers {
		return fmt.Errorf("%w: %s %d: %d members, want 1..%d", ErrInvalidCommand, c.Type(), c.ID, len(c.Members), MaxMembers)
	}
	seen := make(map[string]struct{}, len(c.Members))
	for i, m := range c.Members {
		if err := validName(m); err != nil {
			return fmt.Errorf("%w: %s %d: member %d: %v", ErrInvalidCommand, c.Type(), c.ID, i, err)
		}
		if _, dup := seen[m]; dup {
			return fmt.Errorf("%w: %s %d: member %q listed twice", ErrInvalidCommand, c.Type(), c.ID, m)
		}
		seen[m] = struct{}{}
	}
	return nil
}

func (c SetSetting) validate() error {
	if err := validKey(c.Key); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if len(c.Value) > MaxSettingValueLen {
		return fmt.Errorf("%w: %s %q: value is %d bytes, limit %d", ErrInvalidCommand, c.Type(), c.Key, len(c.Value), MaxSettingValueLen)
	}
	if !utf8.ValidString(c.Value) {
		return fmt.Errorf("%w: %s %q: value is not UTF-8", ErrInvalidCommand, c.Type(), c.Key)
	}
	return nil
}

func (c DeleteSetting) validate() error {
	if err := validKey(c.Key); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

// validName checks a member name: 1..MaxNameLen bytes of UTF-8 with no
// control or space characters.
func validName(s string) error {
	if len(s) == 0 || len(s) > MaxNameLen {
		return fmt.Errorf("name is %d bytes, want 1..%d", len(s), MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("name %q is not UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("name %q has a control or space character", s)
		}
	}
	return nil
}

// validAddr checks a transport address: 1..MaxAddrLen bytes of printable
// ASCII other than space and '@' (the separator in raft server addresses).
func validAddr(s string) error {
	if len(s) == 0 || len(s) > MaxAddrLen {
		return fmt.Errorf("address is %d bytes, want 1..%d", len(s), MaxAddrLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '@' {
			return fmt.Errorf("address %q has a byte that is not printable ASCII or is '@'", s)
		}
	}
	return nil
}

// validKey checks a metadata or setting key: 1..MaxKeyLen bytes of
// [A-Za-z0-9._/-].
func validKey(s string) error {
	if len(s) == 0 || len(s) > MaxKeyLen {
		return fmt.Errorf("key is %d bytes, want 1..%d", len(s), MaxKeyLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '/' || c == '-') {
			return fmt.Errorf("key %q has a byte outside [A-Za-z0-9._/-]", truncate(s, 40))
		}
	}
	return nil
}

func validMeta(m map[string]string) error {
	if len(m) > MaxMetaEntries {
		return fmt.Errorf("%d metadata entries, limit %d", len(m), MaxMetaEntries)
	}
	// Sorted so that the error (if several entries are bad) is deterministic.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := validKey(k); err != nil {
			return fmt.Errorf("metadata: %v", err)
		}
		v := m[k]
		if len(v) > MaxMetaValueLen {
			return fmt.Errorf("metadata %q: value is %d bytes, limit %d", k, len(v), MaxMetaValueLen)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("metadata %q: value is not UTF-8", k)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
