package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A Term is one piece of a rule, a match or a statement: its nft syntax
// and the expressions that implement it, built together so the text we
// print, compare and store can never disagree with what the kernel runs.
// The expressions are the ones nft itself generates for the same text
// (checked with "nft --debug=netlink").
type Term struct {
	text  string
	needs proto // what must be matched before this term
	gives proto // what this term establishes for the terms after it
	exprs []expr.Any
}

// proto is a protocol dependency between terms, as nft tracks them: "ip
// saddr" reads the IPv4 header, so it needs "meta nfproto ipv4" first in an
// inet table; "tcp flags" needs "meta l4proto tcp".
type proto int

const (
	protoNone proto = iota
	protoIPv4
	protoIPv6
	protoTCP
)

// NewRule joins terms into a rule. A term's dependency that no earlier
// term provides is inserted before it, as nft does, and like nft the
// inserted match is not spelt out in the text (so "tcp flags ..." alone
// also matches "meta l4proto tcp").
func NewRule(terms ...Term) Rule {
	var (
		text  []string
		exprs []expr.Any
		have  = map[proto]bool{protoNone: true}
	)
	for _, t := range terms {
		if !have[t.needs] {
			dep := dependency(t.needs)
			exprs = append(exprs, dep.exprs...)
			have[dep.gives] = true
		}
		if t.text != "" {
			text = append(text, t.text)
		}
		exprs = append(exprs, t.exprs...)
		have[t.gives] = true
	}
	return Rule{Text: strings.Join(text, " "), Exprs: exprs}
}

func dependency(p proto) Term {
	switch p {
	case protoIPv4:
		return NFProtoIPv4()
	case protoIPv6:
		return nfproto(unix.NFPROTO_IPV6, "ipv6", protoIPv6)
	case protoTCP:
		return Term{text: "meta l4proto tcp", gives: protoTCP, exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}}
	}
	panic(fmt.Sprintf("nft: no dependency term for %d", p))
}

// NFProtoIPv4 matches IPv4 packets: "meta nfproto ipv4". Our egress rules
// start with it so that they never judge IPv6, which carries the
// management network.
func NFProtoIPv4() Term { return nfproto(unix.NFPROTO_IPV4, "ipv4", protoIPv4) }

func nfproto(v byte, name string, gives proto) Term {
	return Term{text: "meta nfproto " + name, gives: gives, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{v}},
	}}
}

// ifnamsiz is the kernel's IFNAMSIZ: an interface name and its NUL.
const ifnamsiz = 16

// ValidIfname checks that name can be a Linux interface name (and so a
// path element under /proc/sys/net): 1 to 15 bytes, not "." or "..", no
// '/', ':', NUL or white space.
func ValidIfname(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) >= ifnamsiz:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, ifnamsiz-1)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\r\x00"):
		return fmt.Errorf("interface name %q contains '/', ':', NUL or white space", name)
	}
	return nil
}

// IIFName matches packets that came in on interface name: iifname "name".
// The name must pass ValidIfname (NewRule's callers validate their input
// first; a bad name here is a bug, and panics).
func IIFName(name string) Term { return ifname(expr.MetaKeyIIFNAME, "iifname", name, expr.CmpOpEq) }

// OIFName matches packets that leave by interface name: oifname "name".
func OIFName(name string) Term { return ifname(expr.MetaKeyOIFNAME, "oifname", name, expr.CmpOpEq) }

// OIFNameNot matches packets that leave by another interface than name:
// oifname != "name".
func OIFNameNot(name string) Term {
	return ifname(expr.MetaKeyOIFNAME, "oifname", name, expr.CmpOpNeq)
}

func ifname(key expr.MetaKey, word, name string, op expr.CmpOp) Term {
	if err := ValidIfname(name); err != nil {
		panic("nft: " + err.Error())
	}
	// The kernel compares the whole IFNAMSIZ buffer, NUL-padded, as nft
	// does for a name without a wildcard: an exact match.
	data := make([]byte, ifnamsiz)
	copy(data, name)
	return Term{text: fmt.Sprintf("%s %s%q", word, neq(op), name), exprs: []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}}
}

func neq(op expr.CmpOp) string {
	if op == expr.CmpOpNeq {
		return "!= "
	}
	return ""
}

// SAddr matches source addresses inside p: ip saddr p (ip6 saddr for an
// IPv6 prefix). p must be valid (a bug otherwise: it panics).
func SAddr(p netip.Prefix) Term { return addr(p, "saddr", expr.CmpOpEq) }

// SAddrNot matches source addresses outside p: ip saddr != p.
func SAddrNot(p netip.Prefix) Term { return addr(p, "saddr", expr.CmpOpNeq) }

func addr(p netip.Prefix, field string, op expr.CmpOp) Term {
	if !p.IsValid() {
		panic(fmt.Sprintf("nft: invalid prefix %v", p))
	}
	p = p.Masked()
	a := p.Addr().Unmap()
	word, offset, needs := "ip", uint32(12), protoIPv4 // struct iphdr: saddr at 12
	if a.Is6() {
		word, offset, needs = "ip6", 8, protoIPv6 // struct ipv6hdr: saddr at 8
	}
	// Load only the bytes the prefix covers and mask the last partial
	// byte, as nft does: /16 loads 2 bytes, /25 loads 4 and masks.
	n := (p.Bits() + 7) / 8
	full := a.AsSlice()
	exprs := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(n)}}
	if p.Bits()%8 != 0 {
		mask := make([]byte, n)
		for i := range mask {
			bits := min(8, p.Bits()-8*i)
			mask[i] = byte(0xff << (8 - bits))
		}
		exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask, Xor: make([]byte, n)})
	}
	exprs = append(exprs, &expr.Cmp{Op: op, Register: 1, Data: full[:n]})
	text := p.String()
	if p.IsSingleIP() {
		text = a.String()
	}
	return Term{text: fmt.Sprintf("%s %s %s%s", word, field, neq(op), text), needs: needs, exprs: exprs}
}

// TCP flag bits (RFC 9293).
const (
	tcpSYN = 0x02
	tcpRST = 0x04
)

// TCPSYN matches TCP segments with SYN set and RST clear, which covers SYN
// and SYN-ACK: tcp flags syn / syn,rst.
func TCPSYN() Term {
	return Term{text: "tcp flags syn / syn,rst", needs: protoTCP, gives: protoTCP, exprs: []expr.Any{
		// TCP header: flags at byte 13.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpRST}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpSYN}},
	}}
}

// ClampMSSToRouteMTU lowers the TCP MSS option of the segment to what the
// MTU of its route allows (route MTU less 40 bytes of IPv4 and TCP
// headers): tcp option maxseg size set rt mtu. It never raises it. Use it
// on forwarded SYNs: the tinc interface's MTU is 1400, and a peer that
// believes its path takes 1500 would otherwise depend on ICMP
// "fragmentation needed" getting back to it.
func ClampMSSToRouteMTU() Term {
	return Term{text: "tcp option maxseg size set rt mtu", needs: protoTCP, gives: protoTCP, exprs: []expr.Any{
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		// TCP option kind 2 (maximum segment size): the 2-byte value at
		// offset 2 of the option.
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}}
}

// CtEstablishedRelated matches packets of connections conntrack has seen
// both ways, and packets related to them (ICMP errors): ct state
// established,related.
func CtEstablishedRelated() Term {
	return Term{text: "ct state established,related", exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}}
}

// CounterName counts the packet in the table's named counter name (which
// the Table must list): counter name "name".
func CounterName(name string) Term {
	return Term{text: fmt.Sprintf("counter name %q", name), exprs: []expr.Any{
		&expr.Objref{Type: int(unix.NFT_OBJECT_COUNTER), Name: name},
	}}
}

// Accept ends the chain's judgement of the packet with accept. In a base
// chain of our own that only means "our table has no objection": the
// machine's other tables still judge it.
func Accept() Term {
	return Term{text: "accept", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
}

// Drop drops the packet.
func Drop() Term { return Term{text: "drop", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}} }

// Jump continues in the regular chain chain, and comes back unless that
// chain decides.
func Jump(chain string) Term {
	return Term{text: "jump " + chain, exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}}
}

// SNAT rewrites the IPv4 source address to a: snat ip to a.
func SNAT(a netip.Addr) Term {
	a = a.Unmap()
	if !a.Is4() {
		panic(fmt.Sprintf("nft: snat to %v: not an IPv4 address", a))
	}
	b := a.As4()
	return Term{text: "snat ip to " + a.String(), needs: protoIPv4, exprs: []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}}
}

// Masquerade rewrites the IPv4 source address to the primary address of
// the interface the packet leaves by: masquerade.
func Masquerade() Term {
	return Term{text: "masquerade", needs: protoIPv4, exprs: []expr.Any{&expr.Masq{}}}
}
