// Package pgtest starts a real PostgreSQL server for a test: Debian's
// postgresql binaries, a cluster initialised in a temporary directory,
// run as the unprivileged user nobody, listening on a Unix socket in that
// directory only (no TCP port), stopped and removed when the test ends.
package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireEnv makes a missing PostgreSQL a failure rather than a skip (CI
// sets it, as for the end-to-end tests).
const RequireEnv = "MGMTNET_REQUIRE_E2E"

// bindir finds the newest /usr/lib/postgresql/<major>/bin with initdb.
func bindir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb; scripts/install-deps.sh installs the postgresql package)")
	}
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return a > b
	})
	return filepath.Dir(dirs[0]), nil
}

// Start starts a server for t and returns a pgx URL of its database
// "postgres". Without PostgreSQL (or as a user that cannot switch to
// nobody) the test is skipped, or fails when RequireEnv is set.
func Start(t testing.TB) string {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("PostgreSQL test cannot run: %s", msg)
		}
		t.Skipf("PostgreSQL test skipped: %s (set %s=1 to make this a failure)", msg, RequireEnv)
	}
	bin, err := bindir()
	if err != nil {
		skip("%v", err)
	}
	if os.Geteuid() != 0 {
		skip("needs root, to run the server as nobody")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		skip("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	dir, err := os.MkdirTemp("", "mgmtnet-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	for _, d := range []string{dir} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}
	if out, err := asNobody("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	logFile := filepath.Join(dir, "server.log")
	// No TCP listener: the socket in dir only. fsync off: a test's
	// database need not survive a power cut.
	start := asNobody("pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "60", "-o",
		"-c listen_addresses='' -c unix_socket_directories="+dir+" -c fsync=off -c max_connections=50", "start")
	if out, err := start.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		if out, err := asNobody("pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop").CombinedOutput(); err != nil {
			t.Errorf("pg_ctl stop: %v\n%s", err, out)
			// The postmaster's pid, ours to stop: it is the first line
			// of postmaster.pid in the data directory we made.
			if b, err := os.ReadFile(filepath.Join(data, "postmaster.pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])); err == nil && pid > 1 {
					syscall.Kill(pid, syscall.SIGKILL)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
		if t.Failed() {
			if log, err := os.ReadFile(logFile); err == nil {
				t.Logf("PostgreSQL log:\n%s", log)
			}
		}
	})
	return "postgres://postgres@/postgres?host=" + dir + "&sslmode=disable"
}

// CreateDB creates another database on the server of url (from Start) and
// returns its URL.
func CreateDB(t testing.TB, url, name string) string {
	t.Helper()
	host := url[strings.Index(url, "host=")+5:]
	host = host[:strings.IndexByte(host, '&')]
	bin, err := bindir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "createdb"), "-h", host, "-U", "postgres", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("createdb %s: %v\n%s", name, err, out)
	}
	return strings.Replace(url, "@/postgres?", "@/"+name+"?", 1)
}
