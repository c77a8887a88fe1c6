package gateway

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"sort"
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

func (p peers) connected() int {
	n := 0
	for _, c := range p {
		if c {
			n++
		}
	}
	return n
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
