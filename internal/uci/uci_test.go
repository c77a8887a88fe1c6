package uci

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const firmware = `
# /etc/config/confine as the node firmware writes it
config node node
    option id '001f'                      # hex, 4 digits
    option priv_ipv4_prefix24 '192.168.157'
    option mac_prefix16 '06:ab'
    option local_ifname 'eth0'
    option tinc_gateway 'server'
    option state 'prepared'
config registry registry
    option base_uri 'https://[fdf5:5351:1dfd::2]/api/'
    option cert '/etc/confine/registry-server.crt'
config testbed testbed
    option mgmt_ipv6_prefix48 'fdf5:5351:1dfd'
`

func TestParseFirmware(t *testing.T) {
	f, err := Parse("confine", []byte(firmware))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Sections) != 3 {
		t.Fatalf("%d sections", len(f.Sections))
	}
	n := f.Section("node")
	want := map[string]string{"id": "001f", "priv_ipv4_prefix24": "192.168.157", "mac_prefix16": "06:ab",
		"local_ifname": "eth0", "tinc_gateway": "server", "state": "prepared"}
	if diff := cmp.Diff(want, n.Options); diff != "" {
		t.Errorf("node options (-want +got):\n%s", diff)
	}
	if n.Line != 3 {
		t.Errorf("node section line %d, want 3", n.Line)
	}
	if v, _ := f.Section("registry").Get("base_uri"); v != "https://[fdf5:5351:1dfd::2]/api/" {
		t.Errorf("base_uri = %q", v)
	}
	if diff := cmp.Diff([]string{"id", "priv_ipv4_prefix24", "mac_prefix16", "local_ifname", "tinc_gateway", "state"}, n.OptionNames()); diff != "" {
		t.Errorf("order: %s", diff)
	}
}

func TestParseSyntax(t *testing.T) {
	tests := []struct {
		name string
		in   string
		opts map[string]string
		list map[string][]string
	}{
		{"bare", "config a\n option x value", map[string]string{"x": "value"}, nil},
		{"double quotes and escapes", `config a` + "\n" + `option x "a \"b\" \\ c"`, map[string]string{"x": `a "b" \ c`}, nil},
		{"single quotes literal", "config a\noption x 'a \\n b'", map[string]string{"x": `a \n b`}, nil},
		{"concatenation", "config a\noption x 'ab'\"cd\"ef", map[string]string{"x": "abcdef"}, nil},
		{"hash in quotes", "config a\noption x '#notacomment' # comment", map[string]string{"x": "#notacomment"}, nil},
		{"empty value", "config a\noption x ''", map[string]string{"x": ""}, nil},
		{"tabs and CRLF", "config\ta\r\n\toption\tx\t'1'\r\n", map[string]string{"x": "1"}, nil},
		{"list", "config a\nlist g 'one'\nlist g two\n", map[string]string{}, map[string][]string{"g": {"one", "two"}}},
		{"later option wins", "config a\noption x 1\noption x 2", map[string]string{"x": "2"}, nil},
		{"continuation", "config a\noption x 'long' \\\n", map[string]string{"x": "long"}, nil},
	}
	for _, tt := range tests {
		f, err := Parse("t", []byte(tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		s := f.Sections[0]
		if diff := cmp.Diff(tt.opts, s.Options); diff != "" {
			t.Errorf("%s options (-want +got):\n%s", tt.name, diff)
		}
		if tt.list == nil {
			tt.list = map[string][]string{}
		}
		if diff := cmp.Diff(tt.list, s.Lists); diff != "" {
			t.Errorf("%s lists (-want +got):\n%s", tt.name, diff)
		}
	}
	f, _ := Parse("t", []byte("package confine\nconfig node\noption id 1\nconfig node second\n"))
	if f.Package != "confine" || f.Section("node").Options["id"] != "1" || f.Section("second").Name != "second" {
		t.Errorf("package/anonymous/named lookup: %+v", f)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"option x 1", "f:1: option outside a config section"},
		{"config a\noption x 'unterminated", "f:2: unterminated single quote"},
		{"config a\n\noption x \"open", "f:3: unterminated double quote"},
		{"config a\noption x", "f:2: option takes a name and one value, got 1 words"},
		{"config a\noption x 1 2", "f:2: option takes a name and one value, got 3 words"},
		{"config", "f:1: config takes a type"},
		{"config a b c", "f:1: config takes a type"},
		{"config a/b", `f:1: invalid section type "a/b"`},
		{"config a\noption 'x y' 1", `f:2: invalid option name "x y"`},
		{"config a\nfoo bar", `f:2: unknown keyword "foo"`},
		{"config a\noption x 1\nlist x 2", "f:3: list x is already an option"},
		{"config a\noption x '\x01'", "f:2: control character"},
	}
	for _, tt := range tests {
		_, err := Parse("f", []byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(firmware)
	f.Add("config a\noption x 'a'\"b\"\nlist y 1 # c\n")
	f.Fuzz(func(t *testing.T, s string) {
		file, err := Parse("fuzz", []byte(s))
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		for _, sec := range file.Sections {
			if !validIdent(sec.Type) || (sec.Name != "" && !validIdent(sec.Name)) {
				t.Fatalf("invalid section %q %q accepted", sec.Type, sec.Name)
			}
			for k := range sec.Options {
				if !validIdent(k) {
					t.Fatalf("invalid option name %q accepted", k)
				}
			}
		}
	})
}
