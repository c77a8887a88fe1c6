package tincgen

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "x\n", b: "x\n", want: ""},
		{
			name: "create",
			a:    "", b: "a\nb\n",
			want: "--- a/f\n+++ b/f\n@@ -0,0 +1,2 @@\n+a\n+b\n",
		},
		{
			name: "delete",
			a:    "a\n", b: "",
			want: "--- a/f\n+++ b/f\n@@ -1 +0,0 @@\n-a\n",
		},
		{
			name: "change with context",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n",
			b:    "1\n2\n3\n4\nfive\n6\n7\n8\n",
			want: "--- a/f\n+++ b/f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n",
		},
		{
			name: "two hunks",
			a:    "a\n1\n2\n3\n4\n5\n6\n7\nb\n",
			b:    "A\n1\n2\n3\n4\n5\n6\n7\nB\n",
			want: "--- a/f\n+++ b/f\n@@ -1,4 +1,4 @@\n-a\n+A\n 1\n 2\n 3\n@@ -6,4 +6,4 @@\n 5\n 6\n 7\n-b\n+B\n",
		},
		{
			name: "no newline at end",
			a:    "a\nb", b: "a\nb\n",
			want: "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := unifiedDiff("f", []byte(tt.a), []byte(tt.b))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("unifiedDiff mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUnifiedDiffApplies checks on random inputs that applying the diff to a
// gives b.
func TestUnifiedDiffApplies(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := func() string {
		var b strings.Builder
		for range r.IntN(30) {
			b.WriteString(strconv.Itoa(r.IntN(6)))
			b.WriteString("\n")
		}
		if r.IntN(5) == 0 {
			b.WriteString("end")
		}
		return b.String()
	}
	for i := range 2000 {
		a, b := gen(), gen()
		d := unifiedDiff("f", []byte(a), []byte(b))
		got, err := applyDiff(a, d)
		if err != nil {
			t.Fatalf("case %d: %v\na=%q\nb=%q\ndiff:\n%s", i, err, a, b, d)
		}
		if got != b {
			t.Fatalf("case %d: patched a = %q, want %q\ndiff:\n%s", i, got, b, d)
		}
		if (a == b) != (d == "") {
			t.Fatalf("case %d: a == b is %v but diff is %q", i, a == b, d)
		}
	}
}

// applyDiff applies a unified diff of one file to a, checking every context
// and deleted line and every hunk count.
func applyDiff(a, d string) (string, error) {
	if d == "" {
		return a, nil
	}
	src := splitLines(a)
	lines := splitLines(d)
	if len(lines) < 2 || lines[0] != "--- a/f\n" || lines[1] != "+++ b/f\n" {
		return "", fmt.Errorf("bad header")
	}
	var out []string
	pos := 0 // next line of src to copy
	parseRange := func(s string) (start, count int) {
		st, c, ok := strings.Cut(s, ",")
		start, _ = strconv.Atoi(st)
		count = 1
		if ok {
			count, _ = strconv.Atoi(c)
		}
		return start, count
	}
	for i := 2; i < len(lines); {
		var ar, br string
		if _, err := fmt.Sscanf(lines[i], "@@ -%s +%s @@\n", &ar, &br); err != nil {
			return "", fmt.Errorf("bad hunk header %q", lines[i])
		}
		aStart, aCount := parseRange(ar)
		_, bCount := parseRange(br)
		if aCount > 0 {
			aStart--
		}
		if aStart < pos {
			return "", fmt.Errorf("hunks overlap")
		}
		out = append(out, src[pos:aStart]...)
		pos = aStart
		i++
		na, nb := 0, 0
		for i < len(lines) && !strings.HasPrefix(lines[i], "@@") {
			kind, text := lines[i][0], lines[i][1:]
			i++
			if i < len(lines) && lines[i] == "\\ No newline at end of file\n" {
				text = strings.TrimSuffix(text, "\n")
				i++
			}
			switch kind {
			case ' ', '-':
				if pos >= len(src) || src[pos] != text {
					return "", fmt.Errorf("line %d of a is not %q", pos+1, text)
				}
				pos++
				na++
				if kind == ' ' {
					out = append(out, text)
					nb++
				}
			case '+':
				out = append(out, text)
				nb++
			default:
				return "", fmt.Errorf("bad hunk line %q", lines[i-1])
			}
		}
		if na != aCount || nb != bCount {
			return "", fmt.Errorf("hunk counts %d,%d, want %d,%d", na, nb, aCount, bCount)
		}
	}
	out = append(out, src[pos:]...)
	return strings.Join(out, ""), nil
}
