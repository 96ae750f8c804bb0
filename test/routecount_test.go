package test

import (
	endian "encoding/binary"
	"fmt"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// routeWatch counts opencen's routes of one family (protocol 79) in a namespace's
// main table without reading a notification: an eBPF socket filter on a
// route notification socket adds one to a counter for each such route
// added and takes one away for each deleted, and drops every message, so
// nothing is queued and nothing is read. A benchmark that waits for
// 100,000 routes would otherwise compete with the agents it times:
// polling with dumps reads every route each time, and reading the
// notifications costs a system call per batch of them. The count is of
// events after the watch starts plus the routes there then: a route
// replaced in place counts twice, so callers confirm with a dump.
type routeWatch struct {
	base    int
	counter *ebpf.Map
	prog    *ebpf.Program
	sock    int
}

func watchRoutes(tb testing.TB, namespace string, family int) *routeWatch {
	tb.Helper()
	w := &routeWatch{sock: -1}
	tb.Cleanup(w.close)
	var err error
	w.counter, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		tb.Fatalf("route counter map: %v", err)
	}
	w.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: routeCounter(w.counter, family),
	})
	if err != nil {
		tb.Fatalf("route counter program: %v", err)
	}
	err = testutil.InNetNS(namespace, func() error {
		var err error
		w.sock, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		// The filter first, so that it counts every message from the start.
		if err := unix.SetsockoptInt(w.sock, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, w.prog.FD()); err != nil {
			return err
		}
		group := uint32(unix.RTNLGRP_IPV4_ROUTE)
		if family == unix.AF_INET6 {
			group = unix.RTNLGRP_IPV6_ROUTE
		}
		return unix.Bind(w.sock, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (group - 1)})
	})
	if err != nil {
		tb.Fatalf("route notifications in %s: %v", namespace, err)
	}
	// What is there already, after subscribing so nothing falls between.
	if w.base = countRoutes(tb, namespace, family); w.base < 0 {
		tb.Fatalf("list routes in %s: the dump was interrupted", namespace)
	}
	return w
}

// routeCounter is the socket filter of a routeWatch: for each rtnetlink
// message adding (deleting) a main-table route of family and protocol 79 it
// adds one to (takes one from) counter's only entry; it drops every
// message.
func routeCounter(counter *ebpf.Map, family int) asm.Instructions {
	// LD_ABS loads half-words in network order; nlmsg_type is in host
	// order.
	typ := func(t uint16) int32 {
		var b [2]byte
		endian.NativeEndian.PutUint16(b[:], t)
		return int32(endian.BigEndian.Uint16(b[:]))
	}
	const rtmsg = unix.SizeofNlMsghdr // family, dst_len, src_len, tos, table, protocol
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // LD_ABS reads the context in r6
		asm.LoadAbs(4, asm.Half),    // nlmsg_type
		asm.Mov.Imm(asm.R7, 1),
		asm.JEq.Imm(asm.R0, typ(unix.RTM_NEWROUTE), "route"),
		asm.Mov.Imm(asm.R7, -1),
		asm.JNE.Imm(asm.R0, typ(unix.RTM_DELROUTE), "drop"),
		asm.LoadAbs(rtmsg, asm.Byte).WithSymbol("route"),
		asm.JNE.Imm(asm.R0, int32(family), "drop"),
		asm.LoadAbs(rtmsg+4, asm.Byte),
		asm.JNE.Imm(asm.R0, unix.RT_TABLE_MAIN, "drop"),
		asm.LoadAbs(rtmsg+5, asm.Byte),
		asm.JNE.Imm(asm.R0, 79, "drop"),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.StoreXAdd(asm.R0, asm.R7, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),
		asm.Return(),
	}
}

// count is the number of routes; false if the counter cannot be read.
func (w *routeWatch) count() (int, bool) {
	var n int64
	if err := w.counter.Lookup(uint32(0), &n); err != nil {
		return 0, false
	}
	return w.base + int(n), true
}

func (w *routeWatch) close() {
	if w.sock >= 0 {
		unix.Close(w.sock)
	}
	if w.prog != nil {
		w.prog.Close()
	}
	if w.counter != nil {
		w.counter.Close()
	}
}

// TestRouteWatchCounts: the pipeline benchmark's counter follows opencen's
// main-table routes of its family added and deleted, and nothing else.
func TestRouteWatchCounts(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		family int
		p      func(i int) string
		other  string
	}{
		{unix.AF_INET, func(i int) string { return fmt.Sprintf("10.9.%d.0/24", i) }, "fd09:9::/64"},
		{unix.AF_INET6, func(i int) string { return fmt.Sprintf("fd09:%d::/64", i) }, "10.9.9.0/24"},
	} {
		ns := testutil.NewNetNS(t, "ocl-rw")
		ip := func(args ...string) {
			t.Helper()
			if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
		ip("link", "set", "lo", "up")
		ip("route", "add", c.p(1), "dev", "lo", "proto", "79")
		w := watchRoutes(t, ns, c.family)
		ip("route", "add", c.p(2), "dev", "lo", "proto", "79")
		ip("route", "add", c.p(3), "dev", "lo", "proto", "79")
		ip("route", "add", c.p(4), "dev", "lo", "proto", "static")
		ip("route", "add", c.p(5), "dev", "lo", "proto", "79", "table", "79")
		ip("route", "add", c.other, "dev", "lo", "proto", "79")
		ip("route", "del", c.p(2), "dev", "lo", "proto", "79")
		if n, ok := w.count(); !ok || n != 2 {
			t.Errorf("family %d: count = %d (%v), want 2: %s, there when the watch started, and %s", c.family, n, ok, c.p(1), c.p(3))
		}
	}
}
