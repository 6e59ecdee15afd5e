package coordinator

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// slogHclog adapts a *slog.Logger to the hclog.Logger that raft logs to.
// Raft's Trace goes to slog at LevelDebug-4; its levels otherwise map one to
// one.
type slogHclog struct {
	l       *slog.Logger
	name    string
	implied []any
	level   *atomic.Int32 // hclog.Level, shared by derived loggers
}

var _ hclog.Logger = (*slogHclog)(nil)

func newSlogHclog(l *slog.Logger, name string) *slogHclog {
	lv := new(atomic.Int32)
	lv.Store(int32(hclog.Trace))
	return &slogHclog{l: l, name: name, level: lv}
}

func toSlogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (h *slogHclog) enabled(l hclog.Level) bool {
	if l < hclog.Level(h.level.Load()) && l != hclog.NoLevel {
		return false
	}
	return h.l.Enabled(context.Background(), toSlogLevel(l))
}

func (h *slogHclog) Log(level hclog.Level, msg string, args ...any) {
	if !h.enabled(level) {
		return
	}
	all := make([]any, 0, 2+len(h.implied)+len(args))
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	all = appendAttrs(all, h.implied)
	all = appendAttrs(all, args)
	h.l.Log(context.Background(), toSlogLevel(level), msg, all...)
}

// appendAttrs appends hclog's key/value args to all as slog's, with the
// values hclog formats itself formatted as it would: hclog.Fmt("%+v", x)
// as the string it makes, not a list holding the format (in JSON:
// ["%+v",...]); Hex, Octal, Binary and Quote as hclog writes them. A
// value without a key gets hclog's key for it.
func appendAttrs(all, args []any) []any {
	if len(args)%2 != 0 {
		args = append(append(args[:len(args)-1:len(args)-1], hclog.MissingKey), args[len(args)-1])
	}
	for i := 0; i < len(args); i += 2 {
		all = append(all, args[i], hclogValue(args[i+1]))
	}
	return all
}

// hclogValue is v as hclog's formatter would write it, for the types it
// treats specially; other values as they are.
func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(v))
	}
	return v
}

func (h *slogHclog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *slogHclog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *slogHclog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *slogHclog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *slogHclog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *slogHclog) IsTrace() bool                 { return h.enabled(hclog.Trace) }
func (h *slogHclog) IsDebug() bool                 { return h.enabled(hclog.Debug) }
func (h *slogHclog) IsInfo() bool                  { return h.enabled(hclog.Info) }
func (h *slogHclog) IsWarn() bool                  { return h.enabled(hclog.Warn) }
func (h *slogHclog) IsError() bool                 { return h.enabled(hclog.Error) }
func (h *slogHclog) ImpliedArgs() []any            { return h.implied }
func (h *slogHclog) Name() string                  { return h.name }
func (h *slogHclog) SetLevel(l hclog.Level)        { h.level.Store(int32(l)) }
func (h *slogHclog) GetLevel() hclog.Level         { return hclog.Level(h.level.Load()) }

func (h *slogHclog) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

func (h *slogHclog) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *slogHclog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *slogHclog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *slogHclog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	lv := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		lv = opts.ForceLevel
	}
	return writerFunc(func(p []byte) (int, error) {
		h.Log(lv, strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// discardLogger drops everything.
var discardLogger = slog.New(slog.DiscardHandler)
