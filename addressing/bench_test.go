package addressing

import (
	"net/netip"
	"testing"
)

func BenchmarkNodeAddr(b *testing.B) {
	p := Default()
	for i := 0; b.Loop(); i++ {
		if _, err := p.NodeAddr(uint16(i%MaxNode + 1)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReverse(b *testing.B) {
	p := Default()
	addrs := []netip.Addr{
		netip.MustParseAddr("fdf5:5351:1dfd:1f::2"),
		netip.MustParseAddr("fdf5:5351:1dfd::2"),
		netip.MustParseAddr("fdf5:5351:1dfd:1f:1001::5"),
		netip.MustParseAddr("fdf5:5351:1dfd:0:2000::7"),
	}
	for i := 0; b.Loop(); i++ {
		if _, err := p.Reverse(addrs[i%len(addrs)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPTRName(b *testing.B) {
	a := netip.MustParseAddr("fdf5:5351:1dfd:1f:1001::5")
	for b.Loop() {
		_ = PTRName(a)
	}
}
