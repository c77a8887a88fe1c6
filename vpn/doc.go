// Package vpn is a node's and a gateway's side of the tinc VPN in the
// kernel: the tun link tincd created (address, MTU, up) and a node's
// egress routing (NodeEgress: policy routes and rules, and the node's
// nftables table), each as desired state with an idempotent Apply.
//
// It never starts or signals tincd (that is package tinc) and never parses
// or renders tinc files (that is tincgen).
package vpn
