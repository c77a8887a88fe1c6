package authdns

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TSIGKey is a shared secret that signs transfers and NOTIFY (TSIG, RFC
// 8945). BIND writes one with "tsig-keygen NAME", Knot with "keymgr -t
// NAME"; LoadKeyFile reads BIND's form.
type TSIGKey struct {
	// Name is the key's name, the same on both sides, e.g. "mgmt-xfr.".
	Name string
	// Algorithm is "hmac-sha256" (the default), "hmac-sha384",
	// "hmac-sha512" or "hmac-sha224". HMAC-MD5 and HMAC-SHA1 are refused.
	Algorithm string
	// Secret is the key, base64 as in the key file.
	Secret string
}

// tsigFudge is the clock skew allowed between signer and verifier (RFC
// 8945 §10 recommends 300 s).
const tsigFudge = 300

// minSecretBytes is the shortest secret accepted: RFC 8945 §6 asks for a
// key at least as long as the HMAC's output; 16 bytes is far below it and
// refused as a mistake (a password typed by hand, a truncated file).
const minSecretBytes = 16

// hmacs are the HMACs accepted, by their wire names (a key file's name
// with the final dot).
var hmacs = map[string]func() hash.Hash{
	dns.HmacSHA224: sha256.New224,
	dns.HmacSHA256: sha256.New,
	dns.HmacSHA384: sha512.New384,
	dns.HmacSHA512: sha512.New,
}

// canonical checks one key and returns it canonical: the name fully
// qualified and lower case, the algorithm in its wire form.
func (k TSIGKey) canonical() (TSIGKey, error) {
	name, err := canonicalName(k.Name)
	if err != nil {
		return k, fmt.Errorf("tsig key: %w", err)
	}
	alg := strings.TrimSuffix(strings.ToLower(k.Algorithm), ".")
	if alg == "" {
		alg = "hmac-sha256"
	}
	wire := alg + "."
	if _, ok := hmacs[wire]; !ok {
		return k, fmt.Errorf("tsig key %s: algorithm %q: want hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha224", name, k.Algorithm)
	}
	raw, err := base64.StdEncoding.DecodeString(k.Secret)
	switch {
	case k.Secret == "":
		return k, fmt.Errorf("tsig key %s: empty secret", name)
	case err != nil:
		return k, fmt.Errorf("tsig key %s: secret is not base64: %w", name, err)
	case len(raw) < minSecretBytes:
		return k, fmt.Errorf("tsig key %s: secret of %d bytes: want at least %d (tsig-keygen makes 32)", name, len(raw), minSecretBytes)
	}
	return TSIGKey{Name: name, Algorithm: wire, Secret: k.Secret}, nil
}

// keyRing verifies and signs with the configured keys. It is the
// dns.TsigProvider of the server: unlike dns.TsigSecret, it holds each
// key to its algorithm, so a secret is never used with another HMAC.
type keyRing struct {
	keys  map[string]TSIGKey // by canonical name
	first TSIGKey            // signs NOTIFY
}

func newKeyRing(keys []TSIGKey) *keyRing {
	if len(keys) == 0 {
		return nil
	}
	r := &keyRing{keys: make(map[string]TSIGKey, len(keys)), first: keys[0]}
	for _, k := range keys {
		r.keys[k.Name] = k
	}
	return r
}

func (r *keyRing) key(t *dns.TSIG) (TSIGKey, error) {
	k, ok := r.keys[strings.ToLower(t.Hdr.Name)]
	if !ok {
		return k, dns.ErrSecret
	}
	if !strings.EqualFold(t.Algorithm, k.Algorithm) {
		return k, dns.ErrKeyAlg
	}
	return k, nil
}

// Generate and Verify make keyRing a dns.TsigProvider.
func (r *keyRing) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	k, err := r.key(t)
	if err != nil {
		return nil, err
	}
	return tsigSecret(k.Secret).Generate(msg, t)
}

func (r *keyRing) Verify(msg []byte, t *dns.TSIG) error {
	k, err := r.key(t)
	if err != nil {
		return err
	}
	return tsigSecret(k.Secret).Verify(msg, t)
}

// tsigSecret computes the HMAC of one key: the MAC of a TSIG record is
// the HMAC, with the record's algorithm, of the bytes dns.TsigGenerate and
// dns.TsigVerify hand a provider (RFC 8945 §4.3).
type tsigSecret string

func (s tsigSecret) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	h, ok := hmacs[strings.ToLower(t.Algorithm)]
	if !ok {
		return nil, dns.ErrKeyAlg
	}
	raw, err := base64.StdEncoding.DecodeString(string(s))
	if err != nil {
		return nil, err
	}
	mac := hmac.New(h, raw)
	mac.Write(msg)
	return mac.Sum(nil), nil
}

func (s tsigSecret) Verify(msg []byte, t *dns.TSIG) error {
	want, err := s.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return dns.ErrSig
	}
	return nil
}

// tsigError is the TSIG error of a failed verification (RFC 8945 §5.2):
// BADKEY for a key we do not have or an algorithm it is not for, BADTIME
// for a time outside the fudge, BADSIG otherwise.
func tsigError(err error) (code uint16, reason string) {
	switch {
	case errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg):
		return dns.RcodeBadKey, "badkey"
	case errors.Is(err, dns.ErrTime):
		return dns.RcodeBadTime, "badtime"
	}
	return dns.RcodeBadSig, "badsig"
}

var (
	// keyBlock is one "key NAME { ... };" of a BIND key file.
	keyBlock = regexp.MustCompile(`(?s)key\s+("[^"]*"|[^\s{]+)\s*\{(.*?)\}\s*;`)
	keyAlg   = regexp.MustCompile(`(?s)algorithm\s+("[^"]*"|[^\s;]+)\s*;`)
	keySec   = regexp.MustCompile(`(?s)secret\s+("[^"]*"|[^\s;]+)\s*;`)
	comments = regexp.MustCompile(`(?m)(#|//).*$|(?s)/\*.*?\*/`)
)

// ParseKeys reads TSIG keys in BIND's key file syntax, as tsig-keygen
// writes it (comments allowed):
//
//	key "mgmt-xfr" {
//		algorithm hmac-sha256;
//		secret "base64...";
//	};
func ParseKeys(data []byte) ([]TSIGKey, error) {
	text := comments.ReplaceAllString(string(data), "")
	var keys []TSIGKey
	seen := map[string]bool{}
	for _, m := range keyBlock.FindAllStringSubmatch(text, -1) {
		k := TSIGKey{Name: strings.Trim(m[1], `"`)}
		if a := keyAlg.FindStringSubmatch(m[2]); a != nil {
			k.Algorithm = strings.Trim(a[1], `"`)
		}
		if s := keySec.FindStringSubmatch(m[2]); s != nil {
			k.Secret = strings.Trim(s[1], `"`)
		}
		ck, err := k.canonical()
		if err != nil {
			return nil, err
		}
		if seen[ck.Name] {
			return nil, fmt.Errorf("tsig key %s: defined twice", ck.Name)
		}
		seen[ck.Name] = true
		keys = append(keys, ck)
	}
	if len(keys) == 0 {
		return nil, errors.New(`no key found; want BIND's syntax: key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`)
	}
	return keys, nil
}

// LoadKeyFile reads the TSIG keys of a key file (ParseKeys). The file
// must not be readable by others than its owner and group: a key others
// can read lets them take the zones and forge NOTIFY.
func LoadKeyFile(path string) ([]TSIGKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tsig key file: %w", err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("tsig key file %s: mode %#o lets anyone read the secret; chmod 640 (or 600) it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tsig key file: %w", err)
	}
	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("tsig key file %s: %w", path, err)
	}
	return keys, nil
}

// sign puts a TSIG record for k on m, to be filled in when m is packed
// (dns.Msg.SetTsig).
func sign(m *dns.Msg, k TSIGKey, now time.Time) {
	m.SetTsig(k.Name, k.Algorithm, tsigFudge, now.Unix())
}
