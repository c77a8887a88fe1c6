package tincgen

import (
	"bytes"
	"strings"
	"testing"
)

func TestGenerateKey(t *testing.T) {
	priv, pub, err := GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(priv, []byte("-----BEGIN RSA PRIVATE KEY-----\n")) || !bytes.HasPrefix(pub, []byte("-----BEGIN RSA PUBLIC KEY-----\n")) {
		t.Fatalf("wrong PEM types:\n%s\n%s", priv[:40], pub)
	}
	again, err := PublicKeyOf(priv)
	if err != nil || !bytes.Equal(again, pub) {
		t.Fatalf("PublicKeyOf = %s, %v; want %s", again, err, pub)
	}
	// The public key goes into a host file and parses back.
	h, err := ParseHost(RenderHost(Host{PublicKey: string(pub)}))
	if err != nil || h.PublicKey != string(pub) {
		t.Fatalf("host file round trip: %v", err)
	}
	if _, _, err := GenerateKey(nil, 512); err == nil || !strings.Contains(err.Error(), "512 bits; want 2048 to 16384") {
		t.Errorf("512 bits: %v", err)
	}
	if _, err := PublicKeyOf(pub); err == nil {
		t.Error("PublicKeyOf(public key): want error")
	}
}
