package gateway

import (
	"os"
	"strings"
	"testing"
)

// TestDNSFollowsSourceNotFiles: the DNS zone is an applier of the
// snapshot in its own right. A snapshot that validated is served even when
// writing the host files failed (here a directory squats a member's host
// file name), and the host files catch up once the squatter is gone.
func TestDNSFollowsSourceNotFiles(t *testing.T) {
	r := newRig(t, testFile(t, 1))
	r.cfg.DNS = DNSConfig{Enabled: true, Zone: "mgmt.example.", Listen: []string{"127.0.0.1:0"}}
	r.start()
	r.wait(EventSynced)
	// The loop set the server before its first event; poll orders the
	// reads below after the loop's writes.
	r.poll()
	zoneHas := func(name string) bool {
		z := r.d.dns.srv.Zone()
		if z == nil {
			return false
		}
		_, ok := z.Testbed().Lookup(name)
		return ok
	}
	if !zoneHas("node_1") || zoneHas("node_2") {
		t.Fatalf("first zone: node_1 %v, node_2 %v", zoneHas("node_1"), zoneHas("node_2"))
	}
	if err := os.Mkdir(r.hostFile("node_2"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.srv.SetFile(testFile(t, 2))
	s := r.poll()
	if s.LastError == "" || !strings.Contains(s.LastError, "node_2") {
		t.Fatalf("host files: last_error %q, want the failure writing node_2", s.LastError)
	}
	if !zoneHas("node_2") {
		t.Fatal("the DNS zone did not take the validated snapshot because the host files failed")
	}
	if err := os.Remove(r.hostFile("node_2")); err != nil {
		t.Fatal(err)
	}
	if s := r.poll(); s.LastError != "" {
		t.Fatalf("after the squatter left: last_error %q", s.LastError)
	}
	if _, err := os.Stat(r.hostFile("node_2")); err != nil {
		t.Fatalf("host file node_2 not written: %v", err)
	}
}

// TestDNSConfigKeysAndGlue: the YAML's key file is read (and refused when
// others can read it), the limits reach the server's config, and ns.ZONE
// gets the service address and the gateway's own member as its glue.
func TestDNSConfigKeysAndGlue(t *testing.T) {
	dir := t.TempDir()
	key := dir + "/xfr.key"
	body := `key "mgmt-xfr" { algorithm hmac-sha256; secret "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="; };`
	if err := os.WriteFile(key, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c := DNSConfig{Enabled: true, Zone: "mgmt.example.", TSIGKeyFile: key, ServiceAddress: "fdf5:5351:1dfd:0:53::53",
		MaxTCPConnections: 10, RateLimit: 50}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "dns.tsig_key_file") || !strings.Contains(err.Error(), "chmod") {
		t.Errorf("a world-readable key file: %v", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.dnsConfig("server")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.TSIG) != 1 || cfg.TSIG[0].Name != "mgmt-xfr." || cfg.MaxTCPConns != 10 || cfg.RateLimit != 50 {
		t.Errorf("config: %+v", cfg)
	}
	if len(cfg.NS) != 1 || cfg.NS[0].Name != "ns.mgmt.example." || cfg.NS[0].Member != "server" || len(cfg.NS[0].Addrs) != 1 {
		t.Errorf("name server: %+v, want ns.mgmt.example. with the service address and member server", cfg.NS)
	}
}
