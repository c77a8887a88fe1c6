package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Status is what the daemon knows, as "mgmtnet status --json" prints it.
type Status struct {
	Version        string         `json:"version"`
	LastSync       *time.Time     `json:"last_sync"`
	SyncAgeSeconds *float64       `json:"sync_age_seconds"`
	FromCache      bool           `json:"from_cache"`
	Registry       RegistryStatus `json:"registry"`
	Members        MemberCounts   `json:"members"`
	Rejected       []string       `json:"rejected"`
	// Warnings are members kept with a part dropped: a registry field
	// the grant policy refuses, an unusable tinc address.
	Warnings    []string     `json:"warnings"`
	Files       FileCounts   `json:"files"`
	Hups        int          `json:"hups"`
	Restarts    int          `json:"restarts"`
	Syncs       int          `json:"syncs"`
	LastError   string       `json:"last_error"`
	ConfigError string       `json:"config_error"`
	Tincd       TincdState   `json:"tincd"`
	Peers       []Peer       `json:"peers"`
	Egress      EgressStatus `json:"egress"`
	DNS         DNSStatus    `json:"dns"`
	// RefusedSubnets are the Subnet announcements tincd refused since the
	// daemon started, by member and Subnet.
	RefusedSubnets []RefusalCount `json:"refused_subnets"`
}

// RegistryStatus is the registry side of Status.
type RegistryStatus struct {
	URL       string            `json:"url"`
	ETags     map[string]string `json:"etags"`
	LastError string            `json:"last_error"`
}

// MemberCounts counts the members of the applied snapshot.
type MemberCounts struct {
	Nodes   int `json:"nodes"`
	Servers int `json:"servers"`
	Hosts   int `json:"hosts"`
}

// FileCounts are host file totals since start.
type FileCounts struct {
	Written   int `json:"written"`
	Unchanged int `json:"unchanged"`
	Removed   int `json:"removed"`
}

// serveStatus answers each connection to the unix socket path with the
// status as one JSON object, until ctx ends. A stale socket file is
// replaced.
func (d *Daemon) serveStatus(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				st, err := d.Status(ctx)
				if err != nil {
					return
				}
				b, _ := json.Marshal(st)
				c.Write(append(b, '\n'))
			}()
		}
	}()
	return func() { ln.Close(); <-done; os.Remove(path) }, nil
}

// QueryStatus reads the status from a daemon's unix socket, as raw JSON.
func QueryStatus(ctx context.Context, path string) ([]byte, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to the gateway daemon at %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(c, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read status from %s: %w", path, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("read status from %s: not a JSON object", path)
	}
	return b, nil
}
