package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var errBadKey = errors.New("not a WireGuard key")

// Load reads, decodes and validates a config file. On any problem the error
// is an ErrorList holding every problem of the file, each located.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a config held in memory; file names it in
// errors and anchors relative paths.
func Parse(file string, data []byte) (*Config, error) {
	p := &problems{file: file}
	cfg := decodeFile(p, data)
	if cfg != nil {
		cfg.File = file
		cfg.Digest = digest(data)
		cfg.Dir = filepath.Dir(file)
		cfg.resolvePaths()
		validate(p, cfg)
	}
	if len(p.list) > 0 {
		return nil, p.sorted()
	}
	return cfg, nil
}

// digest is Config.Digest of data.
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func (c *Config) resolvePaths() {
	abs := func(path string) string {
		if path == "" || filepath.IsAbs(path) {
			return path
		}
		return filepath.Join(c.Dir, path)
	}
	for i := range c.Gateways {
		c.Gateways[i].PrivateKeyFile = abs(c.Gateways[i].PrivateKeyFile)
	}
	for i := range c.Networks {
		if b := c.Networks[i].BGP; b != nil {
			b.PasswordFile = abs(b.PasswordFile)
		}
	}
}

// decoder turns YAML nodes into the model, reporting every problem at the
// node it concerns. It is strict: unknown keys, duplicate keys and values
// of the wrong kind are errors.
type decoder struct{ p *problems }

func decodeFile(p *problems, data []byte) *Config {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(Pos{}, "the file is empty; a config needs at least instance and gateways")
		} else {
			at, msg := syntaxError(data, err)
			p.add(at, "%s", msg)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.add(nodePos(&extra), "the file holds more than one YAML document; a config is one document")
	} else if !errors.Is(err, io.EOF) {
		at, msg := syntaxError(data, err)
		p.add(at, "%s", msg)
		return nil
	}
	d := decoder{p}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.add(Pos{}, "the file is empty; a config needs at least instance and gateways")
			return nil
		}
		root = root.Content[0]
	}
	m, ok := d.mapping(root, "the config", "instance", "areas", "gateways", "networks", "bandwidth_packages", "interconnections")
	if !ok {
		return nil
	}
	cfg := &Config{}
	if n, ok := m["instance"]; ok {
		cfg.Instance = d.instance(n)
	} else {
		p.add(nodePos(root), "instance is missing; give it a name, like instance: {name: cen-demo}")
	}
	cfg.Areas = each(d.list(m["areas"], "areas"), d.area)
	if _, ok := m["gateways"]; !ok {
		p.add(nodePos(root), "gateways is missing; an instance needs at least one gateway")
	}
	cfg.Gateways = each(d.list(m["gateways"], "gateways"), d.gateway)
	cfg.Networks = each(d.list(m["networks"], "networks"), d.network)
	cfg.Packages = each(d.list(m["bandwidth_packages"], "bandwidth_packages"), d.pkg)
	cfg.Interconnections = each(d.list(m["interconnections"], "interconnections"), d.interconnection)
	return cfg
}

func nodePos(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

// deref follows aliases so anchors work as users expect.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "not a value"
}

// mapping checks n is a mapping with only the allowed keys, each once, and
// returns the value node of each key present.
func (d decoder) mapping(n *yaml.Node, what string, allowed ...string) (map[string]*yaml.Node, bool) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		d.p.add(nodePos(n), "%s must be a mapping of keys to values, not %s", what, kindName(n))
		return nil, false
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.p.add(nodePos(k), "%s has a key that is not a name", what)
		case !contains(allowed, k.Value):
			d.p.add(nodePos(k), "unknown key %q in %s%s; known keys: %s", k.Value, what, suggest(k.Value, allowed), strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			d.p.add(nodePos(k), "key %q appears twice in %s", k.Value, what)
		default:
			out[k.Value] = deref(v)
		}
	}
	return out, true
}

// list returns the items of a list value; an absent key is an empty list.
func (d decoder) list(n *yaml.Node, what string) []*yaml.Node {
	n = deref(n)
	if n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.p.add(nodePos(n), "%s must be a list, not %s", what, kindName(n))
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		items[i] = deref(c)
	}
	return items
}

// each decodes every item of a list into a slice sized once: a config may
// hold a hundred thousand networks, and Network is a large value to copy
// as a slice grows.
func each[T any](items []*yaml.Node, decode func(*yaml.Node) T) []T {
	if len(items) == 0 {
		return nil
	}
	out := make([]T, len(items))
	for i, n := range items {
		out[i] = decode(n)
	}
	return out
}

// scalar returns the text of a scalar value.
func (d decoder) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.p.add(nodePos(n), "%s must be a single value, not %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// name reads an identifier: lower case letters, digits, '.', '_' and '-'.
func (d decoder) name(n *yaml.Node, what string) string {
	s, ok := d.scalar(n, what)
	if !ok {
		return ""
	}
	if !namePattern.MatchString(s) {
		d.p.add(nodePos(n), "%s %q is not a valid name; use 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", what, s)
	}
	return s
}

func (d decoder) text(n *yaml.Node, what string) string {
	s, _ := d.scalar(n, what)
	return s
}

func (d decoder) unsigned(n *yaml.Node, what string, min, max uint64) (uint64, bool) {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n.Tag != "!!int" || v < min || v > max {
		d.p.add(nodePos(n), "%s %q must be a whole number from %d to %d", what, s, min, max)
		return 0, false
	}
	return v, true
}

func (d decoder) asn(n *yaml.Node, what string) uint32 {
	v, _ := d.unsigned(n, what, 1, math.MaxUint32)
	return uint32(v)
}

func (d decoder) boolean(n *yaml.Node, what string) bool {
	s, ok := d.scalar(n, what)
	if !ok {
		return false
	}
	if n.Tag != "!!bool" {
		d.p.add(nodePos(n), "%s %q must be true or false", what, s)
		return false
	}
	return s == "true" || s == "True" || s == "TRUE"
}

// duration reads a Go duration ("5m", "90s", "0s") of at least min.
func (d decoder) duration(n *yaml.Node, what string, min time.Duration) time.Duration {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < min {
		d.p.add(nodePos(n), "%s %q must be a duration of %v or more, like 5m or 90s", what, s, min)
		return 0
	}
	return v
}

func (d decoder) bandwidth(n *yaml.Node, what string) Bandwidth {
	s, ok := d.scalar(n, what)
	if !ok {
		return 0
	}
	b, err := ParseBandwidth(s)
	if err != nil {
		d.p.add(nodePos(n), "%s: %s", what, err)
	}
	return b
}

// prefix reads a CIDR with no host bits set.
func (d decoder) prefix(n *yaml.Node, what string) (netip.Prefix, bool) {
	s, ok := d.scalar(n, what)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		d.p.add(nodePos(n), "%s %q is not a CIDR; write it like 10.10.0.0/16 or fd00:10::/48", what, s)
		return netip.Prefix{}, false
	}
	if p.Addr().Zone() != "" {
		d.p.add(nodePos(n), "%s %q has a zone; CIDRs have none", what, s)
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		d.p.add(nodePos(n), "%s %q has host bits set; did you mean %s?", what, s, p.Masked())
		return netip.Prefix{}, false
	}
	return p, true
}

func (d decoder) addr(n *yaml.Node, what string) netip.Addr {
	s, ok := d.scalar(n, what)
	if !ok {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		d.p.add(nodePos(n), "%s %q is not an IP address", what, s)
		return netip.Addr{}
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		d.p.add(nodePos(n), "%s %s is not a unicast address a router can use", what, a)
		return netip.Addr{}
	}
	return a
}

func (d decoder) prefixes(n *yaml.Node, what string) ([]netip.Prefix, []Pos) {
	var out []netip.Prefix
	var at []Pos
	for _, item := range d.list(n, what) {
		if p, ok := d.prefix(item, what+" entry"); ok {
			out = append(out, p)
			at = append(at, nodePos(item))
		}
	}
	return out, at
}

// required reports a missing key at the item that lacks it.
func (d decoder) required(m map[string]*yaml.Node, item *yaml.Node, what, key, hint string) (*yaml.Node, bool) {
	n, ok := m[key]
	if !ok {
		d.p.add(nodePos(item), "%s is missing %s%s", what, key, hint)
	}
	return n, ok
}

func positions(m map[string]*yaml.Node, item *yaml.Node) fields {
	f := fields{"": nodePos(item)}
	for k, v := range m {
		f[k] = nodePos(v)
	}
	return f
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
