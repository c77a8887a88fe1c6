package tincgen

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testKey returns the fixed RSA public key in testdata (made once with
// "openssl genrsa 2048 | openssl rsa -RSAPublicKey_out").
func testKey(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// prefixEq compares netip values by value; cmp cannot see their fields.
var prefixEq = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func subnet(s string) Subnet { return NewSubnet(netip.MustParsePrefix(s)) }

func goldenHosts(t testing.TB) map[string]Host {
	key := testKey(t)
	return map[string]Host{
		"node.host": {
			Subnets:   []Subnet{subnet("fdf5:5351:1dfd:1f::/64")},
			PublicKey: key,
		},
		"gateway.host": {
			Addresses: []Address{{"gw.example.net", 655}, {"10.241.0.254", 655}},
			Subnets:   []Subnet{subnet("fdf5:5351:1dfd::2/128")},
			PublicKey: key,
		},
		"host128.host": {
			Subnets:   []Subnet{subnet("fdf5:5351:1dfd:0:0:ff:0:1a/128")},
			PublicKey: key,
		},
		"gateway-egress.host": {
			Addresses: []Address{{"10.241.0.254", 656}},
			Subnets: []Subnet{
				subnet("fdf5:5351:1dfd::1/128"),
				{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Weight: 10},
				subnet("100.64.0.31/32"),
			},
			Options:   []Option{{"IndirectData", "no"}},
			PublicKey: key,
		},
	}
}

func TestRenderHostGolden(t *testing.T) {
	for name, h := range goldenHosts(t) {
		t.Run(name, func(t *testing.T) {
			got := RenderHost(h)
			golden(t, name, got)
			back, err := ParseHost(got)
			if err != nil {
				t.Fatalf("ParseHost(RenderHost(h)): %v", err)
			}
			if diff := cmp.Diff(h, back, prefixEq); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderHostExact(t *testing.T) {
	key := testKey(t)
	h := Host{
		Addresses: []Address{{"gw.example.net", 655}, {"10.241.0.254", 655}},
		Subnets:   []Subnet{subnet("fdf5:5351:1dfd::2/128")},
		PublicKey: key,
	}
	want := "Address = gw.example.net 655\nAddress = 10.241.0.254 655\nSubnet = fdf5:5351:1dfd:0:0:0:0:2\n\n" + key
	if diff := cmp.Diff(want, string(RenderHost(h))); diff != "" {
		t.Errorf("RenderHost mismatch (-want +got):\n%s", diff)
	}
	// A key without its final newline still ends in exactly one.
	h.PublicKey = strings.TrimSuffix(key, "\n")
	if diff := cmp.Diff(want, string(RenderHost(h))); diff != "" {
		t.Errorf("RenderHost without final newline mismatch (-want +got):\n%s", diff)
	}
}

func TestSubnetString(t *testing.T) {
	tests := []struct {
		in   Subnet
		want string
	}{
		{subnet("fdf5:5351:1dfd:1f::/64"), "fdf5:5351:1dfd:1f:0:0:0:0/64"},
		{subnet("fdf5:5351:1dfd::2/128"), "fdf5:5351:1dfd:0:0:0:0:2"},
		{subnet("FDF5:0DB8::1/128"), "fdf5:db8:0:0:0:0:0:1"},
		{subnet("fdf5:5351:1dfd:1f::2/48"), "fdf5:5351:1dfd:0:0:0:0:0/48"}, // masked
		{subnet("0.0.0.0/0"), "0.0.0.0/0"},
		{subnet("100.64.0.31/32"), "100.64.0.31"},
		{subnet("10.1.2.3/8"), "10.0.0.0/8"},
		{Subnet{netip.MustParsePrefix("0.0.0.0/0"), 10}, "0.0.0.0/0#10"},
		{Subnet{netip.MustParsePrefix("::/0"), 0}, "0:0:0:0:0:0:0:0/0#0"},
		{subnet("::ffff:1.2.3.4/128"), "0:0:0:0:0:ffff:102:304"},
		{Subnet{}, "invalid Subnet"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.in.Prefix, got, tt.want)
		}
	}
}

func TestParseHost(t *testing.T) {
	key := testKey(t)
	keyCRLF := strings.ReplaceAll(key, "\n", "\r\n")
	tests := []struct {
		name    string
		in      string
		want    Host
		wantErr string
	}{
		{
			name: "controller node",
			in:   "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + key,
			want: Host{Subnets: []Subnet{subnet("fdf5:5351:1dfd:1f::/64")}, PublicKey: key},
		},
		{
			name: "crlf",
			in:   "Address = 10.241.0.254 655\r\nSubnet = fdf5:5351:1dfd:1f:0:0:0:0/64\r\n\r\n" + keyCRLF,
			want: Host{
				Addresses: []Address{{"10.241.0.254", 655}},
				Subnets:   []Subnet{subnet("fdf5:5351:1dfd:1f::/64")},
				PublicKey: key,
			},
		},
		{
			name: "no spaces, no blank line, compressed ipv6, /128",
			in:   "Subnet=fdf5:5351:1dfd:1f::2/128\n" + key,
			want: Host{Subnets: []Subnet{subnet("fdf5:5351:1dfd:1f::2/128")}, PublicKey: key},
		},
		{
			name: "whitespace separator, tabs, lower-case keys, upper-case hex",
			in:   "subnet\tFDF5:5351:1DFD:1F::2\naddress   gw.example.net\n" + key,
			want: Host{
				Addresses: []Address{{"gw.example.net", 655}},
				Subnets:   []Subnet{subnet("fdf5:5351:1dfd:1f::2/128")},
				PublicKey: key,
			},
		},
		{
			name: "separate port line applies to addresses without port",
			in:   "Address = 192.0.2.1\nPort = 656\nAddress = 192.0.2.2 700\nAddress = gw\n",
			want: Host{Addresses: []Address{{"192.0.2.1", 656}, {"192.0.2.2", 700}, {"gw", 656}}},
		},
		{
			name: "comments and blank lines anywhere, key first",
			in:   "\n# made by VCT\n\n" + key + "\n# trailing\nSubnet = 10.0.0.0/8#5\n\n",
			want: Host{Subnets: []Subnet{{netip.MustParsePrefix("10.0.0.0/8"), 5}}, PublicKey: key},
		},
		{
			name: "weights and egress /32",
			in:   "Subnet = 0.0.0.0/0#10\nSubnet = 100.64.0.31\nSubnet = 100.64.0.32/32\n",
			want: Host{Subnets: []Subnet{
				{netip.MustParsePrefix("0.0.0.0/0"), 10},
				subnet("100.64.0.31/32"),
				subnet("100.64.0.32/32"),
			}},
		},
		{
			name: "other keys kept as options",
			in:   "IndirectData = yes\nCOMPRESSION=9\nPMTU 1400\nEd25519PublicKey = abcdEF+/x\n",
			want: Host{Options: []Option{
				{"IndirectData", "yes"}, {"COMPRESSION", "9"}, {"PMTU", "1400"}, {"Ed25519PublicKey", "abcdEF+/x"},
			}},
		},
		{name: "empty", in: "", want: Host{}},
		{name: "bad subnet", in: "Address = gw 655\n\nSubnet = fdf5::zz/64\n", wantErr: "line 3: invalid subnet"},
		{name: "host bits", in: "Subnet = 10.0.0.1/8\n", wantErr: "line 1: invalid subnet \"10.0.0.1/8\": host bits set"},
		{name: "bad prefix len", in: "Subnet = 10.0.0.0/33\n", wantErr: "line 1: invalid subnet"},
		{name: "bad weight", in: "Subnet = 10.0.0.0/8#x\n", wantErr: "line 1: invalid subnet \"10.0.0.0/8#x\": bad weight"},
		{name: "negative weight", in: "Subnet = 10.0.0.0/8#-1\n", wantErr: "bad weight"},
		{name: "zone", in: "Subnet = fe80::1%eth0\n", wantErr: "line 1: invalid subnet"},
		{name: "port zero", in: "Address = gw 0\n", wantErr: "line 1: invalid address \"gw 0\": invalid port \"0\""},
		{name: "port too big", in: "\nPort = 65536\n", wantErr: "line 2: invalid port \"65536\""},
		{name: "port not numeric", in: "Port = tinc\n", wantErr: "line 1: invalid port"},
		{name: "two ports", in: "Port = 655\nPort = 656\n", wantErr: "line 2: second Port"},
		{name: "address with three fields", in: "Address = a 1 2\n", wantErr: "line 1: invalid address"},
		{name: "begin without end", in: "Subnet = 10.0.0.0/8\n-----BEGIN RSA PUBLIC KEY-----\nMIIB\n", wantErr: "line 2: -----BEGIN RSA PUBLIC KEY----- without -----END"},
		{name: "end without begin", in: "-----END RSA PUBLIC KEY-----\n", wantErr: "line 1:"},
		{name: "mismatched end", in: "-----BEGIN RSA PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n", wantErr: "line 3:"},
		{name: "bad base64", in: "-----BEGIN RSA PUBLIC KEY-----\n!!!\n-----END RSA PUBLIC KEY-----\n", wantErr: "line 1: invalid PEM block"},
		{name: "two keys", in: key + key, wantErr: "second public key"},
		{name: "garbage", in: "Subnet = 10.0.0.0/8\n<html>\n", wantErr: "line 2: \"<html>\" is not a \"Key = Value\" line"},
		{name: "lone word", in: "Subnet\n", wantErr: "line 1:"},
		{name: "no value", in: "Subnet =\n", wantErr: "line 1: no value for Subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHost([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseHost error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHost: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, prefixEq); diff != "" {
				t.Errorf("ParseHost mismatch (-want +got):\n%s", diff)
			}
			// What we parse, we render and parse back unchanged.
			back, err := ParseHost(RenderHost(got))
			if err != nil {
				t.Fatalf("ParseHost(RenderHost): %v", err)
			}
			if diff := cmp.Diff(got, back, prefixEq); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseHost(f *testing.F) {
	key := testKey(f)
	for _, h := range goldenHosts(f) {
		f.Add(RenderHost(h))
	}
	f.Add([]byte("Address=gw\r\nPort 656\r\nsubnet = fdf5::2/128\r\n" + key))
	f.Add([]byte("# c\nSubnet = 0.0.0.0/0#10\nSubnet = 100.64.0.31\nPMTU = = 1400\n"))
	f.Add([]byte("Subnet = ::ffff:1.2.3.4\nX = a\rb\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHost(b)
		if err != nil {
			return
		}
		out := RenderHost(h)
		back, err := ParseHost(out)
		if err != nil {
			t.Fatalf("ParseHost(RenderHost(h)) failed: %v\ninput:\n%q\nrendered:\n%q", err, b, out)
		}
		if diff := cmp.Diff(h, back, prefixEq); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s\ninput: %q", diff, b)
		}
		if out2 := RenderHost(back); string(out2) != string(out) {
			t.Fatalf("rendering not stable:\n%q\n%q", out, out2)
		}
	})
}
