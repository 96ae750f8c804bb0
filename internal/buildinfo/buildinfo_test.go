package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	recorded := &debug.BuildInfo{
		Main:     debug.Module{Path: "github.com/opencen/opencen", Version: "v0.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
	}
	for _, c := range []struct {
		name, version, commit string
		bi                    *debug.BuildInfo
		wantV, wantC          string
	}{
		{"linker flags win", "v0.5.0-3-gdeadbee", "deadbee", recorded, "v0.5.0-3-gdeadbee", "deadbee"},
		{"toolchain's record", "", "", recorded, "v0.4.0", "abc123-dirty"},
		{"nothing recorded", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel", "unknown"},
		{"no build info", "", "", nil, "devel", "unknown"},
	} {
		got := get(c.version, c.commit, c.bi)
		if got.Version != c.wantV || got.Commit != c.wantC || got.GoVersion == "" {
			t.Errorf("%s: got %+v, want version %s commit %s", c.name, got, c.wantV, c.wantC)
		}
	}
}
