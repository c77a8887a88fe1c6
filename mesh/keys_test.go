package mesh

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pemOf renders a public key as PKCS#1 PEM, or SPKI when spki.
func pemOf(t testing.TB, k *rsa.PublicKey, spki bool) string {
	t.Helper()
	if spki {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k)}))
}

// modulus returns an odd number of exactly bits bits: enough to stand for
// a key whose size alone is wrong (nothing here factors it).
func modulus(bits int) *big.Int {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(12345))
	return n.SetBit(n, 0, 1)
}

// TestBuildRejectsWeakKeys replays the weak keys a registry could give: too
// few bits, a useless exponent, a modulus of megabits. Each member is
// rejected by name with the reason; the others still apply.
func TestBuildRejectsWeakKeys(t *testing.T) {
	// crypto/rsa no longer makes 512-bit keys; a registry still can.
	small := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: modulus(512), E: 65537}}
	good, _ := keys(t)
	block, _ := pem.Decode([]byte(good))
	k, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	withE := func(e int) *rsa.PublicKey { return &rsa.PublicKey{N: k.N, E: e} }
	huge := pemOf(t, &rsa.PublicKey{N: modulus(3_200_000), E: 65537}, false)
	tests := []struct {
		name, key, want string
	}{
		{"512 bits", pemOf(t, &small.PublicKey, false), "node 31 (node_31): RSA key of 512 bits; want 2048 to 16384"},
		{"512 bits, SPKI", pemOf(t, &small.PublicKey, true), "node 31 (node_31): RSA key of 512 bits; want 2048 to 16384"},
		{"16385 bits", pemOf(t, &rsa.PublicKey{N: modulus(16385), E: 65537}, false), "node 31 (node_31): RSA key of 16385 bits; want 2048 to 16384"},
		{"exponent 1", pemOf(t, withE(1), false), "node 31 (node_31): RSA key with public exponent 1; want an odd exponent of at least 65537"},
		{"exponent 3", pemOf(t, withE(3), true), "node 31 (node_31): RSA key with public exponent 3; want an odd exponent of at least 65537"},
		{"even exponent", pemOf(t, withE(65538), false), "node 31 (node_31): RSA key with public exponent 65538; want an odd exponent of at least 65537"},
		{"3.2 Mbit modulus", huge, "node 31 (node_31): RSA key of about "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := node(t, 31)
			bad.Tinc.PubKey = tt.key
			start := time.Now()
			res := Build(plan, []Candidate{node(t, 2), bad, server(t, 2)}, BuildOptions{})
			took := time.Since(start)
			if len(res.Rejected) != 1 || !strings.HasPrefix(res.Rejected[0].String(), tt.want) {
				t.Fatalf("rejected %q, want one starting %q", res.Rejected, tt.want)
			}
			var names []string
			for m := range res.Testbed.All() {
				names = append(names, m.TincName)
			}
			if diff := cmp.Diff([]string{"node_2", "server"}, names); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if tt.name == "3.2 Mbit modulus" {
				t.Logf("a %d-byte key rejected in %v: %s", len(huge), took, res.Rejected[0])
				if took > 500*time.Millisecond {
					t.Errorf("rejecting a 3.2 Mbit key took %v; want it cheap", took)
				}
			}
		})
	}
	// The bounds themselves pass.
	for _, bits := range []int{2048, 16384} {
		if _, err := NormalizePublicKey(pemOf(t, &rsa.PublicKey{N: modulus(bits), E: 65537}, false)); err != nil {
			t.Errorf("%d bits: %v", bits, err)
		}
	}
	if _, err := NormalizePublicKey(pemOf(t, &rsa.PublicKey{N: modulus(16384), E: 1<<31 - 1}, true)); err != nil {
		t.Errorf("16384 bits, SPKI, a 31-bit exponent: %v", err)
	}
}
