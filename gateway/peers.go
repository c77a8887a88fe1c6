package gateway

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"sort"
	"sync"
	"time"
)

// Peer is a tinc peer as tincd's log tells.
type Peer struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
}

var (
	reActivated = regexp.MustCompile(`Connection with ([A-Za-z0-9_]+) \(.*\) activated`)
	reClosing   = regexp.MustCompile(`Closing connection with ([A-Za-z0-9_]+)`)
)

// peers tracks connections from tincd log lines.
type peers map[string]bool

// line updates p from one log line, and reports whether it was a
// connection event.
func (p peers) line(l string) bool {
	if m := reActivated.FindStringSubmatch(l); m != nil {
		p[m[1]] = true
		return true
	}
	if m := reClosing.FindStringSubmatch(l); m != nil {
		p[m[1]] = false
		return true
	}
	return false
}

func (p peers) list() []Peer {
	out := []Peer{}
	for n, c := range p {
		out = append(out, Peer{Name: n, Connected: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peersFromLog reads the last maxBytes of a tincd log file.
func peersFromLog(path string, maxBytes int64) peers {
	p := peers{}
	f, err := os.Open(path)
	if err != nil {
		return p
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.line(sc.Text())
	}
	return p
}

// reUnauthorized matches tinc 1.0's refusal of a Subnet that the
// announcing member's host file (as this gateway holds it) does not list:
// "Ignoring unauthorized ADD_SUBNET from node_1 (10.241.1.11 port 655):
// fd65:fc41:c50f:0:0:0:0:2". tincd logs it at LOG_WARNING with
// TunnelServer or StrictSubnets.
var reUnauthorized = regexp.MustCompile(`Ignoring unauthorized ADD_SUBNET from ([A-Za-z0-9_]+) \(([^)]*)\): (\S+)`)

// Refusal is one Subnet announcement tincd refused.
type Refusal struct {
	// Member is the tinc name of the peer that announced it, the one
	// connected to this gateway (with TunnelServer, also its owner).
	Member string `json:"member"`
	// From is the peer's address as tincd logged it.
	From string `json:"from"`
	// Subnet is the refused Subnet as tincd wrote it.
	Subnet string `json:"subnet"`
}

// parseRefusal reads a Refusal from one tincd log line.
func parseRefusal(l string) (Refusal, bool) {
	m := reUnauthorized.FindStringSubmatch(l)
	if m == nil {
		return Refusal{}, false
	}
	return Refusal{Member: m[1], From: m[2], Subnet: m[3]}, true
}

// RefusalCount is a refused Subnet and how often it was refused, for
// status.
type RefusalCount struct {
	Refusal
	Count int       `json:"count"`
	Last  time.Time `json:"last"`
}

// refusals counts refused announcements by member and Subnet. It is safe
// for concurrent use: tincd's log reader adds, status reads.
type refusals struct {
	mu sync.Mutex
	m  map[[2]string]*RefusalCount
}

func (r *refusals) add(f Refusal, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[[2]string]*RefusalCount{}
	}
	k := [2]string{f.Member, f.Subnet}
	c := r.m[k]
	if c == nil {
		c = &RefusalCount{Refusal: f}
		r.m[k] = c
	}
	c.From, c.Count, c.Last = f.From, c.Count+1, now
}

// list returns the counts by member, then Subnet.
func (r *refusals) list() []RefusalCount {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []RefusalCount{}
	for _, c := range r.m {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Member != out[j].Member {
			return out[i].Member < out[j].Member
		}
		return out[i].Subnet < out[j].Subnet
	})
	return out
}
