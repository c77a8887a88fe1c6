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
