package dns

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestPerfServe(t *testing.T) {
	if os.Getenv("PERF") == "" {
		t.Skip()
	}
	s, err := New(Config{Zone: testZone}, ServerOptions{Listen: []string{"127.0.0.1:5300"}})
	if err != nil {
		t.Fatal(err)
	}
	s.SetTestbed(bigTestbed(t))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile("/tmp/x/ready", nil, 0o644)
	time.Sleep(40 * time.Second)
	s.Close()
}
