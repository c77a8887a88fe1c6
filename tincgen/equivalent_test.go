package tincgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// spkiOf returns the X.509 SPKI form ("PUBLIC KEY") of a PKCS#1 PEM public
// key, as the CONFINE controller writes it.
func spkiOf(t testing.TB, pkcs1 string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(pkcs1))
	k, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestEquivalentHosts(t *testing.T) {
	key := testKey(t)
	spki := spkiOf(t, key)
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&other.PublicKey)}))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))
	// ours is the file node-boot renders for node 31.
	ours := "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + key
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{"same bytes", ours, ours, true},
		{"controller image: SPKI key", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + spki, true},
		{"firmware shell: zero-padded word, no blank line", ours, "Subnet = fdf5:5351:1dfd:001f:0:0:0:0/64\n" + key, true},
		{"compressed, upper case, CRLF, comment, key first", ours,
			"# node 31\r\n" + strings.ReplaceAll(spki, "\n", "\r\n") + "\r\nsubnet=FDF5:5351:1DFD:1F::/64\r\n", true},
		{"subnets in another order, one repeated", "Subnet = 10.0.0.0/8\nSubnet = 192.0.2.0/24\n" + key,
			"Subnet = 192.0.2.0/24\nSubnet = 10.0.0.0/8\nSubnet = 192.0.2.0/24\n\n" + key, true},
		{"egress /32 added", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\nSubnet = 100.64.0.31\n\n" + key, false},
		{"another subnet", ours, "Subnet = fdf5:5351:1dfd:20:0:0:0:0/64\n\n" + key, false},
		{"weight differs", "Subnet = 10.0.0.0/8#5\n", "Subnet = 10.0.0.0/8#6\n", false},
		{"weight written or not", "Subnet = 10.0.0.0/8#10\n", "Subnet = 10.0.0.0/8\n", false},
		{"equal weights", "Subnet = 10.0.0.0/8#5\n", "Subnet=10.0.0.0/8 # 5\n", true},
		{"another key", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + otherKey, false},
		{"no key in one", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n", false},
		{"no key in either", "Subnet = 10.0.0.0/8\n", "Subnet = 10.0.0.0/8\n\n", true},
		{"not an RSA key", "Subnet = 10.0.0.0/8\n" + ecKey, "Subnet = 10.0.0.0/8\n" + ecKey, false},
		{"a Port line", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\nPort = 656\n\n" + key, false},
		{"the same Port line, keys in another case", "Port = 656\n" + key, "port   656\n" + key, true},
		{"addresses in another order", "Address = 192.0.2.1 655\nAddress = 192.0.2.2 655\n", "Address = 192.0.2.2 655\nAddress = 192.0.2.1 655\n", false},
		{"address with spaces collapsed", "Address = 192.0.2.1 655\n", "Address=192.0.2.1\t 655\n", true},
		{"address port written or from the default", "Address = 192.0.2.1 655\n", "Address = 192.0.2.1\n", false},
		{"another option", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\nIndirectData = yes\n\n" + key, false},
		{"does not parse", ours, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n<html>\n" + key, false},
		{"does not parse, not even to itself", "Subnet = nope\n", "Subnet = nope\n", false},
		{"key does not decode", "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n", "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n", false},
		{"empty files", "", "\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EquivalentHosts([]byte(tt.a), []byte(tt.b)); got != tt.want {
				t.Errorf("EquivalentHosts(a, b) = %v, want %v\na:\n%s\nb:\n%s", got, tt.want, tt.a, tt.b)
			}
			if got := EquivalentHosts([]byte(tt.b), []byte(tt.a)); got != tt.want {
				t.Errorf("EquivalentHosts(b, a) = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzEquivalentHosts: the relation is symmetric, a file is equivalent to
// itself exactly when its meaning is known, and to what RenderHost makes
// of it when it has no Port line (which ParseHost folds away).
func FuzzEquivalentHosts(f *testing.F) {
	key := testKey(f)
	spki := spkiOf(f, key)
	ref := []byte("Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + key)
	f.Add([]byte("Subnet = fdf5:5351:1dfd:001f:0:0:0:0/64\n" + spki))
	f.Add([]byte("Subnet = 10.0.0.0/8#5\nPort = 656\nAddress = gw\n"))
	f.Add([]byte("# c\r\nsubnet fdf5:5351:1dfd:1f::/64\r\n" + key))
	f.Fuzz(func(t *testing.T, b []byte) {
		if EquivalentHosts(b, ref) != EquivalentHosts(ref, b) {
			t.Fatalf("not symmetric with the reference: %q", b)
		}
		_, known := meaningOf(b)
		if EquivalentHosts(b, b) != known {
			t.Fatalf("EquivalentHosts(b, b) = %v, meaning known %v: %q", !known, known, b)
		}
		h, err := ParseHost(b)
		if !known || err != nil {
			return
		}
		items, _ := scan(b)
		for _, it := range items {
			if strings.EqualFold(it.key, "Port") || strings.EqualFold(it.key, "Address") {
				return // RenderHost writes the folded ports into the Address lines
			}
		}
		if !EquivalentHosts(b, RenderHost(h)) {
			t.Fatalf("not equivalent to its own rendering:\n%q\n%q", b, RenderHost(h))
		}
	})
}
