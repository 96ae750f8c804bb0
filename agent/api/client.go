package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client talks to one gateway's control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		socket: path,
		// No client-wide timeout: a request ends with its context, which
		// do bounds by defaultTimeout when it has no deadline of its own
		// (a reload's wait is longer than a read's).
		http: &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

// ErrUnreachable wraps a failure to reach the gateway at all.
var ErrUnreachable = errors.New("gateway unreachable")

// defaultTimeout bounds a request whose context has no deadline.
const defaultTimeout = 30 * time.Second

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://cend"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: cannot reach cend at %s (is it running, and are you root?): %w", ErrUnreachable, c.socket, unwrapURL(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read reply from %s: %w", c.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("cend: %s", e.Error)
		}
		return fmt.Errorf("cend: %s", resp.Status)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode reply from %s: %w", c.socket, err)
	}
	return nil
}

func unwrapURL(err error) error {
	var u interface{ Unwrap() error }
	if errors.As(err, &u) {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// Status fetches the gateway's summary.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", &s)
}

// Peers fetches the gateway's BGP neighbours and tunnels.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var p []Peer
	return p, c.do(ctx, http.MethodGet, "/v1/peers", &p)
}

// Routes fetches the routes the gateway knows.
func (c *Client) Routes(ctx context.Context) ([]Route, error) {
	var r []Route
	return r, c.do(ctx, http.MethodGet, "/v1/routes", &r)
}

// Bandwidth fetches the gateway's egress per destination region.
func (c *Client) Bandwidth(ctx context.Context) ([]Bandwidth, error) {
	var b []Bandwidth
	return b, c.do(ctx, http.MethodGet, "/v1/bandwidth", &b)
}

// ResetPeer brings back the session named name (a VBR's network or a
// gateway) that max_prefixes shut down.
func (c *Client) ResetPeer(ctx context.Context, name string) (PeerReset, error) {
	var r PeerReset
	return r, c.do(ctx, http.MethodPost, "/v1/peers/reset?name="+url.QueryEscape(name), &r)
}

// Reload asks the gateway to re-read its config file.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	return r, c.do(ctx, http.MethodPost, "/v1/reload", &r)
}
