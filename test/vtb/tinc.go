package vtb

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/tinc"
)

// BuildMgmtnet builds the mgmtnet binary into dir and returns its path.
func BuildMgmtnet(dir string) (string, error) {
	bin := filepath.Join(dir, "mgmtnet")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/confine-project/mgmtnet/cmd/mgmtnet")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mgmtnet: %w: %s", err, out)
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitHTTP waits until url answers any HTTP status.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	return WaitFor(ctx, timeout, 50*time.Millisecond, func() error {
		out, err := exec.CommandContext(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).Output()
		if err != nil {
			return fmt.Errorf("get %s: %w", url, err)
		}
		if strings.TrimSpace(string(out)) == "000" {
			return fmt.Errorf("get %s: no answer", url)
		}
		return nil
	})
}

// Tincd is a tincd the lab runs, with its configuration directory.
type Tincd struct {
	*Proc
	Dir  string
	Name string
}

// StartTincd starts "tincd -D" for the configuration directory dir in
// namespace n, logging at debug level 3 to dir/tinc.log.
func (l *Lab) StartTincd(n *Netns, name, dir string) (*Tincd, error) {
	p, err := l.Start(n, "tincd-"+name, "tincd", "-c", dir, "-D", "-d", "3",
		"--logfile="+filepath.Join(dir, "tinc.log"), "--pidfile="+filepath.Join(dir, "tinc.pid"))
	if err != nil {
		return nil, err
	}
	return &Tincd{Proc: p, Dir: dir, Name: name}, nil
}

// TincLog returns tincd's log file.
func (t *Tincd) TincLog() string {
	b, _ := os.ReadFile(filepath.Join(t.Dir, "tinc.log"))
	return string(b)
}

// PidFile returns the path of tincd's pid file.
func (t *Tincd) PidFile() string { return filepath.Join(t.Dir, "tinc.pid") }

var (
	activatedRE = regexp.MustCompile(`Connection with (\w+) \(([^)]*)\) activated`)
	closingRE   = regexp.MustCompile(`Closing connection with (\w+) \(`)
)

// ConnectionEvents counts, from a tinc 1.0 log, how many times each peer's
// meta connection was activated and closed.
func ConnectionEvents(log string) (activated, closed map[string]int) {
	activated, closed = map[string]int{}, map[string]int{}
	for _, m := range activatedRE.FindAllStringSubmatch(log, -1) {
		activated[m[1]]++
	}
	for _, m := range closingRE.FindAllStringSubmatch(log, -1) {
		closed[m[1]]++
	}
	return activated, closed
}

// RestartNodeTincd stops a node's tincd (the one node-boot started, by its
// pid file) and starts it again with the same files, as a node's owner
// would after editing them by hand.
func (tb *Testbed) RestartNodeTincd(ctx context.Context, n *Node) error {
	if err := tb.StopNodeTincd(ctx, n); err != nil {
		return err
	}
	return tb.StartNodeTincd(ctx, n)
}

// StopNodeTincd stops the tincd node-boot started on a node, by its pid
// file, with the product's stop policy (tinc.StopByPidFile), and waits
// until it has exited.
func (tb *Testbed) StopNodeTincd(ctx context.Context, n *Node) error {
	if err := tinc.StopByPidFile(ctx, n.PidFile(), 0); err != nil {
		return fmt.Errorf("stop %s's tincd: %w", n.TincName, err)
	}
	return nil
}

// StartNodeTincd starts a node's tincd with its files, as node-boot does.
func (tb *Testbed) StartNodeTincd(ctx context.Context, n *Node) error {
	_, err := n.NS.Run(ctx, tb.nodeTincd(n), "-c", n.TincDir, "--pidfile="+n.PidFile(), "--logfile="+filepath.Join(n.TincDir, "tinc.log"))
	return err
}
