package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/routing"
)

// Source is what the control socket serves; the Agent implements it.
type Source interface {
	Status() api.Status
	Peers() []api.Peer
	Routes() []api.Route
	Bandwidth() []api.Bandwidth
	Reload(ctx context.Context) api.ReloadResult
	// ResetPeer clears the max_prefixes trip of the session named name;
	// its errors wrap routing.ErrUnknownSession or routing.ErrNotTripped.
	ResetPeer(ctx context.Context, name string) error
}

// ControlServer serves a Source on a unix socket that only root may use.
type ControlServer struct {
	path string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
}

// ListenControl opens the socket at path, replacing a stale socket left by
// a dead agent but refusing to steal one a live agent still serves.
func ListenControl(path string, src Source, log *slog.Logger) (*ControlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket folder: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another cend is serving it; give this one its own --socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	// Create the socket with no access for group and others from the
	// start, not only after a chmod.
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	cs := &ControlServer{path: path, ln: ln, log: log}
	cs.srv = &http.Server{
		Handler:           controlHandler(src, log),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	return cs, nil
}

// Serve answers requests until Close.
func (cs *ControlServer) Serve() error {
	err := cs.srv.Serve(cs.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving and removes the socket.
func (cs *ControlServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := cs.srv.Shutdown(ctx)
	if rmErr := os.Remove(cs.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	return err
}

func controlHandler(src Source, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	// Methods are checked here rather than in the patterns so that a wrong
	// method gets a 405 with a JSON error, not the catch-all 404.
	route := func(path, method string, fn func(w http.ResponseWriter, r *http.Request)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", path, method, r.Method))
				return
			}
			fn(w, r)
		})
	}
	get := func(path string, fn func() any) {
		route(path, http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.RawQuery != "" {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("%s takes no parameters, got %q", path, r.URL.RawQuery))
				return
			}
			writeJSON(w, http.StatusOK, fn())
		})
	}
	get("/v1/status", func() any { return src.Status() })
	get("/v1/peers", func() any { return nonNil(src.Peers()) })
	get("/v1/routes", func() any { return nonNil(src.Routes()) })
	get("/v1/bandwidth", func() any { return nonNil(src.Bandwidth()) })
	route("/v1/reload", http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			writeError(w, http.StatusBadRequest, "reload takes no body: cend re-reads the file it runs from")
			return
		}
		// The reload outlives the request: a client that goes away
		// does not cut short a config already swapped in.
		writeJSON(w, http.StatusOK, src.Reload(context.WithoutCancel(r.Context())))
	})
	route("/v1/peers/reset", http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" || r.ContentLength != 0 {
			writeError(w, http.StatusBadRequest, "reset takes the session's name as ?name=NAME (a VBR's network or a gateway), and no body")
			return
		}
		switch err := src.ResetPeer(r.Context(), name); {
		case errors.Is(err, routing.ErrUnknownSession):
			writeError(w, http.StatusNotFound, fmt.Sprintf("no BGP session named %q on this gateway", name))
		case errors.Is(err, routing.ErrNotTripped):
			writeError(w, http.StatusConflict, fmt.Sprintf("session %s is not shut down by max_prefixes; nothing to reset", name))
		case err != nil:
			writeError(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusOK, api.PeerReset{Name: name})
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such request: %s %s; see GET /v1/status, /v1/peers, /v1/routes, /v1/bandwidth, POST /v1/reload and /v1/peers/reset", r.Method, r.URL.Path))
	})
	return recoverer(mux, log)
}

// recoverer turns a panic in a handler into a 500: a bad request must never
// take the agent down.
func recoverer(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("control request failed", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal error; see cend's log")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}
