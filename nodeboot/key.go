package nodeboot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/confine-project/mgmtnet/tincgen"
)

// placeholderKey stands for the public key of a key that a dry run would
// generate: generating a 2048-bit key takes long on a small router, and a
// dry run writes nothing anyway.
const placeholderKey = "-----BEGIN RSA PUBLIC KEY-----\n(the public key of the new key)\n-----END RSA PUBLIC KEY-----\n"

// EnsureKey returns the public key (PKCS#1 PEM) of the node's tinc private
// key dir/rsa_key.priv. When the file is missing it generates an RSA key of
// bits (tincgen.GenerateKey; random nil means crypto/rand), writes it with
// mode 0600 through a synced temporary file and a link that fails if a key
// appeared meanwhile, and reports generated. An existing key is never
// replaced: a file that is not a usable RSA private key is an error, and
// the file is left alone. With dryRun nothing is generated or written; a
// missing key gives a placeholder public key and generated.
func EnsureKey(dir string, bits int, random io.Reader, dryRun bool) (pub []byte, generated bool, err error) {
	path := filepath.Join(dir, KeyFile)
	b, err := tincgen.ReadRegularFile(path)
	switch {
	case err == nil:
		pub, err := tincgen.PublicKeyOf(b)
		if err != nil {
			return nil, false, fmt.Errorf("%s is not a usable RSA private key (left as it is; move it away to have a new one generated): %w", path, err)
		}
		return pub, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read private key: %w", err)
	case dryRun:
		return []byte(placeholderKey), true, nil
	}
	priv, pub, err := tincgen.GenerateKey(random, bits)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("create tinc directory: %w", err)
	}
	if err := writeNew(path, priv, 0o600); err != nil {
		return nil, false, err
	}
	if err := syncDir(dir); err != nil {
		return nil, false, err
	}
	return pub, true, nil
}

// writeNew creates path with b and mode, atomically and only if it does
// not exist: the content goes to a synced temporary file, which is then
// hard-linked to path (link fails if path exists, where rename would
// replace it).
func writeNew(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name)
	if err := writeSync(tmp, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(name, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: it appeared while the key was generated; not replacing it: %w", path, err)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
