package tincgen

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRenderConf(t *testing.T) {
	tests := []struct {
		name string
		in   Conf
		want string
	}{
		{
			name: "server",
			in:   Conf{Name: "server", Port: 655, StrictSubnets: true},
			want: "Name = server\nPort = 655\nStrictSubnets = yes\n",
		},
		{
			name: "node",
			in:   Conf{Name: "node_31", ConnectTo: []string{"server", "server_2"}, Options: []Option{{"Mode", "router"}}},
			want: "Name = node_31\nConnectTo = server\nConnectTo = server_2\nMode = router\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenderConf(tt.in)
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("RenderConf mismatch (-want +got):\n%s", diff)
			}
			back, err := ParseConf(got)
			if err != nil {
				t.Fatalf("ParseConf(RenderConf): %v", err)
			}
			if diff := cmp.Diff(tt.in, back); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConf(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Conf
		wantErr string
	}{
		{
			name: "tolerant syntax",
			in:   "# tinc.conf\r\nname=node_31\r\nconnectto\tserver\r\nSTRICTSUBNETS = No\r\nPort 656\r\nInterface = tap0\r\n",
			want: Conf{Name: "node_31", Port: 656, ConnectTo: []string{"server"}, Options: []Option{{"Interface", "tap0"}}},
		},
		{name: "no name", in: "Port = 655\n", wantErr: "no Name"},
		{name: "bad name", in: "Name = node-31\n", wantErr: "line 1: invalid tinc name"},
		{name: "bad connectto", in: "Name = a\nConnectTo = ../x\n", wantErr: "line 2: invalid tinc name"},
		{name: "bad strict", in: "Name = a\nStrictSubnets = maybe\n", wantErr: "line 2: StrictSubnets must be yes or no"},
		{name: "bad port", in: "Name = a\nPort = 0\n", wantErr: "line 2: invalid port"},
		{name: "two names", in: "Name = a\nName = b\n", wantErr: "line 2: second Name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConf([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseConf error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConf: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseConf mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTincUpDown(t *testing.T) {
	a := netip.MustParseAddr("fdf5:5351:1dfd:1f:0:0:0:2")
	up := "#!/bin/sh\nip link set \"$INTERFACE\" up mtu 1400\nip -6 addr add fdf5:5351:1dfd:1f::2/48 dev \"$INTERFACE\"\n"
	if diff := cmp.Diff(up, string(RenderTincUp(a, 48, 1400))); diff != "" {
		t.Errorf("RenderTincUp mismatch (-want +got):\n%s", diff)
	}
	down := "#!/bin/sh\nip -6 addr del fdf5:5351:1dfd:1f::2/48 dev \"$INTERFACE\"\nip link set \"$INTERFACE\" down\n"
	if diff := cmp.Diff(down, string(RenderTincDown(a, 48))); diff != "" {
		t.Errorf("RenderTincDown mismatch (-want +got):\n%s", diff)
	}
}

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"node_31", true}, {"server", true}, {"Host_1a", true},
		{"", false}, {"../x", false}, {"node-1", false}, {"node_1.orig", false}, {".mgmtnet-1", false}, {"nöde", false},
	} {
		if got := ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestOwnedName(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"node_31", true}, {"host_7", true}, {"server", true}, {"server_2", true},
		{"servers", false}, {"README", false}, {"node_1.orig", false}, {"gateway", false}, {".mgmtnet-12", false},
	} {
		if got := OwnedName(tt.in); got != tt.want {
			t.Errorf("OwnedName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
