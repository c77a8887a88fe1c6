package source

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
)

// snapshot is the last-known-good state saved in state_dir/snapshot.json:
// enough to rebuild the Testbed without the registry. In the file it also
// has "candidates", the applied testbed's members as candidates
// (mesh.Testbed.Candidates), which saveSnapshot and loadSnapshot stream
// one at a time rather than hold as a list.
type snapshot struct {
	Saved       time.Time         `json:"saved"`
	RegistryURL string            `json:"registry_url"`
	Prefix      string            `json:"prefix"`
	Validators  map[string]string `json:"validators"`
}

// saveSnapshot writes s and the candidates of tb atomically (temporary
// file, fsync, rename, directory fsync), encoding one candidate at a time
// straight into the file: with 66 000 members neither a []byte of the file
// nor a list of the candidates is ever in memory, only the testbed that is
// applied anyway. Rejected and skipped candidates are not saved: the cache
// is of what was applied.
func saveSnapshot(path string, s snapshot, tb *mesh.Testbed) error {
	dir := dirOf(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-mgmtnet-snapshot-*")
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	w := bufio.NewWriterSize(tmp, 1<<16)
	err = encodeSnapshot(w, s, tb)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	return nil
}

// encodeSnapshot writes the JSON object of s with "candidates" last, each
// candidate encoded on its own (json.Encoder buffers one value whole).
func encodeSnapshot(w io.Writer, s snapshot, tb *mesh.Testbed) error {
	head, err := json.Marshal(s)
	if err != nil {
		return err
	}
	// head is {...}: reopen it for the candidates.
	if _, err := w.Write(head[:len(head)-1]); err != nil {
		return err
	}
	if _, err := io.WriteString(w, `,"candidates":[`); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	first := true
	for c := range tb.Candidates() {
		if !first {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		first = false
		if err := enc.Encode(c); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, "]}\n")
	return err
}

// candidateSink takes a snapshot's candidates; a *mesh.Builder is one.
type candidateSink interface{ Add(c *mesh.Candidate) }

// loadSnapshot reads the snapshot at path and hands its candidates to
// sink one at a time, as they are decoded. It reads the files of earlier
// versions too, which held every candidate the registry listed.
func loadSnapshot(path string, sink candidateSink) (snapshot, error) {
	var s snapshot
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("load snapshot: %w", err)
	}
	defer f.Close()
	if err := decodeSnapshot(bufio.NewReaderSize(f, 1<<16), &s, sink); err != nil {
		return snapshot{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	return s, nil
}

func decodeSnapshot(r io.Reader, s *snapshot, sink candidateSink) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var dst any
		switch key {
		case "saved":
			dst = &s.Saved
		case "registry_url":
			dst = &s.RegistryURL
		case "prefix":
			dst = &s.Prefix
		case "validators":
			dst = &s.Validators
		case "candidates":
			if err := decodeCandidates(dec, sink); err != nil {
				return fmt.Errorf("candidates: %w", err)
			}
			continue
		default:
			dst = new(json.RawMessage)
		}
		if err := dec.Decode(dst); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return expectDelim(dec, '}')
}

// decodeCandidates decodes a JSON array of candidates, or null, one
// element at a time.
func decodeCandidates(dec *json.Decoder, sink candidateSink) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("want an array, not %v", tok)
	}
	for dec.More() {
		var c mesh.Candidate
		if err := dec.Decode(&c); err != nil {
			return err
		}
		sink.Add(&c)
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %v, not %v", want, tok)
	}
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
