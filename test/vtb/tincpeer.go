package vtb

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// TincPeer is a tinc 1.0 meta-protocol client of the lab's own, for attack
// tests: it authenticates as a registered member (protocol 17: ID, METAKEY
// with raw RSA and an AES-128-CFB stream, CHALLENGE and CHAL_REPLY with
// SHA-256, ACK) and then sends whatever request a test wants, as a
// member's modified tincd could. It implements only what the tests need.
type TincPeer struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex // the reader's PONG and a test's requests share the stream
	w    io.Writer
	Name string
	// Lines are the requests the other side sent after ACK.
	Lines chan string
}

// RegisterHostKey is RegisterHost that also returns the host's private key
// and tinc name, for a TincPeer.
func (tb *Testbed) RegisterHostKey(id uint64) (*rsa.PrivateKey, string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", err
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
	name, _ := addressing.TincName(addressing.KindHost, id)
	tb.File.Hosts = append(tb.File.Hosts, registry.FileMember{ID: id, Name: fmt.Sprintf("laptop-%d", id),
		Tinc: &registry.FileTinc{Name: name, PubKey: string(pub)}})
	return k, name, tb.WriteRegistry()
}

// DialTincPeer connects from namespace ns to addr (host:port) and
// authenticates as name with key to the tincd there, whose public key is
// the gateway's. It returns once both sides have sent ACK.
func DialTincPeer(ns *Netns, addr, name string, key *rsa.PrivateKey, srv *Server, timeout time.Duration) (*TincPeer, error) {
	block, _ := pem.Decode(srv.pub)
	if block == nil {
		return nil, fmt.Errorf("tinc peer: %s's public key is not PEM", srv.TincName)
	}
	theirs, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tinc peer: %s's public key: %w", srv.TincName, err)
	}
	var conn net.Conn
	err = ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tinc peer: dial %s: %w", addr, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	p := &TincPeer{conn: conn, r: bufio.NewReader(conn), w: conn, Name: name, Lines: make(chan string, 1024)}
	fail := func(err error) (*TincPeer, error) {
		conn.Close()
		return nil, fmt.Errorf("tinc peer %s: %w", name, err)
	}
	if err := p.send("0 %s 17", name); err != nil {
		return fail(err)
	}
	id, err := p.expect("0 ")
	if err != nil {
		return fail(err)
	}
	if f := strings.Fields(id); len(f) < 3 || f[1] != srv.TincName {
		return fail(fmt.Errorf("ID %q, want %s", id, srv.TincName))
	}
	// Our meta key, encrypted raw with their public key; our stream is
	// AES-128-CFB from now on, keyed by its last bytes.
	klen := theirs.Size()
	out := make([]byte, klen)
	rand.Read(out)
	out[0] &= 0x7f
	enc := new(big.Int).Exp(new(big.Int).SetBytes(out), big.NewInt(int64(theirs.E)), theirs.N).FillBytes(make([]byte, klen))
	if err := p.send("1 421 672 0 0 %s", strings.ToUpper(hex.EncodeToString(enc))); err != nil {
		return fail(err)
	}
	encStream, err := cfb(out, 16, true)
	if err != nil {
		return fail(err)
	}
	p.w = cipher.StreamWriter{S: encStream, W: conn}
	mk, err := p.expect("1 ")
	if err != nil {
		return fail(err)
	}
	f := strings.Fields(mk)
	if len(f) != 6 {
		return fail(fmt.Errorf("METAKEY %q", mk))
	}
	c, err := hex.DecodeString(f[5])
	if err != nil || len(c) != key.Size() {
		return fail(fmt.Errorf("METAKEY key: %d bytes, %v", len(c), err))
	}
	in := new(big.Int).Exp(new(big.Int).SetBytes(c), key.D, key.N).FillBytes(make([]byte, key.Size()))
	keyLen, ok := map[string]int{"421": 16, "425": 24, "429": 32}[f[1]]
	if !ok {
		return fail(fmt.Errorf("METAKEY cipher %s: not AES-CFB", f[1]))
	}
	decStream, err := cfb(in, keyLen, false)
	if err != nil {
		return fail(err)
	}
	p.r = bufio.NewReader(cipher.StreamReader{S: decStream, R: p.r})
	// Our challenge, theirs, our reply, their reply, the ACKs.
	chal := make([]byte, theirs.Size())
	rand.Read(chal)
	if err := p.send("2 %s", strings.ToUpper(hex.EncodeToString(chal))); err != nil {
		return fail(err)
	}
	ch, err := p.expect("2 ")
	if err != nil {
		return fail(err)
	}
	mine, err := hex.DecodeString(strings.TrimPrefix(ch, "2 "))
	if err != nil {
		return fail(fmt.Errorf("CHALLENGE: %w", err))
	}
	sum := sha256.Sum256(mine)
	if err := p.send("3 %s", strings.ToUpper(hex.EncodeToString(sum[:]))); err != nil {
		return fail(err)
	}
	rep, err := p.expect("3 ")
	if err != nil {
		return fail(err)
	}
	want := sha256.Sum256(chal)
	if !strings.EqualFold(strings.TrimPrefix(rep, "3 "), hex.EncodeToString(want[:])) {
		return fail(fmt.Errorf("CHAL_REPLY does not match our challenge"))
	}
	if _, err := p.expect("4 "); err != nil {
		return fail(err)
	}
	if err := p.send("4 655 1 0"); err != nil {
		return fail(err)
	}
	conn.SetDeadline(time.Time{})
	go func() {
		defer close(p.Lines)
		for {
			l, err := p.r.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimRight(l, "\n")
			if strings.HasPrefix(l, "8 ") || l == "8" { // PING: answer PONG
				p.send("9")
			}
			select {
			case p.Lines <- l:
			default:
			}
		}
	}()
	return p, nil
}

// cfb is tinc 1.0's meta stream for a meta key: AES-CFB with a keyLen
// key, the meta key's last bytes, and the 16 before them as the IV.
func cfb(key []byte, keyLen int, encrypt bool) (cipher.Stream, error) {
	n := len(key)
	b, err := aes.NewCipher(key[n-keyLen:])
	if err != nil {
		return nil, err
	}
	iv := key[n-keyLen-16 : n-keyLen]
	if encrypt {
		return cipher.NewCFBEncrypter(b, iv), nil //nolint:staticcheck // tinc 1.0's meta protocol is CFB
	}
	return cipher.NewCFBDecrypter(b, iv), nil //nolint:staticcheck // tinc 1.0's meta protocol is CFB
}

func (p *TincPeer) send(format string, args ...any) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := fmt.Fprintf(p.w, format+"\n", args...)
	return err
}

// expect reads request lines until one starts with prefix.
func (p *TincPeer) expect(prefix string) (string, error) {
	for {
		l, err := p.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("waiting for %q: %w", prefix, err)
		}
		l = strings.TrimRight(l, "\n")
		if strings.HasPrefix(l, prefix) {
			return l, nil
		}
	}
}

// Close closes the meta connection.
func (p *TincPeer) Close() error { return p.conn.Close() }

// ForgeANSKey sends the ANS_KEY a member's modified tincd could send: a
// packet key "from" another member, which tinc 1.0 installs without
// checking that the member is the sender (AES-256-CBC, SHA-256, a 4-byte
// MAC).
func (p *TincPeer) ForgeANSKey(from, to string) error {
	k := make([]byte, 32+16)
	rand.Read(k)
	return p.send("16 %s %s %s 427 672 4 0", from, to, strings.ToUpper(hex.EncodeToString(k)))
}
