// Package nsdo runs code inside a network namespace: one held by a handle
// (In), or a throwaway one that lives only as long as the call (Scratch).
//
// Calls that name a device by ifindex without a netlink socket of their
// own (BPF_PROG_ATTACH, BPF_PROG_QUERY) act in the namespace of the
// calling thread, so they must run on a thread switched into the right
// one. Both functions run fn on a goroutine locked to its OS thread; a
// thread that cannot be switched back, and every Scratch thread, stays
// locked when its goroutine ends, so the Go runtime discards it instead of
// handing it to other goroutines.
package nsdo

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// In runs fn on a thread inside the namespace ns and returns its error.
func In(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNamed runs fn on a thread inside the namespace called name (as `ip
// netns` names it): the sockets fn opens, and the links and routes it
// reads or changes through package-level netlink calls, are that
// namespace's.
func InNamed(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer ns.Close()
	return In(ns, fn)
}

// Scratch runs fn on a thread inside a new, empty network namespace that
// nothing else sees and that goes away with the thread: a probe there
// touches nothing of the host's. It needs CAP_SYS_ADMIN.
func Scratch(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread leaves with its namespace.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new scratch netns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
