package tincgen

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"

	"github.com/confine-project/mgmtnet/mesh"
)

// DefaultKeyBits is the RSA key size mgmtnet generates: tinc 1.0's default
// for "tincd -K" is 2048 bits.
const DefaultKeyBits = 2048

// GenerateKey makes an RSA key pair in the formats tinc 1.0 reads:
// the private key as PKCS#1 PEM ("RSA PRIVATE KEY", for rsa_key.priv) and
// the public key as PKCS#1 PEM ("RSA PUBLIC KEY", for the host file).
// random is the entropy source; nil means crypto/rand.
func GenerateKey(random io.Reader, bits int) (priv, pub []byte, err error) {
	if random == nil {
		random = rand.Reader
	}
	if bits < mesh.MinRSABits || bits > mesh.MaxRSABits {
		return nil, nil, fmt.Errorf("generate rsa key: %d bits; want %d to %d (what mesh.NormalizePublicKey accepts)", bits, mesh.MinRSABits, mesh.MaxRSABits)
	}
	k, err := rsa.GenerateKey(random, bits)
	if err != nil {
		return nil, nil, fmt.Errorf("generate rsa key: %w", err)
	}
	priv = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	pub = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
	return priv, pub, nil
}

// PublicKeyOf returns the PKCS#1 PEM public key of a private key file's
// content (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY").
func PublicKeyOf(privPEM []byte) ([]byte, error) {
	block, _ := pem.Decode(privPEM)
	if block == nil {
		return nil, fmt.Errorf("private key: not PEM")
	}
	var k *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		var err error
		if k, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
	case "PRIVATE KEY":
		any, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		var ok bool
		if k, ok = any.(*rsa.PrivateKey); !ok {
			return nil, fmt.Errorf("private key: a %T, but tinc 1.0 needs RSA", any)
		}
	default:
		return nil, fmt.Errorf("private key: PEM type %q; want RSA PRIVATE KEY", block.Type)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)}), nil
}

// decodePublicKey decodes a PEM RSA public key in either form tinc 1.0
// reads from a host file: PKCS#1 "RSA PUBLIC KEY" (PEM_read_RSAPublicKey,
// what tincd -K and ssh-keygen -e -m PEM write) or X.509 SPKI "PUBLIC KEY"
// (PEM_read_RSA_PUBKEY, tinc's fallback, what the CONFINE controller
// ships). Unlike mesh.NormalizePublicKey it sets no bounds on the key: it
// compares keys already on the machine, it does not admit new ones.
func decodePublicKey(s string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, fmt.Errorf("public key: not PEM")
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		return k, nil
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key: a %T, but tinc 1.0 needs RSA", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("public key: PEM type %q; want RSA PUBLIC KEY or PUBLIC KEY", block.Type)
}
