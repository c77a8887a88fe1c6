// Package uci parses OpenWrt's UCI configuration files (/etc/config/*), the
// syntax the node firmware writes: "package", "config TYPE [NAME]",
// "option NAME VALUE" and "list NAME VALUE" lines, values bare, in single
// quotes (no escapes) or in double quotes (backslash escapes), adjacent
// quoted parts concatenated, "#" comments, and a backslash at the end of a
// line to continue it. Errors give the file name and line.
//
// It reads only; it does not write UCI files or know what any option means.
package uci

import (
	"fmt"
	"strings"
)

// Section is one "config" block.
type Section struct {
	Type    string
	Name    string // "" for an anonymous section
	Line    int
	Options map[string]string
	Lists   map[string][]string
	order   []string
}

// OptionNames returns the names of the options and lists in file order.
func (s *Section) OptionNames() []string { return s.order }

// Get returns an option's value.
func (s *Section) Get(name string) (string, bool) {
	v, ok := s.Options[name]
	return v, ok
}

// File is a parsed UCI file.
type File struct {
	Name     string // file name, for messages
	Package  string
	Sections []*Section
}

// Section returns the section with the given name, or else the first
// section of that type (UCI's "@type[0]"), so that both "config node node"
// and an anonymous "config node" are found by Section("node").
func (f *File) Section(nameOrType string) *Section {
	for _, s := range f.Sections {
		if s.Name == nameOrType {
			return s
		}
	}
	for _, s := range f.Sections {
		if s.Type == nameOrType {
			return s
		}
	}
	return nil
}

// Error is a syntax error at a line of a file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Parse parses the content of a UCI file; name is used in error messages.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Name: name}
	var cur *Section
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		fail := func(format string, args ...any) (*File, error) {
			return nil, &Error{File: name, Line: lineNo, Msg: fmt.Sprintf(format, args...)}
		}
		line := lines[i]
		// Continuation: a backslash at the very end joins the next line.
		for strings.HasSuffix(line, "\\") && !strings.HasSuffix(line, "\\\\") && i+1 < len(lines) && !inQuote(line) {
			i++
			line = line[:len(line)-1] + lines[i]
		}
		toks, err := tokenize(line)
		if err != nil {
			return fail("%v", err)
		}
		if len(toks) == 0 {
			continue
		}
		switch toks[0] {
		case "package":
			if len(toks) != 2 {
				return fail("package takes one name")
			}
			f.Package = toks[1]
		case "config":
			if len(toks) < 2 || len(toks) > 3 {
				return fail("config takes a type and an optional name, got %d words", len(toks)-1)
			}
			if !validIdent(toks[1]) {
				return fail("invalid section type %q", toks[1])
			}
			cur = &Section{Type: toks[1], Line: lineNo, Options: map[string]string{}, Lists: map[string][]string{}}
			if len(toks) == 3 {
				if !validIdent(toks[2]) {
					return fail("invalid section name %q", toks[2])
				}
				cur.Name = toks[2]
			}
			f.Sections = append(f.Sections, cur)
		case "option", "list":
			if cur == nil {
				return fail("%s outside a config section", toks[0])
			}
			if len(toks) != 3 {
				return fail("%s takes a name and one value, got %d words", toks[0], len(toks)-1)
			}
			if !validIdent(toks[1]) {
				return fail("invalid %s name %q", toks[0], toks[1])
			}
			key := toks[1]
			if toks[0] == "option" {
				if _, isList := cur.Lists[key]; isList {
					return fail("option %s is already a list", key)
				}
				if _, seen := cur.Options[key]; !seen {
					cur.order = append(cur.order, key)
				}
				cur.Options[key] = toks[2] // a later option overrides, as in UCI
			} else {
				if _, isOpt := cur.Options[key]; isOpt {
					return fail("list %s is already an option", key)
				}
				if _, seen := cur.Lists[key]; !seen {
					cur.order = append(cur.order, key)
				}
				cur.Lists[key] = append(cur.Lists[key], toks[2])
			}
		default:
			return fail("unknown keyword %q (want package, config, option or list)", toks[0])
		}
	}
	return f, nil
}

// validIdent is UCI's rule for types and names: [A-Za-z0-9_-]+.
func validIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// inQuote reports whether line ends inside an open quote.
func inQuote(line string) bool {
	var q byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case q == 0 && (c == '\'' || c == '"'):
			q = c
		case q == '"' && c == '\\':
			i++
		case q != 0 && c == q:
			q = 0
		case q == 0 && c == '#':
			return false
		}
	}
	return q != 0
}

// tokenize splits a line into words: bare words, single-quoted (literal),
// double-quoted (with backslash escapes), adjacent parts concatenated;
// "#" outside quotes starts a comment.
func tokenize(line string) ([]string, error) {
	for i := 0; i < len(line); i++ {
		if c := line[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return nil, fmt.Errorf("control character %#02x", c)
		}
	}
	var toks []string
	var b strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				toks = append(toks, b.String())
				b.Reset()
				inWord = false
			}
		case c == '#':
			if inWord {
				toks = append(toks, b.String())
			}
			return toks, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated single quote")
			}
			b.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				b.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated double quote")
			}
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
			inWord = true
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		toks = append(toks, b.String())
	}
	return toks, nil
}
