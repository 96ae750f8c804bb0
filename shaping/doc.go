// Package shaping enforces a gateway's cross-region bandwidth (SPEC
// section 2, rules 2 to 5): a token bucket per destination region on the
// egress of the gateway's WireGuard device, by one of three paths, each of
// which enforces (cend --shaper, [Path]):
//
//   - tcx: the eBPF program at TCX egress (Linux 6.6 or later);
//   - tc: the same program and maps as a direct-action cls_bpf filter on
//     the egress of a clsact qdisc, for kernels without TCX (Debian 12's
//     6.1): the same point of the transmit path, ahead of the root qdisc;
//   - userspace: [TUN], in the userspace WireGuard helper, on every packet
//     wireguard-go reads from its TUN while it is still unencrypted, with
//     golang.org/x/time/rate buckets ([Limiter]) of the program's rate,
//     burst and debt bound, the same classification and the same counters.
//
// [Probe] tells, without changing anything of the host's, which kernel
// hooks can run the program (it attaches it in a scratch network
// namespace); the agent refuses to start where no path can enforce.
//
// # Input and API
//
// The input is plain data, Desired: the rate toward each destination region
// (this gateway's share, bits/s, 0 = unlimited), every CEN prefix with its
// region (the gateway's own region included, so the longest match decides),
// and the gateways' addresses. [New] starts or adopts the eBPF shaper of
// the devices in Options.Interfaces at Options.Attach, [Shaper.Set] applies
// a Desired idempotently, [Shaper.Counters] reads bytes and packets passed
// and dropped per region, [Shaper.Close] keeps everything for the next
// agent or removes it all, and [Remove] takes away what any kernel shaper
// left. The userspace path has the same three calls on [Remote], the
// agent's end of the helper's shaper socket (socket.go holds the
// protocol), served by [Server] over a [TUN].
//
// The files follow the concerns: the plain data (desired.go, rate.go,
// options.go); the kernel shaper's lifecycle (shaper.go: New, Counters,
// Close; load.go, adopt.go, attach.go, kernel.go, tcfilter.go, pins.go,
// bpffs.go, clock.go, probe.go); what Set writes (buckets.go, prefixes.go,
// htb.go); the balancer of several devices (balance.go, allocate.go); and
// the userspace path (classify.go, limiter.go, tun.go, queue.go,
// socket.go, server.go, remote.go).
//
// # Exemption: the gateways' own traffic, never a port
//
// A packet is exempt from shaping only when its source and destination are
// both addresses of the instance's gateways (Desired.ControlAddrs) and, in
// the kernel, the host itself sent it (skb->ingress_ifindex is 0 at
// egress): the gateways' own BGP, BFD and probes never starve, even on a
// 1 Kbps pair, while a tenant is charged on any port (179, 3784, 3785,
// 4784, 4789, 51820 or any other, TCP or UDP), and a tenant that puts a
// gateway's address in its source is charged too, as a forwarded packet.
// The userspace helper cannot see where a packet came from; there the
// dataplane's guard drops forwarded packets with a gateway's source so
// that they never reach the TUN. Exempt packets are counted as passed.
// (WireGuard handshakes travel on the underlay, not through the tunnel
// device, so no shaper sees them.)
//
// # The program (bpf/shaper.c)
//
// Per packet: parse IPv4 or IPv6 (behind an Ethernet header on Ethernet
// devices such as veth, directly on L3 devices such as WireGuard; the
// choice is a constant set at load time from the link type, so each device
// gets its own copy of the program, all on the same maps), look the
// destination up in an LPM trie (one for IPv4, one for IPv6) that yields a
// region index. No match, or a region without a bucket (the gateway's own
// region), and the packet passes untouched. A region with rate 0 is
// counted and passes. The gateways' own traffic (above) is counted and
// never charged: the gateways' addresses are host entries in the same
// trie, flagged, so the common case costs no extra lookup.
//
// A packet costs its IP bytes on the wire: for a GSO packet, the headers of
// every segment are counted as a qdisc counts them. On an Ethernet device
// the 14-byte header is not charged, so the allocation means the same on
// veth as on WireGuard: IP bytes.
//
// # The bucket
//
// Credit is kept in integer units of 1/8e9 byte: a bucket of rate r bits/s
// earns exactly r units a nanosecond, so refill is one multiply, with no
// rounding and no drift, however often or seldom it runs. A bucket holds at
// most burst; in ModeQueue it may run into debt down to -queue. A packet
// passes if the refilled bucket minus its cost stays >= -queue (>= 0 in
// ModePolice); a refused packet costs nothing. A GSO packet larger than
// burst+queue (it could never pass that test) passes when the bucket is
// full and leaves it in debt, so no packet size is black-holed and the
// long-run rate stays exact.
//
// Concurrency: the state is two 64-bit words updated with atomics. Charges
// and refunds are atomic adds; the right to credit a span of time goes to
// the CPU whose compare-and-swap moves "last" over it, so each nanosecond
// is credited exactly once whatever the number of CPUs. The credit added
// is capped by the room the crediting CPU reads, and any excess over burst
// left by a race is subtracted again; adds commute, so a charge made in
// between is never lost. A refused charge is refunded; in the instant
// between, a packet on the other CPU may see too little credit: the error
// is always toward dropping, never toward exceeding the rate.
// TestProgConcurrentCharges charges one bucket from two CPUs at once and
// wants exactly burst/size packets through. The atomics stand in for a
// bpf_spin_lock, which saves and restores interrupts around every charge.
//
// Live changes: configuration (rate, burst, queue, HTB class) sits in its
// own array, written only by userspace; the running state (tokens, last)
// in another, written only by the program. Set rewrites only the
// configuration entries that differ: no reattach, and every other bucket
// keeps its state. A changed rate keeps the credit the bucket has (clamped
// to the new burst); a bucket that starts shaping starts full.
//
// Burst, and why:
//
//	burst = max(rate/8 * 10 ms, MTU)        (BurstBytes)
//
// 10 ms of rate absorbs the back-to-back segments a TSO/GRO sender or one
// qdisc dequeue round emits without calling them excess, and bounds how far
// a fresh flow can run ahead of its allocation to 10 ms worth of bytes. The
// floor of one full packet keeps every packet size deliverable at any rate
// (the largest MTU of the devices, when there are several).
// At 1 Kbps (125 B/s) the bucket holds one full packet, so a default ping
// (84 IP bytes a second, 672 bit/s) always finds credit, and a full-size
// packet still passes about every 12 s.
//
// Clock: by default the bucket's clock is jiffies (bpf_jiffies64, which
// the verifier inlines) times the tick length, which New measures at load
// time against bpf_ktime_get_ns (both are CLOCK_MONOTONIC).
// Options.PreciseClock uses bpf_ktime_get_ns instead, a helper call on
// every packet. The credit is exact either way (integer, from elapsed
// time); a coarse clock credits in steps of one tick, which the 10 ms burst
// and the ModeQueue debt absorb. If the clock type changes across a
// restart the state holds a time of the other clock; the program notices
// time going back by more than a second and restarts the base. Tests drive
// the same code with a clock override (a global the program reads instead
// of the clock when it is non-zero).
//
// # TCP accuracy: why ModeQueue
//
// A drop policer makes TCP fall short because every drop cuts a window
// that then has nothing to drain from, and a forwarding gateway receives
// GSO packets of 10-64 KB, so one drop loses dozens of segments. The
// program alone cannot delay a packet (no fq on these hosts, so no EDT), so
// where queueing is needed the program classifies: in ModeQueue it stamps
// every admitted packet of a shaped region with skb->priority = one of the
// region's HTB classes (TCX egress runs ahead of the qdisc). Set installs a
// root HTB (handle ce0:, default class 0, so unshaped traffic takes HTB's
// direct queue unshaped) and per region a class ce0:<id> at the bucket's
// rate (raised by (MTU+14)/MTU on Ethernet, where HTB also charges the
// link header) with two leaves that may each use all of it: minor
// 0x1000+id for small packets (<= 256 IP bytes, not GSO) at priority 0,
// and 0x2000+id for the rest at priority 1.
// The bucket's debt is the class's backlog: the program admits at most the
// rate plus burst plus queue, the class turns the debt into delay, and the
// program drops what goes beyond queue = rate * 100 ms. Small packets
// (pings, probes, keystrokes, DNS) do not wait behind a bulk backlog; they
// are charged to the same bucket, so the rate holds whatever the mix. The
// program does the classification, the accounting, the drop decision and
// the counters; HTB only spaces out what the program admitted.
//
// The queue bound (DefaultQueueDelay) is what keeps TCP at its target: a
// shorter one brings back part of the policer's shortfall, most of all
// with several regions busy at once. TestTCPGoodput holds it to the
// target; BenchmarkGoodput reports the goodput beside tc's shapers.
// Goodput over IP bytes has a ceiling below 1: with a 1500-byte MTU and
// TCP timestamps a segment carries 1448 bytes of payload. The tests and
// benchmarks pin cubic, Linux's default congestion control, whatever the
// host's default is (test/lab's IperfOptions says why).
//
// HTB's leaf queue is a pfifo of the device's txqueuelen packets, which at
// high rates holds less than the program's 100 ms, so the FIFO would drop
// first (not in our counters). Set therefore raises the device's
// txqueuelen to hold burst plus queue in half-MTU packets (never lowering
// it, at most 100,000) and gives existing leaves a fresh FIFO when it did.
// ModePolice needs no qdisc; it is kept for hosts whose qdisc belongs to
// someone else and for the benchmark.
//
// # Several devices: the balancer
//
// Several devices (Options.Interfaces; a gateway has one, its WireGuard
// device): every device gets the HTB and the region classes (the
// Ethernet raise only where there is an Ethernet header), each class at
// the region's full rate. That does not double the allocation: the
// programs of all devices charge one bucket per region, so what all the
// devices are handed together is at most rate * t + burst + queue, however
// it is split; an HTB can only delay what the program admitted, never add
// to it. But with the traffic split, neither HTB drains slower than it is
// fed, so nothing queues: the bucket's debt has no backlog behind it and
// the program acts as a policer of burst plus queue, with a policer's
// shortfall and retransmissions. So a balancer (balance.go) gives each
// device's bulk leaf a ceiling that is its share of the rate: every 100 ms
// it reads what each bulk leaf sent and divides the rate max-min fairly
// (allocate.go: a device held by its ceiling wants more, the others get
// what they use plus a margin; an idle region goes back to full shares).
// The shares of the busy devices add up to the rate, and the debt is a
// real queue again. The balancer moves only bulk ceilings (small packets
// keep the full rate everywhere) and never decides admission: the bucket
// does, so a share that is wrong for 100 ms costs goodput, never the
// allocation. It runs only in ModeQueue with several devices.
//
// # Lifecycle: found in the kernel, not in pins
//
// The program is attached without a link: at TCX with BPF_PROG_ATTACH
// (link.RawAttachProgram, attach type TCX egress), at tc as a cls_bpf
// filter of ours (priority and handle 0xce0, named opencen-shaper). Either
// stays attached until it is detached or its device goes, whatever becomes
// of the agent and of its mount namespace: `ip netns exec` gives every
// cend a fresh /sys where cend mounts a bpffs of its own, which dies with
// that cend, so nothing may depend on a pin. New therefore looks at the
// kernel: every device of the namespace is queried (BPF_PROG_QUERY at TCX
// egress, the tc egress filter dump) for programs named ocsh_shape; the
// maps of one of them (prog.Info().MapIDs, ebpf.NewMapFromID, matched by
// name) become the new programs' maps, so buckets, counters and region
// ids (held in ocsh_cfg) carry over; and each device's running program is
// replaced in one step by this binary's at the same hook (BPF_F_REPLACE
// at TCX, a filter replace at tc): never a second attachment, no moment
// without one. A device shaped at the other hook (a change of --shaper
// between restarts) is detached there first and then attached at the new
// hook: a moment without the shaper, never one with two. A TCX link of an
// agent that pinned its links is detached the same way. Then every other
// program of ours in the namespace is detached: duplicates, devices not
// listed (with their HTB qdisc). Maps of another layout
// (ebpf.ErrMapIncompatible) are left to their programs, which are
// replaced: the buckets start afresh.
//
// Options.PinPath, where set, gets the maps and each device's program
// pinned for inspection (bpftool), replacing whatever is pinned there; a
// bpffs is mounted on it when it is not on one. Close(false) closes file
// descriptors only; the shaper keeps working (the balancer's shares stay
// in the kernel until the next agent's first Set restores full shares and
// rebalances). Close(true), like [Remove], detaches every program of ours
// in the namespace at both hooks, deletes a clsact qdisc left without
// filters, removes the HTB qdisc carrying our handle from every device,
// and removes the pins with the bpffs mounted for them.
//
// # Userspace: the helper shapes what it forwards
//
// [TUN] wraps the helper's tun.Device. Each packet wireguard-go reads goes
// through [Limiter], which classifies as the program does and keeps one
// golang.org/x/time/rate limiter per region with the same rate (bytes/s)
// and burst; its test is the program's, TokensAt(now) - size >= -queue,
// then ReserveN, whose delay is the packet's wait. A packet that may go
// now is handed to WireGuard in place, without a copy; one that must wait
// is copied into its region's FIFO and handed over when its time comes:
// Read first releases what is due, then sets the TUN file's read deadline
// to the next due time, so a read blocked on the TUN returns when a
// queued packet is due (no goroutine, no timer of its own). Each region
// has its own FIFO, so no region waits behind another's backlog, and small
// packets (256 bytes or less) are not queued at all, as the kernel's
// small-packet class serves them first: the queue is the bounded delay of
// ModeQueue, not a policer. TestProgMatchesRateModel drives the program
// (BPF_PROG_TEST_RUN, clock override) and the Limiter with the same random
// schedules in both modes at 1 Kbps, 2 Mbps and 100 Mbps and wants
// identical verdicts for every packet. With no region configured, Read
// costs one atomic load: the helper wraps its TUN whatever the agent's
// path, and a gateway shaping at tcx or tc empties it.
//
// The buckets live in the helper, which outlives the agent: the agent
// sets them and reads their counters over the helper's shaper socket
// (socket.go: SocketPath, one JSON exchange per connection, root only).
// [Remote] sends a desired state only when it changed, and again to a
// helper that restarted (each answer names the helper's instance).
//
// # Benchmarks
//
// `make bench-shaping` runs this package's benchmarks once each (they need
// root); `make bench` runs them with the other areas' and writes every
// figure, beside its same-run baseline and its target, into BENCHMARKS.md
// at the repository root. That report holds the figures; this doc holds
// none, since they vary with the machine. What each benchmark measures:
//
//   - BenchmarkGoodput: iperf3 TCP goodput through a forwarding gateway
//     over veth, as a share of the allocation, at 10, 100 and 500 Mbps
//     with one and four flows, for the shaper (ModeQueue) beside tc tbf,
//     htb, htb at the like-for-like rate for IP bytes (htb-ip), and the
//     pure policer (ModePolice).
//   - BenchmarkLatencyUnderLoad: p99 ping RTT toward a region while one
//     TCP flow fills its allocation, the shaper beside htb at the same
//     rate.
//   - BenchmarkProgramCost: the program's cost per packet through
//     BPF_PROG_TEST_RUN with 1,000 and 100,000 prefixes, beside
//     ocsh_lpm_only, which parses and looks up the same way and does
//     nothing else.
//   - BenchmarkUnlimitedOverhead: TCP throughput through an unlimited
//     region with the program attached, against no program.
//   - BenchmarkModes: each path (tcx, tc, userspace) on one wireguard-go
//     tunnel: goodput at 100 Mbps, p99 RTT under load beside the idle
//     tunnel's, and throughput to an unlimited region with the path's
//     shaper in place against without it.
//
// # Tests
//
// Tests marked privileged need root (as CI runs them) and skip with a
// message otherwise; each makes its own namespaces named ocsh<random> and
// removes them. Most traffic tests use a three-namespace path (source,
// forwarding gateway, destination) over veth; TestTCPGoodput wants goodput
// within 0.95-1.00 of the allocation for every case BenchmarkGoodput
// measures. TestWireGuardTunnel and TestUserspaceTunnel shape a
// wireguard-go device (TUN) between two gateway namespaces, by the program
// and by TUN. TestTwoDevicesSplitTraffic sends one region's traffic out of
// a veth and a wireguard-go device of one gateway (a flow on each) and
// wants the sum held to the rate; TestProgSharedBucketTwoDevices charges
// one bucket through both programs at once; TestLiveRateChangeTraffic
// lowers a rate under load and wants the new one in force within a
// second; TestLifecycle covers adoption from the kernel alone (pins and
// their bpffs gone), a pinned TCX link, changes between tcx and tc, a
// device dropped and cleanup. TestProgControlExempt and
// TestLimiterTenantPorts charge a tenant's TCP and UDP on the gateways'
// ports; TestTUNQueues and TestRemote need no root.
package shaping
