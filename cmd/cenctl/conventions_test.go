package main

import (
	"encoding"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/buildinfo"
	"github.com/opencen/opencen/lab"
)

// TestUnknownSubcommandsAreBadUsage: a group given a subcommand it does not
// have exits 2 naming it, as an unknown top-level command does; bare, it
// prints its help.
func TestUnknownSubcommandsAreBadUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "foo"}, `unknown command "foo" for "cenctl lab"; use one of down, status, up`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "cenctl completion"`},
		{[]string{"lab", "up", "extra"}, "up takes , got 1 argument(s)"},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		out, errOut, code := cenctl(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("cenctl %q: exit %d, stderr %q, stdout %d bytes; want exit 2 and %q", c.args, code, errOut, len(out), c.want)
		}
	}
	out, _, code := cenctl(t, "lab")
	if code != exitOK || !strings.Contains(out, "Available Commands") {
		t.Errorf("cenctl lab: exit %d, want its help:\n%s", code, out)
	}
	if out, _, code := cenctl(t, "completion", "fish"); code != exitOK || !strings.Contains(out, "complete -c cenctl") {
		t.Errorf("cenctl completion fish: exit %d:\n%.200s", code, out)
	}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestJSONKeysAreSnakeCase: every document a command prints with -o json
// names its keys in lower snake case, as the config file does. The types
// are walked field by field (so a key that is only sometimes present is
// checked too), and documents printed by real commands key by key.
func TestJSONKeysAreSnakeCase(t *testing.T) {
	for _, v := range []any{
		matrix{}, invalidFile{}, config.Plan{}, buildinfo.Info{},
		api.Status{}, []api.Peer{}, []api.Route{}, []api.Bandwidth{}, api.ReloadResult{}, api.Error{},
		lab.Lab{}, lab.StatusReport{}, lab.Report{},
	} {
		checkJSONFields(t, reflect.TypeOf(v), reflect.TypeOf(v).String(), map[reflect.Type]bool{})
	}
	state := t.TempDir()
	for _, args := range [][]string{
		{"lab", "status", "-o", "json", "--state-dir", state},
		{"validate", "-o", "json", "../../examples/realistic.yaml"},
		{"validate", "-o", "json", "../../config/testdata/five-mistakes.yaml"},
		{"plan", "-o", "json", "../../examples/small.yaml", "../../examples/realistic.yaml"},
		{"version", "-o", "json"},
	} {
		out, errOut, _ := cenctl(t, args...)
		var doc any
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Errorf("cenctl %q: not one JSON document: %v\n%s%s", args, err, out, errOut)
			continue
		}
		checkJSONKeys(t, doc, strings.Join(args, " "))
	}
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// checkJSONFields checks every field encoding/json writes of t (and of the
// types within it) has a snake_case key of its own.
func checkJSONFields(t *testing.T, typ reflect.Type, path string, seen map[reflect.Type]bool) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || seen[typ] || typ.Implements(jsonMarshaler) || reflect.PointerTo(typ).Implements(jsonMarshaler) ||
		typ.Implements(textMarshaler) || reflect.PointerTo(typ).Implements(textMarshaler) {
		return
	}
	seen[typ] = true
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" { // its fields are the outer type's
			checkJSONFields(t, f.Type, path, seen)
			continue
		}
		if !snakeCase.MatchString(name) {
			t.Errorf("%s.%s: JSON key %q is not snake_case (tag it json:\"...\")", path, f.Name, name)
		}
		checkJSONFields(t, f.Type, path+"."+f.Name, seen)
	}
}

func checkJSONKeys(t *testing.T, doc any, where string) {
	t.Helper()
	switch v := doc.(type) {
	case map[string]any:
		for k, sub := range v {
			if !snakeCase.MatchString(k) {
				t.Errorf("cenctl %s: key %q is not snake_case", where, k)
			}
			checkJSONKeys(t, sub, where)
		}
	case []any:
		for _, sub := range v {
			checkJSONKeys(t, sub, where)
		}
	}
}

// TestValidateJSONErrors: with -o json, a file that does not validate is
// one JSON document on stdout, each error an object with its file, line,
// column and message, the same errors the text form prints; exit 1.
func TestValidateJSONErrors(t *testing.T) {
	const file = "../../config/testdata/five-mistakes.yaml"
	out, errOut, code := cenctl(t, "validate", "-o", "json", file)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1; stderr %s", code, errOut)
	}
	var doc struct {
		File   string `json:"file"`
		Errors []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Column  int    `json:"column"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("stdout is not the errors document: %v\n%s", err, out)
	}
	_, text, _ := cenctl(t, "validate", file)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if doc.File != file || len(doc.Errors) != 5 || len(lines) != 6 {
		t.Fatalf("file %q, %d errors (text: %d lines); want %s and 5", doc.File, len(doc.Errors), len(lines), file)
	}
	for i, e := range doc.Errors {
		if got := (&config.Error{File: e.File, Pos: config.Pos{Line: e.Line, Column: e.Column}, Msg: e.Message}).Error(); got != lines[i] {
			t.Errorf("error %d: JSON says %q, text %q", i, got, lines[i])
		}
	}
	out, _, code = cenctl(t, "validate", "-o", "json", "/nonexistent/cen.yaml")
	if code != exitFailure || !strings.Contains(out, `"message": "read config: open /nonexistent/cen.yaml: no such file or directory"`) {
		t.Errorf("unreadable file: exit %d:\n%s", code, out)
	}
}
