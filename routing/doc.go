// Package routing is the BGP speaker inside every opencen gateway, built on
// embedded GoBGP v4. The agent hands it a plain-data Desired (who to peer
// with, what to originate, what each peer may announce) through the
// idempotent Speaker.Set, and gets back coalesced batches of LearnedRoute
// for the dataplane and the shaper.
//
// # ASN scheme: one instance ASN, iBGP between gateways
//
// Every gateway of an instance speaks BGP in the one instance ASN
// (instance.asn, default 64512). Gateways peer with each other over iBGP on
// their tunnel addresses, so BGP rides inside WireGuard; VBR routers peer
// over eBGP and see the instance ASN, as SPEC section 3 promises.
//
// Why iBGP in one ASN rather than a private ASN per region with eBGP:
//
//   - The on-prem router sees one neighbour AS whatever gateway it talks
//     to, and AS_PATHs it receives are [instance, origin...]: no private
//     per-region ASNs leak to customers, nothing needs remove-private-as.
//   - iBGP never re-advertises an iBGP-learned route to another iBGP peer,
//     so with a full mesh there is no transit through a third region and no
//     loop, without AS_PATH tricks; every route is learned straight from the
//     gateway that originates it (or holds the VBR), and the tunnel address
//     of that session is the next hop (what next-hop-self would give; the
//     speaker derives next hops from the session, so a VBR-learned route
//     whose BGP next hop is the on-prem router still points at the gateway
//     holding that VBR).
//   - Twin gateways of one region announce the same VPC CIDR with equal
//     attributes, so GoBGP's multipath returns both and traffic spreads
//     over them; when one dies (BFD), its paths go and the other stays.
//   - Origin is not inferred from AS_PATH but carried in two large
//     communities, INSTANCE_ASN:1:hash(region) and INSTANCE_ASN:2:hash(network)
//     (FNV-32a of the names; Validate rejects a collision). Every gateway
//     reads the same config and maps them back to names.
//
// A consequence customers should know: two VBRs with the same on-prem ASN
// in two regions do not accept each other's prefixes (AS_PATH loop), as
// with any provider; use distinct ASNs or allowas-in on the routers.
//
// # Full mesh, and when to switch to route reflection
//
// The default, and the only mode built, is a full mesh: n gateways
// hold n-1 sessions each. That matches the WireGuard mesh, which is full
// anyway, and is cheap into the low tens of gateways (each session costs a
// keepalive every 3s and one BFD packet every 100ms each way). Of two
// gateways, only the one with the lower tunnel address dials; the other
// listens (passive), so the two never open colliding connections.
//
// Switch to route reflection when the mesh stops being cheap: past roughly
// 30 gateways (over 400 sessions), or when the data plane itself becomes
// hub-and-spoke. The design for it: two reflectors in different regions,
// every other gateway peering only with them; entitlement then has to be
// checked against the ORIGINATOR_ID (the originating gateway's router id)
// instead of the session, and next hops taken from the BGP NEXT_HOP (the
// originator's tunnel address, set by next-hop-self on each originating
// gateway) instead of from the session. Both are local changes: the
// import table's session match (rules.go) and state.route.
//
// # Import policy
//
// Every session is default-deny on import (RFC 8212). A prefix is learned
// only by the import table (rules.go, importRules): a gateway peer's exact
// VPC CIDRs, and from a gateway of this region its handoff addresses (host
// routes inside its VPC CIDRs); never a default route, a prefix overlapping
// a tunnel address, an underlay endpoint, a connected subnet or an
// instance CIDR (a VBR offering that is a route conflict, a gateway
// offering it is a hijack); then what a gateway's VBR entitlements or a
// VBR's accept list admit (each entry with its more-specifics). Both forms
// of the policy are generated from that one table: GoBGP statements, which
// enforce it (a refused prefix is never in the Loc-RIB, so it is neither
// installed nor passed on), and the Go classifier (filter.go), which
// evaluates the pre-policy update stream to record, count and log the
// reason of each refusal. Learned VBR prefixes have their large
// communities replaced with the VBR's origin tags, so an on-prem router
// cannot forge another network's origin. Ahead of the table, what a VBR's
// router sends is refused unless its AS path starts with the router's AS
// (the first-AS check of RFC 4271 section 6.3, reason first-as): an eBGP
// speaker puts its own AS first.
//
// # Export policy
//
// VBR routers get every tagged CEN route: VPC CIDRs of every region and the
// prefixes of every other VBR; nothing learned from the same router is sent
// back. Anything untagged is not exported to VBRs. Handoff addresses go to
// the gateways of this region only. The export policy is short and written
// by hand beside the import compiler (policy.go, exportStatements).
//
// max_prefixes is counted on what the router sends (ahead of policy), by
// the speaker from GoBGP's pre-policy update events rather than by GoBGP's
// own prefix limit, which recounts the whole Adj-RIB-In on every UPDATE and
// so makes a large burst quadratic (received.go). A warning is logged past 80%;
// past the limit the session is shut down administratively (Cease 6/2 with
// the shutdown communication "maximum number of prefixes exceeded"; state
// "max-prefix-exceeded", an error log), its routes are withdrawn at once,
// and it stays down until its max_prefixes_restart, a `cenctl peers reset`,
// or a change of that session's config (maxprefix.go).
//
// # Failure detection and restart
//
// Gateway sessions run BFD at 100ms x 3 by default, so a dead peer is
// declared down 300-400ms after its last packet: its BGP session is reset
// and its routes are withdrawn. Between gateways the speaker runs its own
// BFD (bfd.go: RFC 5880 packets on UDP 4784 over the tunnel, one goroutine
// and one ticker for all peers), because GoBGP's, with a goroutine and a
// ticker per peer, wakes an idle agent for every packet. VBR sessions with
// bfd: true run GoBGP's BFD (UDP 3784, RFC 5881) toward the on-premises
// router. Session changes reach Options.OnSessions as GoBGP reports them:
// nothing polls GoBGP. Graceful restart (RFC 4724) is on for every
// session: Close(true) stops without a NOTIFICATION, peers keep our routes
// for GracefulRestartTime, and the agent keeps its kernel routes; the new
// speaker (Options.Restarting) re-announces, and the first batch marked
// Synced tells the agent it may sweep kernel routes that did not come back.
//
// # Batching
//
// GoBGP queues watch events without bound and never waits for the watcher,
// so slow consumers cannot starve keepalives. The speaker folds best-path
// events into its own table and hands OnRoutes at most one batch per
// Coalesce interval (and never two at once), however fast updates arrive
// (TestBurstIsCoalesced). Speaker.Set with an unchanged Desired (the agent
// calls it on every reconcile) recomputes nothing; a changed one
// recomputes every learned route, since origins may be named anew.
//
// # Address families
//
// Every session carries IPv4 and IPv6 unicast (MP-BGP), whatever the
// family of its own addresses. Gateway sessions run between the IPv4
// tunnel addresses; a gateway routes a learned prefix by the session it
// came from, so the next hop attribute is only for the protocol (IPv6
// paths carry the IPv4-mapped tunnel address). A VBR session may run over
// IPv4 or IPv6: toward the router, the family the session does not run in
// gets the gateway's own address of that family on the router's link as
// next hop (VBRSession.LinkAddresses, export policy); from the router, a
// prefix is installed via the next hop it names when that lies on the
// same link, else via the session's address where the families match.
// The import table names the families in one place (allPrefixes in
// rules.go): each accept list filters each family by its own entries, and
// max_prefixes counts each family on its own. The router id and gateway
// session addresses are IPv4.
//
// # Files
//
//   - speaker.go: the Speaker's life (Start, Set, Close) and its GoBGP
//     server; options.go its Options; peers.go the sessions; origins.go
//     what it announces.
//   - rules.go: the import table; filter.go its Go classifier; policy.go
//     its GoBGP form and the export policy; tags.go the origin tags.
//   - state.go: GoBGP's event stream; learned.go the learned routes and
//     their batches; received.go rejection records and max_prefixes;
//     sessions.go session states and OnSessions; status.go and metrics.go
//     what cenctl and Prometheus read.
//   - bfd.go: BFD between gateways; redact.go: passwords out of logs.
//
// # Measurements
//
// make bench-routing measures the speaker: BenchmarkLearn100k, the time
// 100,000 prefixes from one session take to reach OnRoutes beside the time
// plain GoBGP takes to hold them, the heap and RSS per learned route, and
// the convergence of one more prefix; BenchmarkBIRD100k, the same with
// BIRD 2 announcing across namespaces, beside `ip -batch` installing the
// routes; BenchmarkFailover, the time from a hung twin gateway to the
// batch without it; and test/'s BenchmarkPipeline100k, the whole pipeline
// between two real cend processes. make bench-agent's BenchmarkIdleAgent
// measures the idle agent's CPU, which gateway BFD keeps low. The figures
// and their targets are in the generated benchmark report, BENCHMARKS.md.
package routing
