// Package lab builds network-namespace topologies for natwall's integration
// tests and for `natwall demo`: clients, an appliance namespace where natwall
// runs, and servers, wired together with veth pairs and Linux bridges.
//
// Two shapes model the two ways a cloud VM can sit in the path:
//
//	TwoNIC:  client_i eth0 ─┐                                  ┌─ eth0 server_i
//	                        ├─ br0 (ns lan) ─ in0 [appliance] out0 ─ br0 (ns wan) ─┤
//
//	OneNIC:  client_i eth0 ─┐                                  ┌─ eth0 server_i
//	                        └──────── br0 (ns fabric) ─────────┘
//	                                       │
//	                               eth0 [appliance]  (inside and outside addresses)
//
// Clients route everything to the appliance's inside address (the cloud's UDR),
// servers route everything to its outside address. The addresses are fixed and
// exported (see InsideSubnetV4 and friends), so natwall configurations in tests
// can name them.
//
// Every veth end has GRO on, and the fabric ends of the appliance's NICs carry
// an XDP_PASS program: without them a veth drops or strands the frames natwall
// sends with XDP_REDIRECT and XDP_TX (see wire.create for the details).
//
// Nothing is created in the namespace of the calling process: every link lives
// in a namespace the lab created, so the host's interfaces are never touched.
// Namespaces are bind-mounted under /run/netns as nwlab-<pid>-<n>-<role>, which
// makes them visible to `ip netns` and lets Sweep recognise the leftovers of a
// test binary that was killed.
//
// The core API does not depend on package testing; NewT and NewNetNST wrap it
// for tests.
package lab
