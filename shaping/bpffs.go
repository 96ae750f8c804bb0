package shaping

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const bpffsMagic = 0xcafe4a11

// IsBPFFS reports whether path is on a bpf filesystem.
func IsBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == bpffsMagic, nil
}

// BPFFSRoot is where a bpf filesystem is expected.
const BPFFSRoot = "/sys/fs/bpf"

// EnsureBPFFS makes dir exist on a bpf filesystem. When dir is not on one
// it mounts a bpffs on dir itself, as Cilium's agent does on /sys/fs/bpf:
// `ip netns exec` gives a process a fresh /sys whose fs/bpf is a plain
// sysfs directory. Such a mount lives in the caller's mount namespace and
// goes with it, which is why nothing of the shaper depends on pins. It
// reports whether it mounted.
func EnsureBPFFS(dir string) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	ok, err := IsBPFFS(dir)
	if err != nil || ok {
		return false, err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return true, nil
}

// bpffsPreloaded are the files the kernel puts in every new bpffs
// (CONFIG_BPF_PRELOAD iterators); they are not pins.
var bpffsPreloaded = map[string]bool{"maps.debug": true, "progs.debug": true}

// ReleaseBPFFS unmounts dir when it is a bpffs mounted on its own (as
// EnsureBPFFS does) and nothing but the kernel's own files is left in it.
// Call it only for a mount of the caller's own.
func ReleaseBPFFS(dir string) error {
	ok, err := IsBPFFS(dir)
	if err != nil || !ok {
		return nil
	}
	parentOK, err := IsBPFFS(filepath.Dir(dir))
	if err != nil || parentOK {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if !bpffsPreloaded[e.Name()] {
			return nil
		}
	}
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount bpffs %s: %w", dir, err)
	}
	return nil
}
