package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Bounds of the metrics endpoint: a scraper that is slow to send or to
// read, or many at once, cannot hold the agent's goroutines and memory.
const (
	metricsReadTimeout  = 5 * time.Second
	metricsWriteTimeout = 10 * time.Second
	// metricsScrapeTimeout ends a scrape that gathers for longer (503);
	// below the write timeout, so the scraper hears why.
	metricsScrapeTimeout = 5 * time.Second
	// metricsInFlight scrapes at once; more get 503 at once.
	metricsInFlight = 4
)

// MetricsServer serves Prometheus metrics on /metrics.
type MetricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// MetricsHandler is /metrics of g: a source that fails to gather loses its
// series and the scrape goes on with the others (the error is logged),
// at most metricsInFlight scrapes run at once, and none longer than
// metricsScrapeTimeout.
func MetricsHandler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: metricsInFlight,
		Timeout:             metricsScrapeTimeout,
	})
}

// ServeMetrics serves g's /metrics on addr until Close.
func ServeMetrics(addr string, g prometheus.Gatherer, log *slog.Logger) (*MetricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(g, log))
	m := &MetricsServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: metricsReadTimeout,
			ReadTimeout:       metricsReadTimeout,
			WriteTimeout:      metricsWriteTimeout,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	return m, nil
}

// Addr is the address the server listens on.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Close stops serving.
func (m *MetricsServer) Close() error {
	err := m.srv.Close()
	<-m.done
	return err
}
