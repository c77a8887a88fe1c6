package tincgen

import (
	"fmt"
	"strings"
)

// diffContext is the number of unchanged lines around each hunk.
const diffContext = 3

// maxLCSCells bounds the LCS table. Host files are small; past the bound the
// middle of the files is shown as deleted then added, which is correct but not
// minimal.
const maxLCSCells = 1 << 22

type opKind byte

const (
	opEqual opKind = ' '
	opDel   opKind = '-'
	opIns   opKind = '+'
)

type diffOp struct {
	kind opKind
	line string // with its "\n", if it has one
}

// unifiedDiff returns a unified diff from a to b for the file name, with
// "--- a/name" and "+++ b/name" headers, or "" when a and b are equal.
func unifiedDiff(name string, a, b []byte) string {
	return UnifiedDiff("a/"+name, "b/"+name, a, b)
}

// UnifiedDiff returns a unified diff (3 lines of context) from a to b,
// with "--- from" and "+++ to" headers, or "" when a and b are equal. It is
// meant for small files such as host files and tinc.conf.
func UnifiedDiff(from, to string, a, b []byte) string {
	ops := diffLines(splitLines(string(a)), splitLines(string(b)))
	var out strings.Builder
	wroteHeader := false
	// Walk the ops; a hunk covers changes closer than 2*diffContext apart.
	for i := 0; i < len(ops); {
		if ops[i].kind == opEqual {
			i++
			continue
		}
		start := max(0, i-diffContext)
		end := i // one past the last change of the hunk
		for j := i; j < len(ops); j++ {
			if ops[j].kind != opEqual {
				end = j + 1
			} else if j-end >= 2*diffContext {
				break
			}
		}
		stop := min(len(ops), end+diffContext)
		if !wroteHeader {
			fmt.Fprintf(&out, "--- %s\n+++ %s\n", from, to)
			wroteHeader = true
		}
		// Line numbers (1-based) of the hunk's first line in a and b.
		aLine, bLine := 1, 1
		for _, op := range ops[:start] {
			if op.kind != opIns {
				aLine++
			}
			if op.kind != opDel {
				bLine++
			}
		}
		aCount, bCount := 0, 0
		for _, op := range ops[start:stop] {
			if op.kind != opIns {
				aCount++
			}
			if op.kind != opDel {
				bCount++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(aLine, aCount), hunkRange(bLine, bCount))
		for _, op := range ops[start:stop] {
			out.WriteByte(byte(op.kind))
			out.WriteString(op.line)
			if !strings.HasSuffix(op.line, "\n") {
				out.WriteString("\n\\ No newline at end of file\n")
			}
		}
		i = stop
	}
	return out.String()
}

// hunkRange formats a unified diff range the way GNU diff does: an empty range
// names the line before it.
func hunkRange(line, count int) string {
	switch count {
	case 0:
		return fmt.Sprintf("%d,0", line-1)
	case 1:
		return fmt.Sprintf("%d", line)
	}
	return fmt.Sprintf("%d,%d", line, count)
}

// splitLines splits s after each "\n"; the last line may lack one.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// diffLines returns an edit script from a to b: the common prefix and suffix,
// and a longest common subsequence of the middle.
func diffLines(a, b []string) []diffOp {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	ops := make([]diffOp, 0, len(a)+len(b))
	for _, l := range a[:pre] {
		ops = append(ops, diffOp{opEqual, l})
	}
	ops = append(ops, lcsDiff(a[pre:len(a)-suf], b[pre:len(b)-suf])...)
	for _, l := range a[len(a)-suf:] {
		ops = append(ops, diffOp{opEqual, l})
	}
	return ops
}

func lcsDiff(a, b []string) []diffOp {
	var ops []diffOp
	n, m := len(a), len(b)
	if n*m > maxLCSCells {
		for _, l := range a {
			ops = append(ops, diffOp{opDel, l})
		}
		for _, l := range b {
			ops = append(ops, diffOp{opIns, l})
		}
		return ops
	}
	// t[i][j] is the LCS length of a[i:] and b[j:].
	t := make([][]int32, n+1)
	for i := range t {
		t[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			ops = append(ops, diffOp{opEqual, a[i]})
			i++
			j++
		case t[i+1][j] >= t[i][j+1]:
			ops = append(ops, diffOp{opDel, a[i]})
			i++
		default:
			ops = append(ops, diffOp{opIns, b[j]})
			j++
		}
	}
	for ; i < n; i++ {
		ops = append(ops, diffOp{opDel, a[i]})
	}
	for ; j < m; j++ {
		ops = append(ops, diffOp{opIns, b[j]})
	}
	return ops
}
