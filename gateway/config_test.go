package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte("registry:\n  url: http://127.0.0.1:8080/api/\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Registry.URL = "http://127.0.0.1:8080/api/"
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if c.Poll.Interval.D() != 60*time.Second || c.PidFile() != "/var/run/tinc.confine.pid" {
		t.Errorf("interval %s pidfile %s", c.Poll.Interval.D(), c.PidFile())
	}
	c.Tinc.Manage = true
	if c.PidFile() != "/etc/tinc/confine/tinc.pid" {
		t.Errorf("managed pidfile %s", c.PidFile())
	}
}

func TestParseConfigUnknownKey(t *testing.T) {
	_, err := ParseConfig([]byte("registry:\n  url: http://x/api/\n  urll: y\n"))
	if err == nil || !strings.Contains(err.Error(), "urll") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("err = %v, want one naming urll and line 3", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no url", func(c *Config) { c.Registry.URL = "" }, "registry.url is required"},
		{"bad url", func(c *Config) { c.Registry.URL = "ftp://x/" }, "registry.url"},
		{"ca and insecure", func(c *Config) { c.Registry.CA, c.Registry.Insecure = "/ca.pem", true }, "exclude"},
		{"timeout", func(c *Config) { c.Registry.Timeout = 0 }, "registry.timeout"},
		{"timeout over the watchdog", func(c *Config) { c.Registry.Timeout = Duration(5 * time.Minute) }, "registry.timeout 5m0s: must be positive and at most 1m30s"},
		{"tinc name", func(c *Config) { c.Identity.TincName = "../x" }, "identity.tinc_name"},
		{"prefix", func(c *Config) { c.Prefix = "fd00::/64" }, "prefix"},
		{"dir", func(c *Config) { c.Tinc.Dir = "rel" }, "tinc.dir"},
		{"net", func(c *Config) { c.Tinc.Net = "a/b" }, "tinc.net"},
		{"tincd", func(c *Config) { c.Tinc.Manage, c.Tinc.Tincd = true, "" }, "tinc.tincd"},
		{"interval", func(c *Config) { c.Poll.Interval = Duration(time.Millisecond) }, "poll.interval"},
		{"udp watchdog interval", func(c *Config) { c.Tinc.UDPWatchdog.Interval = Duration(time.Millisecond) }, "tinc.udp_watchdog: interval 1ms"},
		{"max members", func(c *Config) { c.Tinc.MaxMembers = 1001 }, "tinc.max_members 1001: want 1..1000"},
		{"udp watchdog misses", func(c *Config) { c.Tinc.UDPWatchdog.Misses = 0 }, "tinc.udp_watchdog: interval 1s and misses 0"},
		{"full resync", func(c *Config) { c.Poll.FullResync = Duration(time.Second) }, "poll.full_resync"},
		{"guard", func(c *Config) { c.Guard.MaxRemoveFraction = 1.5 }, "guard.max_remove_fraction"},
		{"state dir", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"socket", func(c *Config) { c.StatusSocket = "x.sock" }, "status_socket"},
		{"metrics", func(c *Config) { c.MetricsListen = "nonsense" }, "metrics_listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Registry.URL = "http://127.0.0.1/api/"
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseConfigDuration(t *testing.T) {
	c, err := ParseConfig([]byte("registry: {url: 'http://x/api/', timeout: 5s}\npoll: {interval: 2m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Registry.Timeout.D() != 5*time.Second || c.Poll.Interval.D() != 2*time.Minute {
		t.Errorf("got %s %s", c.Registry.Timeout.D(), c.Poll.Interval.D())
	}
	if _, err := ParseConfig([]byte("poll: {interval: soon}\n")); err == nil {
		t.Error("bad duration accepted")
	}
}

func TestExampleConfig(t *testing.T) {
	c, err := LoadConfig("../packaging/gateway.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Registry.URL = "https://[fdf5:5351:1dfd::2]/api/"
	if d := cmp.Diff(want, c, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("example differs from the defaults (-want +got):\n%s", d)
	}
}
