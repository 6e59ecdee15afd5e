package coordinator

import (
	"context"
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
	all = append(all, h.implied...)
	all = append(all, args...)
	h.l.Log(context.Background(), toSlogLevel(level), msg, all...)
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
