package meta

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/confine-project/mgmtnet"

type pkg struct {
	ImportPath string
	Dir        string
	Name       string
	Standard   bool
	Imports    []string
	Deps       []string
	GoFiles    []string
}

// listPackages runs "go list -json ./..." from the repository root.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 3 {
		t.Fatalf("go list found only %d packages; is the test running in the repository?", len(pkgs))
	}
	return pkgs
}

func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func TestGofmt(t *testing.T) {
	cmd := exec.Command("gofmt", "-l", ".")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gofmt: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("gofmt would change these files:\n%s", s)
	}
}

// Every package has a doc comment in at least one of its files.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		documented := false
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				documented = true
				break
			}
		}
		if !documented {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}

// pure packages must not touch the OS, log or start processes: these are
// the standard packages they may not import directly.
var impureStd = []string{"os", "os/exec", "os/signal", "syscall", "log", "log/slog", "net/http", "io/fs", "time"}

// The dependency rules of style.md.
func TestDependencyRules(t *testing.T) {
	pkgs := listPackages(t)
	// The pure packages and the modules outside the standard library they
	// may use: none.
	allowedExternal := map[string][]string{
		"addressing": {},
		"mesh":       {},
	}
	allowedInternal := map[string][]string{
		"addressing": {},
		"mesh":       {"addressing"},
	}
	leaves := []string{"mesh/registry", "tincgen", "vpn", "gateway/egress", "gateway/loopback"}
	seen := map[string]bool{}
	for _, p := range pkgs {
		r := rel(p.ImportPath)
		seen[r] = true
		if ext, pure := allowedExternal[r]; pure {
			for _, d := range p.Deps {
				if isStd(d) {
					continue
				}
				if strings.HasPrefix(d, module) {
					if !contains(allowedInternal[r], rel(d)) {
						t.Errorf("%s depends on %s; it may depend only on %v of this module", r, rel(d), allowedInternal[r])
					}
					continue
				}
				if !hasPrefixAny(d, ext) {
					t.Errorf("%s depends on %s; a pure package may use only the standard library (and modules %v)", r, d, ext)
				}
			}
			for _, imp := range p.Imports {
				if contains(impureStd, imp) {
					t.Errorf("%s imports %s; a pure package must not touch the OS, the clock or logs", r, imp)
				}
			}
		}
		if contains(leaves, r) {
			for _, d := range p.Deps {
				if dr := rel(d); strings.HasPrefix(d, module+"/") && contains(leaves, dr) {
					t.Errorf("leaf adapter %s imports leaf adapter %s; adapters must not import each other", r, dr)
				}
			}
		}
		if r != "cmd/mgmtnet" && !strings.HasPrefix(r, "test") {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, module+"/cmd/") {
					t.Errorf("%s imports %s; only cmd/mgmtnet may use the command layer", r, rel(d))
				}
			}
		}
	}
	for _, must := range []string{"addressing", "cmd/mgmtnet"} {
		if !seen[must] {
			t.Errorf("package %s not found by go list", must)
		}
	}
}

// layers is the import graph of the layout (README "Layout",
// docs/architecture.md), bottom up: a package may import only packages of
// lower layers. internal/ is the basement only; the command layer is the
// top; the data path reads source -> snapshot -> appliers.
var layers = [][]string{
	{"internal/nft", "internal/uci", "internal/nft/nfttest"}, // the basement: kernel and file adapters
	{"addressing"}, // pure: the plan
	{"mesh"},       // pure: the snapshot model
	{"mesh/registry", "tincgen", "vpn", "gateway/egress", "gateway/loopback"}, // leaf adapters: wire, tinc files, kernel
	{"source", "tinc", "registrydb"},                                          // the one snapshot source; the one tincd controller and applier; the registry's database
	{"authdns", "fetchhosts", "nodeboot", "registryapi", "join"},              // appliers of a snapshot; the registry's write API; a host joining
	{"gateway"},                  // the gateway's loop and its components
	{"cmd/mgmtnet/internal/cli"}, // flags, output, exit codes
	{"cmd/mgmtnet"},              // main
}

// TestLayers: every package of the module (but test/) is in a layer, and
// imports only packages of lower layers.
func TestLayers(t *testing.T) {
	rank := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			rank[p] = i
		}
	}
	for _, p := range listPackages(t) {
		r := rel(p.ImportPath)
		if strings.HasPrefix(r, "test/") {
			continue
		}
		mine, ok := rank[r]
		if !ok {
			t.Errorf("package %s is in no layer of the layout: add it to layers (and to the README's Layout)", r)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			ir := rel(imp)
			theirs, ok := rank[ir]
			// A package's own subpackage (nfttest of nft) shares its layer.
			if ok && (theirs > mine || theirs == mine && !strings.HasPrefix(r, ir+"/")) {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package may import only lower layers", r, mine, ir, theirs)
			}
		}
	}
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	return false
}

// TestStandsAlone: nothing in the repository points at design documents
// outside it (they live in docs/), and no build output is committed.
func TestStandsAlone(t *testing.T) {
	out, err := exec.Command("git", "-C", root(t), "ls-files").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	for _, f := range strings.Fields(string(out)) {
		if f == "test/meta/meta_test.go" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root(t), f))
		if err != nil {
			continue // a file deleted in the work tree
		}
		if bytes.HasPrefix(b, []byte("\x7fELF")) {
			t.Errorf("%s is an executable: build outputs are not committed (add it to .gitignore)", f)
		}
		for _, bad := range []string{"../shared", "shared/docs"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s mentions %q: the project's docs live in docs/", f, bad)
			}
		}
	}
}

// TestModTidy: go.mod and go.sum are what "go mod tidy" makes them.
func TestModTidy(t *testing.T) {
	cmd := exec.Command("go", "mod", "tidy", "-diff")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("go mod tidy -diff: %v\n%s", err, out)
	}
}
