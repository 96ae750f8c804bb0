// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// opencen shaper: a token bucket per destination region at the egress of a
// gateway's tunnel device, attached at TCX or as a direct-action cls_bpf
// filter on clsact. See ../doc.go for the design and the reasons behind
// it.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

// Verdicts, the same at TCX and at a direct-action tc filter: -1 is
// ACT_NEXT and TC_ACT_UNSPEC (go on: the packet is sent), 2 is ACT_DROP and
// TC_ACT_SHOT.
#define ACT_NEXT -1
#define ACT_DROP 2

#define MAX_REGIONS 1024
#define MAX_PREFIXES 262144

// One byte is worth 8e9 credit units: a bucket of rate r bits/s earns
// exactly r units per nanosecond, so refill is an integer multiply with no
// rounding and no drift, however often it runs.
#define UNITS_PER_BYTE 8000000000ULL


// Set at load time: the length of the link-layer header in front of the IP
// header, 14 on Ethernet devices (veth), 0 on L3 devices (WireGuard, TUN).
volatile const __u32 l2_len = 0;

// Set at load time: the clock of the buckets. With precise_clock the
// program reads bpf_ktime_get_ns (ns resolution, a helper call a packet);
// otherwise jiffies (bpf_jiffies64, which the verifier inlines into a
// load) times ns_per_jiffy, which userspace measures at load time. Both
// are the kernel's monotonic clock; see ../doc.go.
volatile const __u32 precise_clock = 0;
volatile const __u64 ns_per_jiffy = 0;

// Written by ocsh_clock_probe: one reading of both clocks, for userspace
// to measure ns_per_jiffy.
__u64 probe_jiffies = 0;
__u64 probe_ns = 0;

// Test seam: when non-zero the program uses it instead of
// bpf_ktime_get_ns(). Only tests write it; production never does.
volatile __u64 clock_override = 0;

struct lpm4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// What a prefix leads to. Gateways' addresses are host entries with
// FLAG_CONTROL (and the region of the prefix that covers them, if any):
// testing "both ends are gateways" costs nothing extra on the common path,
// where the destination is no gateway.
struct lpm_val {
	__u32 region; // bucket index, 0 = not CEN traffic
	__u32 flags;
};

#define FLAG_CONTROL 1

// Configuration of one destination region's bucket, written only by
// userspace. A packet may see a rate change half applied (the fields are
// read one by one); that decides at most that one packet.
struct bucket_cfg {
	__u64 rate;    // bits per second; 0 = unlimited (count, never drop)
	__u64 burst;   // credit units (bytes * UNITS_PER_BYTE)
	__u64 queue;   // credit units the bucket may go below zero
	__u64 fill_ns; // time that fills any bucket: (burst+queue+max GSO)/rate, rounded up
	__u32 classid;       // HTB class for bulk packets (skb->priority); 0 = none
	__u32 classid_small; // HTB class for small packets: served first
	__u32 flags;         // CFG_PRESENT: the region is counted (and shaped if rate)
	__u32 _pad;
	// The region id this bucket index belongs to, NUL-terminated; set for
	// every index in use, with or without CFG_PRESENT. Only userspace
	// reads it: a restarted agent finds the map through the attached
	// program and learns from it which index is which region.
	char region[64];
};

// Packets up to this many IP bytes (and not GSO) go to the region's
// small-packet class: pings, BFD-like probes, DNS, interactive keystrokes
// do not wait behind a bulk backlog. Both classes drain from the region's
// one rate and one bucket.
#define SMALL_PACKET 256

#define CFG_PRESENT 1

// Running state of one bucket. Lock-free: every change of tokens is an
// atomic add, and the right to credit a span of time goes to the CPU whose
// compare-and-swap moves last over it, so each nanosecond is credited once
// however many CPUs charge the bucket at once. (A bpf_spin_lock would save
// and restore interrupts around every charge; the atomics need neither.)
// Userspace writes it only when a bucket starts shaping: tokens = burst,
// last = 0.
struct bucket_state {
	__s64 tokens; // credit units, between -queue and burst
	__u64 last;   // clock of the last refill, ns; 0 = not yet used
};

struct counters {
	__u64 pass_bytes;
	__u64 pass_packets;
	__u64 drop_bytes;
	__u64 drop_packets;
};

// A prefix trie of one address family: the longest prefix that holds the
// destination leads to its region.
#define PREFIX_TRIE(key_type)                           \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);    \
		__uint(map_flags, BPF_F_NO_PREALLOC);   \
		__uint(max_entries, MAX_PREFIXES);      \
		__type(key, key_type);                  \
		__type(value, struct lpm_val);          \
	}

// An array indexed by bucket index, one value per region.
#define REGION_ARRAY(map_type, value_type)              \
	struct {                                        \
		__uint(type, map_type);                 \
		__uint(max_entries, MAX_REGIONS);       \
		__type(key, __u32);                     \
		__type(value, value_type);              \
	}

PREFIX_TRIE(struct lpm4_key) ocsh_prefix4 SEC(".maps");
PREFIX_TRIE(struct lpm6_key) ocsh_prefix6 SEC(".maps");
REGION_ARRAY(BPF_MAP_TYPE_ARRAY, struct bucket_cfg) ocsh_cfg SEC(".maps");
REGION_ARRAY(BPF_MAP_TYPE_ARRAY, struct bucket_state) ocsh_state SEC(".maps");
REGION_ARRAY(BPF_MAP_TYPE_PERCPU_ARRAY, struct counters) ocsh_stats SEC(".maps");

struct pkt {
	__u32 region;
	__u32 hdr_len; // IP header + transport header length (for GSO)
	__u8 control;  // exempt from shaping: a gateway's own traffic
};

// transport adds the header length of TCP/UDP at l4 (what every segment
// of a GSO packet repeats). Ports decide nothing: a tenant's traffic is
// charged whatever its protocol or port.
static __always_inline void transport(void *l4, void *end, __u8 proto, struct pkt *p)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return;
		p->hdr_len += th->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		if (l4 + sizeof(struct udphdr) > end)
			return;
		p->hdr_len += sizeof(struct udphdr);
	}
}

// gateway_origin reports whether this host sent the packet rather than
// forwarded it: at egress a forwarded packet carries the device it arrived
// on. Only a packet the gateway itself sends may be its control traffic;
// a tenant that puts a gateway's address in its source is charged.
static __always_inline int gateway_origin(struct __sk_buff *skb)
{
	return skb->ingress_ifindex == 0;
}

// headers makes the first n bytes of the packet directly readable.
static __always_inline int headers(struct __sk_buff *skb, __u32 n)
{
	if ((void *)(long)skb->data + n <= (void *)(long)skb->data_end)
		return 0;
	if (skb->len < n)
		n = skb->len;
	return bpf_skb_pull_data(skb, n);
}

// lookup_region looks the destination up in the trie map through key,
// which holds the destination's full-length prefix, and fills p->region.
// Where the destination is a gateway's address and this host sent the
// packet, it looks the source up too (v6 says how to put the source of ip
// into key) and marks the packet as control traffic when the source is a
// gateway's as well. It returns -1 for no region (not CEN traffic), 0 when
// lpm_only asks for the region alone, and 1 to go on.
static __always_inline int lookup_region(void *map, void *key, int v6, void *ip,
					 struct __sk_buff *skb, struct pkt *p, int lpm_only)
{
	struct lpm_val *v = bpf_map_lookup_elem(map, key);

	if (!v || !v->region)
		return -1;
	p->region = v->region;
	if (lpm_only)
		return 0;
	if ((v->flags & FLAG_CONTROL) && gateway_origin(skb)) {
		if (v6)
			__builtin_memcpy(((struct lpm6_key *)key)->addr, &((struct ipv6hdr *)ip)->saddr, 16);
		else
			((struct lpm4_key *)key)->addr = ((struct iphdr *)ip)->saddr;
		v = bpf_map_lookup_elem(map, key);
		if (v && (v->flags & FLAG_CONTROL))
			p->control = 1;
	}
	return 1;
}

// classify4 classifies the IPv4 packet whose header starts at ip.
static __always_inline int classify4(struct iphdr *ip, void *end, struct __sk_buff *skb,
				     struct pkt *p, int lpm_only)
{
	struct lpm4_key k;
	__u32 ihl;
	int ret;

	if ((void *)(ip + 1) > end)
		return -1;
	k.prefixlen = 32;
	k.addr = ip->daddr;
	ret = lookup_region(&ocsh_prefix4, &k, 0, ip, skb, p, lpm_only);
	if (ret <= 0)
		return ret;
	ihl = ip->ihl * 4;
	p->hdr_len = ihl;
	// Only the first fragment carries the transport header.
	if (!(ip->frag_off & bpf_htons(0x1fff)) && ihl >= sizeof(*ip) && ihl <= 60)
		transport((void *)ip + ihl, end, ip->protocol, p);
	return 0;
}

// classify6 classifies the IPv6 packet whose header starts at ip.
static __always_inline int classify6(struct ipv6hdr *ip, void *end, struct __sk_buff *skb,
				     struct pkt *p, int lpm_only)
{
	struct lpm6_key k;
	int ret;

	if ((void *)(ip + 1) > end)
		return -1;
	k.prefixlen = 128;
	__builtin_memcpy(k.addr, &ip->daddr, 16);
	ret = lookup_region(&ocsh_prefix6, &k, 1, ip, skb, p, lpm_only);
	if (ret <= 0)
		return ret;
	p->hdr_len = sizeof(*ip);
	// Extension headers are not walked: a GSO packet's segments are
	// then charged the base header only.
	transport(ip + 1, end, ip->nexthdr, p);
	return 0;
}

// classify fills p; it returns -1 when the packet is not IP or matches no
// prefix (not CEN traffic).
static __always_inline int classify(struct __sk_buff *skb, struct pkt *p, int lpm_only)
{
	void *data, *end;
	__u32 off = l2_len & 0xff;
	__u8 ver;

	// Room for IPv6 + TCP, or what there is of a shorter packet.
	if (headers(skb, off + sizeof(struct ipv6hdr) + sizeof(struct tcphdr)) < 0)
		return -1;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + off + 1 > end)
		return -1;
	if (off) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > end)
			return -1;
		if (eth->h_proto == bpf_htons(ETH_P_IP))
			ver = 4;
		else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
			ver = 6;
		else
			return -1;
	} else {
		ver = *(__u8 *)data >> 4;
	}
	if (ver == 4)
		return classify4(data + off, end, skb, p, lpm_only);
	if (ver == 6)
		return classify6(data + off, end, skb, p, lpm_only);
	return -1;
}

// wire_bytes is what the packet costs: its IP bytes on the wire, counting
// the headers of every segment of a GSO packet, as a qdisc does.
static __always_inline __u64 wire_bytes(struct __sk_buff *skb, struct pkt *p)
{
	__u64 n = skb->len - l2_len;
	__u32 segs = skb->gso_segs;

	if (segs > 1 && segs < 65536)
		n += (__u64)(segs - 1) * p->hdr_len;
	return n;
}

static __always_inline void count(__u32 region, __u64 bytes, int pass)
{
	struct counters *c = bpf_map_lookup_elem(&ocsh_stats, &region);
	if (!c)
		return;
	if (pass) {
		c->pass_bytes += bytes;
		c->pass_packets++;
	} else {
		c->drop_bytes += bytes;
		c->drop_packets++;
	}
}

// admit charges cost credit units to the region's bucket and reports
// whether the packet may pass. A packet passes when the bucket, refilled up
// to now, stays at or above -queue after paying; a refused packet costs
// nothing (its charge is refunded). A packet larger than burst+queue could
// never pass that test (only a GSO packet can be that large), so it passes
// when the bucket is full and leaves it in debt: the long-run rate stays
// exact.
static __always_inline int admit(__u32 region, struct bucket_cfg *cfg, __u64 cost)
{
	struct bucket_state *s = bpf_map_lookup_elem(&ocsh_state, &region);
	__u64 now = clock_override, last;
	__s64 burst = cfg->burst, queue = cfg->queue, c = cost, old;

	if (!s)
		return 1;
	if (!now)
		now = precise_clock ? bpf_ktime_get_ns() : bpf_jiffies64() * ns_per_jiffy;

	last = *(volatile __u64 *)&s->last;
	if (!last) {
		// First packet: the bucket is full (set so by userspace).
		__sync_val_compare_and_swap(&s->last, 0, now);
	} else if (now > last && __sync_val_compare_and_swap(&s->last, last, now) == last) {
		__u64 elapsed = now - last;
		__s64 add, t;

		// Past fill_ns any bucket is full; below it the product fits
		// in 64 bits. No division on the packet path.
		__s64 room = burst - *(volatile __s64 *)&s->tokens;

		if (elapsed >= cfg->fill_ns)
			add = cfg->fill_ns * cfg->rate;
		else
			add = elapsed * cfg->rate;
		// Add no more than the room seen now, so other CPUs never see
		// the bucket far above burst even for an instant.
		if (add > room)
			add = room > 0 ? room : 0;
		t = __sync_fetch_and_add(&s->tokens, add) + add;
		if (t > burst)
			// Take back exactly the excess over burst as of our add;
			// adds commute, so charges in between stay counted.
			__sync_fetch_and_add(&s->tokens, burst - t);
	} else if (last > now + 1000000000ULL) {
		// The clock went back by more than jitter: the state holds a
		// time of the other clock (Options.PreciseClock changed across
		// a restart). Restart the time base.
		__sync_val_compare_and_swap(&s->last, last, now);
	}
	old = __sync_fetch_and_add(&s->tokens, -c);
	if (old - c >= -queue)
		return 1;
	if (c > burst + queue && old >= burst)
		return 1;
	__sync_fetch_and_add(&s->tokens, c);
	return 0;
}

// HTB_MAJOR is the major of the shaper's HTB qdisc (htbMajor in htb.go).
#define HTB_MAJOR 0xce0

// forget_class clears an HTB class of ours that a packet the program does
// not shape carries in skb->priority from elsewhere (an encapsulation that
// keeps an inner packet's priority on the outer one, a local socket's
// SO_PRIORITY): only the program picks a region's class; anything else
// takes HTB's unshaped direct queue.
static __always_inline void forget_class(struct __sk_buff *skb)
{
	if ((skb->priority >> 16) == HTB_MAJOR)
		skb->priority = 0;
}

SEC("tc")
int ocsh_shape(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct bucket_cfg *cfg;
	__u64 bytes;

	if (classify(skb, &p, 0) < 0) {
		forget_class(skb);
		return ACT_NEXT; // not CEN traffic: untouched
	}
	cfg = bpf_map_lookup_elem(&ocsh_cfg, &p.region);
	if (!cfg || !(cfg->flags & CFG_PRESENT)) {
		forget_class(skb);
		return ACT_NEXT; // same region, or a region without a bucket
	}
	bytes = wire_bytes(skb, &p);
	if (p.control || !cfg->rate) {
		forget_class(skb);
		count(p.region, bytes, 1);
		return ACT_NEXT;
	}
	if (!admit(p.region, cfg, bytes * UNITS_PER_BYTE)) {
		count(p.region, bytes, 0);
		return ACT_DROP;
	}
	count(p.region, bytes, 1);
	if (cfg->classid)
		skb->priority = (bytes <= SMALL_PACKET && skb->gso_segs <= 1) ? cfg->classid_small : cfg->classid;
	return ACT_NEXT;
}

// ocsh_lpm_only does the same parsing and prefix lookup and nothing else:
// the baseline of the per-packet cost benchmark.
SEC("tc")
int ocsh_lpm_only(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (classify(skb, &p, 1) < 0)
		return ACT_NEXT;
	return p.region ? ACT_NEXT : ACT_DROP;
}

// ocsh_clock_probe samples both clocks; never attached.
SEC("tc")
int ocsh_clock_probe(struct __sk_buff *skb)
{
	probe_jiffies = bpf_jiffies64();
	probe_ns = bpf_ktime_get_ns();
	return ACT_NEXT;
}
