package nodeboot

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/confine-project/mgmtnet/vpn"
)

func TestWantEgress(t *testing.T) {
	offering := []Gateway{{Name: "server"}, {Name: "server_3", Egress: true}}
	plain := []Gateway{{Name: "server"}}
	tests := []struct {
		mode EgressMode
		gws  []Gateway
		want bool
		why  string
	}{
		{EgressAuto, offering, true, "gateway server_3 offers egress"},
		{EgressAuto, plain, false, "no gateway offers egress"},
		{EgressOn, plain, true, "on in"},
		{EgressOff, offering, false, "off in"},
	}
	for _, tt := range tests {
		cfg := Config{File: "/etc/config/confine", Egress: tt.mode}
		got, why := wantEgress(cfg, tt.gws)
		if got != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("%s with %v: %v (%s), want %v (%s)", tt.mode, tt.gws, got, why, tt.want, tt.why)
		}
	}
}

// TestDesiredEgress: with egress, the node announces its egress /32, names its
// tinc interface, shortens the ping timers and restores the egress default
// route from tinc-up; without, the files are the plain ones.
func TestDesiredEgress(t *testing.T) {
	cfg := node31(t)
	gws := []Gateway{{Name: "server", Host: []byte("Address = 10.241.1.1\nSubnet = 0.0.0.0/0#10\n"), Egress: true}}
	pub := readTestdata(t, "node.pub")
	plain, err := DesiredFiles(cfg, pub, gws, DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := DesiredFiles(cfg, pub, gws, DesiredOptions{Egress: true, EgressUp: egressUp()})
	if err != nil {
		t.Fatal(err)
	}
	file := func(d Desired, name string) string {
		f, ok := d.Lookup(name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		return string(f.Data)
	}
	for _, c := range []struct{ name, want string }{
		{"hosts/node_31", "Subnet = 100.64.0.31\n"},
		{"tinc.conf", "MaxTimeout = 20\nInterface = confine\nPingInterval = 10\nPingTimeout = 2\n"},
		{"tinc-up", `ip -4 route replace default dev "$INTERFACE" table 7465 proto 74` + "\n"},
	} {
		if got := file(d, c.name); !strings.Contains(got, c.want) {
			t.Errorf("%s with egress lacks %q:\n%s", c.name, c.want, got)
		}
		if got := file(plain, c.name); strings.Contains(got, c.want) {
			t.Errorf("%s without egress has %q:\n%s", c.name, c.want, got)
		}
	}
	e, err := nodeEgress(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := vpn.NewNodeEgress("confine", netip.MustParseAddr("100.64.0.31"),
		[]netip.Prefix{netip.MustParsePrefix("192.168.157.0/25")}, vpn.DefaultCommunity())
	if !e.Equal(want) {
		t.Errorf("node egress %+v, want %+v", e, want)
	}
	if off, _ := nodeEgress(cfg, false); !off.IsZero() {
		t.Errorf("egress off: %+v, want the zero value", off)
	}
}
