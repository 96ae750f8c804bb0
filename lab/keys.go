package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
)

// writeKeysAndConfig gives every gateway a fresh WireGuard key (a lab never
// reuses the keys printed in an example), writes each private key with mode
// 0600 and the lab's copy of the config naming the new public keys and key
// files, then validates that copy. Keys never reach a log or an error.
func writeKeysAndConfig(l *Lab, src []byte) (*config.Config, error) {
	if err := os.MkdirAll(filepath.Join(l.StateDir, "keys"), 0o700); err != nil {
		return nil, fmt.Errorf("create key folder: %w", err)
	}
	pub := map[string]string{}
	rel := map[string]string{}
	for _, g := range l.Gateways {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return nil, fmt.Errorf("generate key of gateway %s: %w", g.Name, err)
		}
		if err := writeSecret(g.KeyFile, []byte(k.String()+"\n")); err != nil {
			return nil, fmt.Errorf("write key of gateway %s: %w", g.Name, err)
		}
		pub[g.Name] = k.PublicKey().String()
		r, err := filepath.Rel(filepath.Dir(l.ConfigFile), g.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key path of gateway %s: %w", g.Name, err)
		}
		rel[g.Name] = r
	}
	out, err := rewriteConfig(src, filepath.Dir(l.SourceConfig), pub, rel)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.ConfigFile, out, 0o644); err != nil {
		return nil, fmt.Errorf("write lab config: %w", err)
	}
	cfg, err := config.Load(l.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("lab config %s does not validate: %w", l.ConfigFile, err)
	}
	return cfg, nil
}

// writeSecret creates path with mode 0600 whatever the umask, replacing
// any file already there.
func writeSecret(path string, data []byte) error {
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rewriteConfig edits the YAML tree: each gateway's public_key and
// private_key_file, and every other relative path (password_file) made
// absolute against srcDir since the copy lives elsewhere. Everything else,
// comments included, is kept.
func rewriteConfig(src []byte, srcDir string, pub, keyFile map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config is not a YAML mapping")
	}
	root := doc.Content[0]
	gws := mapValue(root, "gateways")
	if gws == nil || gws.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("config has no gateways list")
	}
	done := 0
	for _, g := range gws.Content {
		name := mapValue(g, "name")
		if name == nil {
			continue
		}
		p, ok := pub[name.Value]
		if !ok {
			continue
		}
		setScalar(g, "public_key", p)
		setScalar(g, "private_key_file", keyFile[name.Value])
		done++
	}
	if done != len(pub) {
		return nil, fmt.Errorf("config: found %d of %d gateways to give lab keys", done, len(pub))
	}
	if nets := mapValue(root, "networks"); nets != nil && nets.Kind == yaml.SequenceNode {
		for _, n := range nets.Content {
			if bgp := mapValue(n, "bgp"); bgp != nil {
				if pf := mapValue(bgp, "password_file"); pf != nil && pf.Value != "" && !filepath.IsAbs(pf.Value) {
					abs, err := filepath.Abs(filepath.Join(srcDir, pf.Value))
					if err != nil {
						return nil, fmt.Errorf("password_file: %w", err)
					}
					pf.Value = abs
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode lab config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode lab config: %w", err)
	}
	return buf.Bytes(), nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setScalar(m *yaml.Node, key, value string) {
	if v := mapValue(m, key); v != nil {
		v.Kind, v.Tag, v.Value = yaml.ScalarNode, "!!str", value
		return
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}
