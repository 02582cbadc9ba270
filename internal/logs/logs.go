// Package logs builds the structured logger of pyexec's binaries: logr on zap, JSON lines on
// stderr by default (one object a line, as `kubectl logs` and log shippers read them), or a
// console format for people.
package logs

import (
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Formats accepted by Options.Format.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// Options configure the logger.
type Options struct {
	Format string // FormatJSON or FormatConsole
	// Verbosity enables logr's V(n) lines for n <= Verbosity; 0 logs info and errors only.
	Verbosity int
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Format != FormatJSON && o.Format != FormatConsole {
		return fmt.Errorf("--log-format %q: want %s or %s", o.Format, FormatJSON, FormatConsole)
	}
	if o.Verbosity < 0 || o.Verbosity > 10 {
		return fmt.Errorf("--verbosity %d: want 0 to 10", o.Verbosity)
	}
	return nil
}

// New returns a logger writing to w.
func New(w io.Writer, o Options) logr.Logger {
	cfg := zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.MillisDurationEncoder,
		EncodeName:     zapcore.FullNameEncoder,
	}
	var enc zapcore.Encoder
	if o.Format == FormatConsole {
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		enc = zapcore.NewJSONEncoder(cfg)
	}
	// logr's V(n) is zap level -n.
	level := zap.NewAtomicLevelAt(zapcore.Level(-o.Verbosity))
	core := zapcore.NewCore(enc, zapcore.AddSync(w), level)
	return zapr.NewLogger(zap.New(core))
}
