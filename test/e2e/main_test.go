package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// mgmtnetBin is the binary under test, built once for the package.
var mgmtnetBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mgmtnet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mgmtnetBin, err = vtb.BuildMgmtnet(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
