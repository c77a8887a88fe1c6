package vtb

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
)

// The pretend Internet (Spec.Egress), documentation addresses only and
// only inside the lab's namespaces:
//   - namespace "inet" is the Internet: bridge br-wan at 192.0.2.1/24, the
//     gateways' WAN link (gateway with octet o is 192.0.2.<o+1>), and the
//     Internet host InetHost on 198.51.100.80 (its loopback), an HTTP
//     server that says whom it sees (GET /) and serves bytes
//     (GET /bytes/N); the namespace's kernel answers pings;
//   - the gateways route their default to 192.0.2.1, nothing else does;
//   - inet also routes the egress prefix and the slivers' private range
//     to the main server, as an attacker next door would, so that the
//     tests can try connections from the WAN side;
//   - inet also holds what a real WAN can have behind it and slivers must
//     not reach (attack targets, not documentation addresses, but only
//     inside the lab): a metadata-style service on MetadataAddr and hosts
//     on private addresses (PrivateHostAddrs), the same HTTP server as the
//     Internet host; the gateways route them to the Internet's router.
const (
	// InetHostAddr is the pretend Internet host.
	InetHostAddr = "198.51.100.80"
	// MetadataAddr is the pretend WAN's metadata service (as clouds have
	// one on 169.254.169.254).
	MetadataAddr = "169.254.169.254"
	inetRouter   = "192.0.2.1"
)

// PrivateHostAddrs are the pretend WAN's hosts on RFC 1918 addresses.
var PrivateHostAddrs = []string{"10.99.0.80", "192.168.99.80"}

// wanTargets are the addresses of inet's HTTP server.
func wanTargets() []string { return append([]string{InetHostAddr, MetadataAddr}, PrivateHostAddrs...) }

// InetURL is the Internet host's URL for path.
func InetURL(path string) string { return "http://" + InetHostAddr + path }

func (tb *Testbed) buildInternet(ctx context.Context) error {
	var err error
	if tb.Inet, err = tb.Lab.AddNetns("inet"); err != nil {
		return err
	}
	for _, cmd := range [][]string{
		{"ip", "link", "add", "br-wan", "type", "bridge"},
		{"ip", "link", "set", "br-wan", "up"},
		{"ip", "addr", "add", inetRouter + "/24", "dev", "br-wan"},
	} {
		if err := tb.Inet.MustRun(cmd...); err != nil {
			return err
		}
	}
	for _, a := range wanTargets() {
		if err := tb.Inet.MustRun("ip", "addr", "add", a+"/32", "dev", "lo"); err != nil {
			return err
		}
	}
	tb.Lab.Logf("pretend Internet: host %s, gateways' WAN 192.0.2.0/24, behind the WAN %s and %v", InetHostAddr, MetadataAddr, PrivateHostAddrs)
	return nil
}

// attachWAN links a gateway to the pretend Internet: wan0 at
// 192.0.2.<octet+1>/24, default route via the Internet's router.
func (tb *Testbed) attachWAN(srv *Server) error {
	srv.WAN = netip.AddrFrom4([4]byte{192, 0, 2, byte(srv.Octet + 1)})
	if err := attachAs(srv.NS, "wan0", fmt.Sprintf("w%d", srv.ID), tb.Inet, "br-wan", srv.WAN.String()+"/24"); err != nil {
		return err
	}
	// No sysctl here: the gateway daemon switches on IPv4 forwarding for
	// the two interfaces egress needs, and the tests rely on it.
	if err := srv.NS.MustRun("ip", "route", "add", "default", "via", inetRouter, "dev", "wan0"); err != nil {
		return err
	}
	// The WAN side's special-purpose hosts, explicitly: the default
	// route would do, but a gateway's own routes must not be what keeps
	// slivers from them.
	for _, a := range append([]string{MetadataAddr}, PrivateHostAddrs...) {
		if err := srv.NS.MustRun("ip", "route", "add", a+"/32", "via", inetRouter, "dev", "wan0"); err != nil {
			return err
		}
	}
	if srv.ID == addressing.MainServerID {
		for _, dst := range []string{"100.64.0.0/10", "192.168.0.0/16"} {
			if err := tb.Inet.MustRun("ip", "route", "add", dst, "via", srv.WAN.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// startInetHost builds and starts the Internet host's HTTP server.
func (tb *Testbed) startInetHost(ctx context.Context) error {
	bin := filepath.Join(tb.Lab.Dir, "inethost")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/confine-project/mgmtnet/test/vtb/inethost")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build inethost: %w: %s", err, out)
	}
	var listen []string
	for _, a := range wanTargets() {
		listen = append(listen, a+":80")
	}
	p, err := tb.Lab.Start(tb.Inet, "inethost", bin, "-listen", strings.Join(listen, ","))
	if err != nil {
		return err
	}
	tb.InetHost = p
	return WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		for _, a := range wanTargets() {
			if _, err := tb.Inet.Run(ctx, "curl", "-sf", "-o", "/dev/null", "http://"+a+"/"); err != nil {
				return err
			}
		}
		return nil
	})
}

// egressYAML is the gateway config's egress section: masquerade to wan0,
// probe the Internet host over TCP. The probe timers are short so that the
// tests see a failover quickly; hold_down is short for the same reason.
func (tb *Testbed) egressYAML() string {
	if !tb.Spec.Egress {
		return ""
	}
	return fmt.Sprintf(`egress:
  enabled: true
  wan: wan0
  probe:
    method: tcp
    targets: ["%s:80"]
    interval: 500ms
    timeout: 400ms
    failures: 2
    hold_down: 3s
`, InetHostAddr)
}

// Fetch fetches url from a namespace with curl and returns the body.
func (n *Netns) Fetch(ctx context.Context, url string, maxTime time.Duration) (string, error) {
	out, err := n.Run(ctx, "curl", "-sS", "--max-time", fmt.Sprintf("%.1f", maxTime.Seconds()), url)
	return strings.TrimSpace(out), err
}
