package registry

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// gzipBomb returns a gzip stream of prefix followed by total bytes of
// filler (prefix counts in total): concatenated gzip members of one
// compressed chunk, which every gzip reader (and the HTTP transport's)
// reads as one stream. A GiB of spaces is about 1 MB of gzip.
func gzipBomb(t testing.TB, prefix string, filler byte, total int64) []byte {
	t.Helper()
	const chunk = 16 << 20
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	fill := bytes.Repeat([]byte{filler}, chunk)
	out := gz(append([]byte(prefix), fill[:chunk-len(prefix)]...))
	one := gz(fill)
	for n := int64(chunk); n < total; n += chunk {
		out = append(out, one...)
	}
	return out
}

// bombHandler serves body as the nodes collection, gzipped (with
// Content-Encoding: gzip, which the client's transport undoes) or, when
// plain, as total bytes of prefix and filler generated as they are sent.
func bombHandler(gzipped []byte, plain bool, prefix string, filler byte, total int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !plain {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(gzipped)))
			w.Write(gzipped)
			return
		}
		chunk := bytes.Repeat([]byte{filler}, 64<<10)
		copy(chunk, prefix)
		for n := int64(0); n < total; n += int64(len(chunk)) {
			if _, err := w.Write(chunk); err != nil {
				return // the client hung up, as it should
			}
			copy(chunk, bytes.Repeat([]byte{filler}, len(prefix)))
		}
	}
}

// TestFetchRefusesBombs replays a gzip bomb (about 1 MB that unzips to
// 1 GiB) and the same GiB sent plain: the client stops at MaxBodyBytes of
// unzipped bytes with an error naming the answer and the limit (or at
// MaxElementBytes of one value), and its allocations stay small: they
// depend on neither the bomb nor the limit.
func TestFetchRefusesBombs(t *testing.T) {
	if testing.Short() {
		t.Skip("unzips and reads hundreds of MB")
	}
	const bomb = 1 << 30
	tests := []struct {
		name   string
		prefix string
		filler byte
		// maxAlloc bounds the bytes allocated during the Fetch.
		maxAlloc int64
	}{
		// Whitespace inside the array: a streaming decoder holds nothing
		// of it, whatever the limit.
		{"whitespace", "[", ' ', 32 << 20},
		// One endless string: the decoder must hold the element it reads,
		// but only up to MaxElementBytes.
		{"one endless element", `[{"name": "`, 'a', 8 * MaxElementBytes},
	}
	for _, tt := range tests {
		gzipped := gzipBomb(t, tt.prefix, tt.filler, bomb)
		for _, plain := range []bool{false, true} {
			name := tt.name + ", Content-Encoding: gzip"
			if plain {
				name = tt.name + ", plain"
			}
			t.Run(name, func(t *testing.T) {
				if !plain {
					t.Logf("gzip bomb: %d bytes expanding to %d", len(gzipped), bomb)
				}
				base, attempts := faultServer(t, bombHandler(gzipped, plain, tt.prefix, tt.filler, bomb))
				const limit = DefaultMaxBodyBytes
				c := newClient(t, base, fastOptions())
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := c.Fetch(context.Background(), nil)
				runtime.ReadMemStats(&after)
				want := fmt.Sprintf("/api/nodes/ exceeds %s unzipped (MaxBodyBytes)", formatBytes(limit))
				if tt.filler != ' ' {
					want = "/api/nodes/: want a JSON array of objects: a JSON value from byte 1 on is over 1 MiB (MaxElementBytes)"
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want one with %q", err, want)
				}
				if n := attempts.Load(); n != 1 {
					t.Errorf("%d attempts, want 1 (the limit is not retried)", n)
				}
				alloc := int64(after.TotalAlloc - before.TotalAlloc)
				t.Logf("limit %d MiB: allocated %.1f MiB during the fetch, heap %.1f MiB after", limit>>20, float64(alloc)/(1<<20), float64(after.HeapAlloc)/(1<<20))
				if alloc > tt.maxAlloc {
					t.Errorf("allocated %d bytes during the fetch, want at most %d", alloc, tt.maxAlloc)
				}
			})
		}
	}
}

// TestFetchRetryForgetsHalfAPage: a page whose transfer breaks half-way is
// read again, and what the broken attempt decoded is forgotten, so a member
// that changed in between is not taken for two claimants of its id.
func TestFetchRetryForgetsHalfAPage(t *testing.T) {
	node := func(id int, name string) string {
		return fmt.Sprintf(`{"id": %d, "name": %q, "mgmt_net": {"addr": "a", "backend": "tinc"}, "tinc": {"name": "node_%d", "pubkey": "k"}}`, id, name, id)
	}
	var n atomic.Int32
	base, attempts := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if n.Add(1) == 1 {
			// Promise more than is sent: the client reads an unexpected
			// EOF after node 1.
			body := "[" + node(1, "old") + ","
			w.Header().Set("Content-Length", strconv.Itoa(len(body)+1000))
			io.WriteString(w, body)
			return
		}
		io.WriteString(w, "["+node(1, "new")+","+node(2, "b")+"]")
	})
	snap, err := newClient(t, base, fastOptions()).Fetch(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := attempts.Load(); a != 2 {
		t.Errorf("%d attempts, want 2", a)
	}
	var got []string
	for _, c := range snap.Candidates {
		got = append(got, fmt.Sprintf("%d %s", c.ID, c.Name))
	}
	if diff := cmp.Diff([]string{"1 new", "2 b"}, got); diff != "" {
		t.Errorf("candidates (-want +got):\n%s", diff)
	}
}

// TestFetchTimeoutBoundsADrip: a registry that sends a byte every so
// often never stalls a read, but the whole fetch ends at FetchTimeout.
func TestFetchTimeoutBoundsADrip(t *testing.T) {
	base, _ := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for {
			if _, err := io.WriteString(w, " "); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	opts := fastOptions()
	opts.Timeout = time.Second
	opts.FetchTimeout = 700 * time.Millisecond
	start := time.Now()
	_, err := newClient(t, base, opts).Fetch(context.Background(), nil)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "deadline of 700ms") {
		t.Errorf("error %v, want the fetch's deadline", err)
	}
	if took > 3*time.Second {
		t.Errorf("the fetch took %v, want about 700ms", took)
	}
}

// TestFetchTimeoutNamesTheLastAttempt: a deadline that ends a backoff wait
// still says why the attempts before it failed.
func TestFetchTimeoutNamesTheLastAttempt(t *testing.T) {
	opts := Options{RetryWaitMin: 2 * time.Second, RetryWaitMax: 2 * time.Second, FetchTimeout: 300 * time.Millisecond}
	_, err := newClient(t, "http://127.0.0.1:1/api/", opts).Fetch(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "deadline of 300ms") || !strings.Contains(err.Error(), "the last attempt: ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %v, want the deadline and the last attempt's connection refused", err)
	}
}

// TestFetchQuotesRegistryStrings: strings of the registry that reach the
// problems of a fetch, or its error, are quoted: no line break or escape
// code gets through to a terminal.
func TestFetchQuotesRegistryStrings(t *testing.T) {
	const evil = `\n\u001b[31m` // JSON escapes of "\n\x1b[31m"
	body := `[{"id": 1, "island": "x` + evil + `"}, {"id": 2, "tinc": {"name": "node_2", "addresses": [{"addr": "a", "port": "1` + evil + `"}]}},` +
		` {"id": 3, "tinc": {"name": "node_3` + evil + `", "addresses": ["10.0.0.1` + evil + ` 655 x"]}}]`
	base, _ := faultServer(t, jsonReply(body))
	snap, err := newClient(t, base, fastOptions()).Fetch(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Problems) != 3 {
		t.Fatalf("problems %q, want 3", snap.Problems)
	}
	for _, p := range snap.Problems {
		if s := p.String(); strings.ContainsAny(s, "\n\x1b") || !strings.Contains(s, `\x1b[31m`) {
			t.Errorf("problem %q: want the registry's string quoted", s)
		}
	}
	// A status with a text body that has lines.
	base, _ = faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "line 1\nfake: all good", http.StatusBadRequest)
	})
	_, err = newClient(t, base, fastOptions()).Fetch(context.Background(), nil)
	if err == nil || strings.ContainsAny(err.Error(), "\n\x1b") || !strings.Contains(err.Error(), `"line 1\nfake: all good"`) {
		t.Errorf("error %q: want the body quoted", err)
	}
}

// TestFetchDeadlineNamesStatus: when the fetch's deadline ends the retries
// of a failing registry, the error still says how it failed.
func TestFetchDeadlineNamesStatus(t *testing.T) {
	base, _ := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	opts := Options{RetryWaitMin: 200 * time.Millisecond, RetryWaitMax: 200 * time.Millisecond, Retries: 100, FetchTimeout: 500 * time.Millisecond}
	_, err := newClient(t, base, opts).Fetch(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "status 500") || !strings.Contains(err.Error(), "deadline of 500ms") {
		t.Fatalf("err = %v; want the deadline and the last status 500", err)
	}
}
