// Package buildinfo says which opencen a binary is: its version and the
// commit it is built from, for cend --version, cenctl version and the
// opencen_build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are set by the Makefile's linker flags from git
// describe and git rev-parse:
//
//	-X github.com/opencen/opencen/internal/buildinfo.Version=...
//
// A binary built without them (go install, go build by hand) falls back
// to what the Go toolchain recorded in it.
var Version, Commit string

// Info is one binary's identity.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns this binary's identity: the linker's values, else the
// module version and VCS revision the toolchain recorded, else "devel"
// and "unknown".
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(Version, Commit, bi)
}

func get(version, commit string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi != nil {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			info.Commit = vcsRevision(bi)
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// vcsRevision is the commit the toolchain recorded, with "-dirty" when the
// tree had changes.
func vcsRevision(bi *debug.BuildInfo) string {
	var rev string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// String is the one line a --version prints, after the program's name.
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
