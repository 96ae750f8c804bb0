package routing

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
)

// redactor holds the secrets that must never reach a log line.
type redactor struct {
	secrets atomic.Pointer[[]string]
}

func (r *redactor) set(d *Desired) {
	var list []string
	if d != nil {
		for _, v := range d.VBRs {
			if v.Password != "" {
				list = append(list, v.Password)
			}
		}
	}
	r.secrets.Store(&list)
}

func (r *redactor) clean(s string) string {
	p := r.secrets.Load()
	if p == nil {
		return s
	}
	for _, sec := range *p {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// redactHandler is a slog.Handler that blanks secrets in the message and
// in every attribute, formatted as text, and then passes records on.
type redactHandler struct {
	next slog.Handler
	r    *redactor
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, x := range g {
			out[i] = h.attr(x)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	}
	if s := v.String(); h.r.clean(s) != s {
		return slog.String(a.Key, h.r.clean(s))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.clean(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = h.attr(a)
	}
	return &redactHandler{next: h.next.WithAttrs(clean), r: h.r}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{next: h.next.WithGroup(name), r: h.r}
}
