package test

import (
	endian "encoding/binary"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// routeWatch counts opencen's IPv4 routes (protocol 79) in a namespace's
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

func watchRoutes(tb testing.TB, namespace string) *routeWatch {
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
		Instructions: routeCounter(w.counter),
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
		return unix.Bind(w.sock, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_IPV4_ROUTE - 1)})
	})
	if err != nil {
		tb.Fatalf("route notifications in %s: %v", namespace, err)
	}
	// What is there already, after subscribing so nothing falls between.
	if w.base = countRoutes(tb, namespace); w.base < 0 {
		tb.Fatalf("list routes in %s: the dump was interrupted", namespace)
	}
	return w
}

// routeCounter is the socket filter of a routeWatch: for each rtnetlink
// message adding (deleting) an IPv4 main-table route of protocol 79 it
// adds one to (takes one from) counter's only entry; it drops every
// message.
func routeCounter(counter *ebpf.Map) asm.Instructions {
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
		asm.JNE.Imm(asm.R0, unix.AF_INET, "drop"),
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
// IPv4 main-table routes added and deleted, and nothing else.
func TestRouteWatchCounts(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetNS(t, "ocl-rw")
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("route", "add", "10.9.1.0/24", "dev", "lo", "proto", "79")
	w := watchRoutes(t, ns)
	ip("route", "add", "10.9.2.0/24", "dev", "lo", "proto", "79")
	ip("route", "add", "10.9.3.0/24", "dev", "lo", "proto", "79")
	ip("route", "add", "10.9.4.0/24", "dev", "lo", "proto", "static")
	ip("route", "add", "10.9.5.0/24", "dev", "lo", "proto", "79", "table", "79")
	ip("route", "del", "10.9.2.0/24", "dev", "lo", "proto", "79")
	if n, ok := w.count(); !ok || n != 2 {
		t.Errorf("count = %d (%v), want 2: 10.9.1.0/24, there when the watch started, and 10.9.3.0/24", n, ok)
	}
}
