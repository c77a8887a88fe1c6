package gateway

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/confine-project/mgmtnet/tincgen"
)

// fileWatch watches the hosts directory (a host file changed by someone
// else is repaired) and the config file's directory (a changed config is
// reloaded), debouncing both.
type fileWatch struct {
	w                 *fsnotify.Watcher
	hosts             string
	confDir, confBase string
	// suspect collects the host files that events named since the last
	// repair. The daemon's own writes make events too: after each sync
	// they are drained (drainOwn), and a repair compares only the named
	// files (tampered) before it rewrites anything.
	suspect          map[string]bool
	repairC, reloadC <-chan time.Time
}

// debounce is how long a burst of events is gathered before it is acted
// on.
const debounce = 200 * time.Millisecond

func newFileWatch(hosts, configPath string, log *slog.Logger) (*fileWatch, error) {
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return nil, fmt.Errorf("hosts directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch files: %w", err)
	}
	if err := w.Add(hosts); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", hosts, err)
	}
	fw := &fileWatch{w: w, hosts: filepath.Clean(hosts), suspect: map[string]bool{}}
	if configPath != "" {
		abs, _ := filepath.Abs(configPath)
		fw.confDir, fw.confBase = filepath.Dir(abs), filepath.Base(abs)
		if err := w.Add(fw.confDir); err != nil {
			log.Warn("cannot watch the config file; reload with SIGHUP", "err", err)
		}
	}
	return fw, nil
}

func (fw *fileWatch) close() { fw.w.Close() }

func (fw *fileWatch) isConfig(name string) bool {
	return fw.confDir != "" && filepath.Dir(name) == fw.confDir && filepath.Base(name) == fw.confBase
}

// event notes one event: a config change schedules a reload, a host file
// a repair check.
func (fw *fileWatch) event(ev fsnotify.Event) {
	dir, base := filepath.Dir(ev.Name), filepath.Base(ev.Name)
	switch {
	case fw.isConfig(ev.Name):
		fw.reloadC = time.After(debounce)
	case filepath.Clean(dir) == fw.hosts && tincgen.ValidName(base):
		fw.suspect[base] = true
		fw.repairC = time.After(debounce)
	}
}

// takeSuspects returns, and forgets, the host files named since the last
// repair.
func (fw *fileWatch) takeSuspects() map[string]bool {
	names := fw.suspect
	fw.suspect, fw.repairC = map[string]bool{}, nil
	return names
}

// drainOwn drops the events of the daemon's own writes: those until the
// directory is quiet for 100 ms. A config change among them still
// schedules a reload.
func (fw *fileWatch) drainOwn() {
	quiet := time.NewTimer(100 * time.Millisecond)
	defer quiet.Stop()
	for {
		select {
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if fw.isConfig(ev.Name) {
				fw.reloadC = time.After(debounce)
			}
			quiet.Reset(100 * time.Millisecond)
		case <-quiet.C:
			return
		}
	}
}
